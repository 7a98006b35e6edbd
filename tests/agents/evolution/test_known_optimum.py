"""Known optimum and shift recovery on the real evolution env (not a synthetic function).

Setting: the re-ranker of a pipeline trained during a 3-window warm-up, then frozen (``learn=False``),
evolved over ``mmr_lambda`` x ``freshness_boost`` with the outer reward alone (clicks per request).
The env runs in ``stationary`` mode: every window starts from the same snapshot of world and system,
so a config's reward is a deterministic function of the config on one machine (common random numbers)
and an exhaustive 6 x 6 grid (steps of 0.2) gives the optimum exactly (the 11 x 11 grid's, measured 2026-11-30 on
world 2: the same point (0, 1.0) and value, at 36 windows instead of 121).

Two regimes. **A** (before a topic shock on day 1) is flat: every config with some freshness scores within a
few hundredths of each other, so its "optimum" is one sample path's noise and differs between CPUs (torch
kernels differ in the last bits between AVX2 and AVX-512, the trained ranker's scores with them, and then which
items users see). **B** (1.5 days later, past the shock) has real structure: users' interests all moved toward
one topic, fatigue punishes plain ranking, and diversity and freshness pay. The claims are checked on world
``WORLD_SEED = 2``, where regime B has the headroom they need (measured 2026-11-30 after the synchronised random
streams, on a 6 x 6 scan of the grid: the static config (0, 0) 0.225, optimum 0.532 at (0, 1.0), grid mean 0.454,
top tenth >= 0.520; worlds 0, 1 and 6 have none: their static config is within 7% of the optimum):

- known optimum (regime B): Optuna TPE reaches >= 95% of the grid optimum in 30 windows for 3 seeds; the
  static config is far below (0.42 of it), so the threshold is not met by default;
- Optuna exploits, random search does not: over the second half of the 30 windows (after TPE's random
  start-up trials), Optuna's mean reward beats random search's by more than 2 standard errors of the
  difference, estimated from the seeds' spread (measured on world 1 before the stream change: Optuna 0.549,
  0.520, 0.529; random 0.486, 0.487, 0.481: +0.045, SE ~0.009; on world 2, 2026-12-02: Optuna 0.498, 0.499,
  0.503; random 0.482, 0.483, 0.481: +0.018, SE 0.0017, 10 SE; seeds 3-5: +0.022, SE 0.0043, 5 SE; Optuna's
  best 0.99-1.0 of the optimum on seeds 0-5). Random search ignores rewards, so only its second half is served;
- shift: with a stationary sentinel (exact replays: its noise is 0 on any machine, so any tolerance has no
  false alarm in regime A; asserted) a shift is detected at the first sentinel after it exactly when
  production's reward moved by more than the tolerance; evolution, restarted, gets back to >= 90% of the new
  optimum within 15 windows;
- PPO (regime B, 128 windows) reaches >= 95% of the optimum;
- warm start (regime B): seeded from the store's 10 nearest trials (the best replayed first), Optuna's first
  window is at >= 95% of the optimum and in the landscape's top tenth (where a cold start's random first
  config lands one time in ten). Without the replay, TPE fitted to 10 good trials samples near them, not
  at them.

Which world has headroom is a property of the sample path, not of the claim: world 0 lost it once the fusion's
calibration was fixed, world 1 once the random streams were synchronised (a comparison there measures noise, so
it is not made there). Issue 14's headroom check (twins: static vs the per-regime oracle) is the general answer.

No assertion uses one machine's float values: thresholds are ratios to the optimum measured in the same
run, with margins several times the sample-path noise.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.evolution.codec import SpaceCodec
from agents.evolution.controllers import OptunaSearch, RandomSearch, evolve
from agents.evolution.env import EvolutionEnv
from agents.evolution.schedule import ShiftTest
from envs.config import world_size

pytestmark = pytest.mark.slow

FREE = ("mmr_lambda", "freshness_boost")
FIXED = {"risk_threshold": 1.0, "exposure_cap": 0, "learn_violations": False, "mmr_pool": 100}
BUDGET = 30  # windows for Optuna and random search
PPO_BUDGET = 128  # windows; observed 0.98 of the optimum (2026-12-02: 0.997; after 80 windows 0.91, 96: 0.97, 112: 1.0)
WORLD = {**world_size("small"), "shifts": [{"kind": "topic_shock", "day": 1, "topic": 0, "strength": 1.0}]}
TO_REGIME_B = 12  # windows of 1000 requests = 1.5 days: past the topic shock
STATIC = {"mmr_lambda": 0.0, "freshness_boost": 0.0}
WORLD_SEED = 2  # worlds 0, 1, 6: the static config is within 10% of the optimum in regime B: no headroom (docstring)
SENTINEL = ShiftTest(check_every=5, tolerance=0.005)
GRID_BINS = 6  # per parameter: the exhaustive grid over (mmr_lambda, freshness_boost)  # stationary: a replay's noise is exactly 0


def make_env(**kw) -> EvolutionEnv:
    torch.set_num_threads(1)
    return EvolutionEnv(world=WORLD, agent="baseline/rerank/mmr", window=1000, warmup=3, learn=False, stationary=True,
                        fixed=FIXED, reward={"inner_weight": {"rerank": 0.0}}, **kw)


def regime_b_env() -> EvolutionEnv:
    env = make_env()
    env.reset(seed=WORLD_SEED)
    env.advance(TO_REGIME_B)
    return env


def value(env: EvolutionEnv, config: dict) -> float:
    return float(env.step(env.codec.encode(config))[1])


def grid_values(env: EvolutionEnv, bins: int) -> tuple[float, float, dict, np.ndarray]:
    grid = SpaceCodec(env.codec.params, "multidiscrete", bins).grid()
    values = np.array([value(env, c) for c in grid])
    i = int(np.argmax(values))
    return float(np.min(values)), float(values[i]), grid[i], values


@pytest.fixture(scope="module")
def regime_b_base() -> EvolutionEnv:
    """Regime B, simulated once per module (warm-up and 1.5 days of traffic); tests take copies (:func:`copy.deepcopy`
    of a stationary env: the same snapshot every step restores, so a copy is the env regime_b_env() would build)."""
    return regime_b_env()


@pytest.fixture(scope="module")
def regime_b_copy(regime_b_base) -> object:
    """A fresh copy of regime B's env per call: ``regime_b_copy()``."""
    return lambda: copy.deepcopy(regime_b_base)


@pytest.fixture(scope="module")
def regime_b_grid(regime_b_base) -> tuple[float, float, dict, float, np.ndarray]:
    env = copy.deepcopy(regime_b_base)
    low, best, where, values = grid_values(env, GRID_BINS)
    static = values[SpaceCodec(env.codec.params, "multidiscrete", GRID_BINS).grid().index(STATIC)]  # a grid corner
    return low, best, where, float(static), values


@pytest.fixture(scope="module")
def optuna_runs(regime_b_copy) -> dict[int, object]:
    """Optuna's ``BUDGET`` windows in regime B for seeds 0-2, run once per module: the known-optimum test uses all
    three, the warm-start test stores seed 0's trials (each run is a deterministic function of the seed: the same
    history either test would get by running it itself)."""
    runs = {}
    for seed in range(3):
        env = regime_b_copy()
        runs[seed] = evolve(env, OptunaSearch(env.target_params(), seed=seed), BUDGET, reset=False)
    return runs


def random_search_late(env: EvolutionEnv, seed: int) -> list[float]:
    """Random search's rewards over the second half of ``BUDGET`` windows. Its proposals ignore rewards and
    observations and a stationary env's reward is a deterministic function of the config, so drawing all ``BUDGET``
    proposals and serving only the second half's gives exactly the rewards ``evolve`` would record there."""
    search = RandomSearch(env.target_params(), seed=seed)
    configs = [search.propose(env.regime()) for _ in range(BUDGET)]
    return [value(env, config) for config in configs[BUDGET // 2:]]


@pytest.fixture(scope="module")
def regime_b(regime_b_grid) -> tuple[float, float, dict, float]:
    """Grid min, optimum, where it is, and the static config's reward in regime B."""
    return regime_b_grid[:4]


def test_stationary_mode_is_deterministic_per_config():
    env = make_env()
    env.reset(seed=WORLD_SEED)
    configs = [{"mmr_lambda": m, "freshness_boost": f} for m, f in ((0.3, 0.5), (0.9, 0.1), (0.0, 0.0), (1.0, 1.0))]
    first = [value(env, c) for c in configs]
    again = [value(env, c) for c in reversed(configs)][::-1]
    assert first == again  # the same config, the same reward, whatever was served in between
    assert len(set(first)) >= 2, first  # and the reward does depend on the config


def test_regime_b_has_headroom(regime_b):
    low, best, where, static = regime_b
    # the plain ranking of before the shock (no diversity, no freshness) is far from the optimum: reaching 95% of
    # it takes search (world seed 2: freshness pays, optimum near (0, 1.0); other worlds differ)
    assert static < 0.9 * best and low < 0.9 * best, (static, low, best, where)


def test_optuna_reaches_the_known_optimum_and_exploits_better_than_random(regime_b, regime_b_copy, optuna_runs):
    _, best, _, _ = regime_b
    found = [history.best[1] / best for history in optuna_runs.values()]
    late = {"optuna": [float(np.mean(history.rewards[BUDGET // 2:])) for history in optuna_runs.values()],
            "random": [float(np.mean(random_search_late(regime_b_copy(), seed))) for seed in optuna_runs]}
    assert min(found) >= 0.95, found
    o, r = np.array(late["optuna"]), np.array(late["random"])
    se = np.sqrt(o.var(ddof=1) / len(o) + r.var(ddof=1) / len(r))
    assert o.mean() - r.mean() > 2 * se, (late, se)


class RegimeB(gym.Wrapper):
    """Wraps a copy of the regime-B env (the module's: reset, then advanced past the shock): every reset lands in
    regime B, so PPO learns where the optimum is known. The env is stationary (every step restores regime B's
    snapshot), so a reset has nothing to simulate again: it returns the regime's observation (the env's public
    ``regime``), the one ``reset(seed=WORLD_SEED)`` then ``advance(TO_REGIME_B)`` ends on."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        return self.env.unwrapped.regime(), {}


def test_ppo_reaches_the_known_optimum(regime_b, regime_b_copy):
    from stable_baselines3 import PPO

    _, best, _, _ = regime_b
    env = RegimeB(regime_b_copy())
    model = PPO("MlpPolicy", env, n_steps=16, batch_size=16, learning_rate=3e-3, gamma=0.0, gae_lambda=1.0,
                ent_coef=0.0, seed=0, device="cpu", policy_kwargs={"log_std_init": -0.5})
    model.learn(PPO_BUDGET)
    inner = env.unwrapped
    action, _ = model.predict(inner.regime(), deterministic=True)
    reward = inner.step(action)[1]
    assert reward >= 0.95 * best, (reward, best, inner.target.config)


def test_evolution_recovers_after_a_shift_that_moves_the_optimum(regime_b):
    _, optimum, _, static_value = regime_b
    env = make_env()
    env.reset(seed=WORLD_SEED)
    controller = OptunaSearch(env.target_params(), seed=0)
    history = evolve(env, controller, 20, reset=False, shift=SENTINEL)
    assert not history.shifts  # regime A: the incumbent's sentinels replay it exactly (no false alarm)
    incumbent, before = history.reference
    env.advance(TO_REGIME_B)  # the same regime B as the fixture's
    after = value(env, {k: incumbent[k] for k in FREE})
    moved = SENTINEL(before, after)
    recovery = 15
    history = evolve(env, controller, recovery, reset=False, history=history, shift=SENTINEL,
                     restart=lambda: OptunaSearch(env.target_params(), seed=1))
    # detected at the first sentinel after the shift exactly when production's reward moved beyond the tolerance
    assert history.shifts == ([24] if moved else []), (history.shifts, before, after)
    assert static_value < 0.9 * optimum  # the plain ranking of regime A is poor in B: the optimum moved away from it
    config, reward = history.best
    assert reward >= 0.9 * optimum, (reward, optimum, config, incumbent)


def test_warm_start_from_the_store_finds_the_optimum_at_once(regime_b_grid, regime_b_copy, optuna_runs, tmp_path):
    from agents.evolution.deployment import REGIME_SCALARS
    from agents.infra.store import KnowledgeStore

    _, best, _, _, values = regime_b_grid
    n = len(make_env().world_cfg.segments) + len(REGIME_SCALARS)
    with KnowledgeStore(tmp_path / "store.db") as store:
        env = regime_b_copy()
        past = store.start_experiment("past", {}, 0)
        regime = env.regime()[:n]
        # a past run in regime B: Optuna's BUDGET windows with seed 0 (the module's run), every trial committed
        history = optuna_runs[0]
        for step, (config, reward) in enumerate(zip(history.configs, history.rewards, strict=True)):
            store.add_trial(past, step, env.agent_name, "optuna", config, regime, {}, {}, reward)
        # a new run in the same regime, seeded with the 10 best nearby trials: its first window replays the best
        env = regime_b_copy()
        warm = OptunaSearch(env.target_params(), seed=5)
        assert warm.warm_start_from(store, env.agent_name, env.regime()[:n], k=10) == 10
        first = evolve(env, warm, 1, reset=False).rewards[0]
    # at the optimum at once, and among the top tenth of the whole landscape, where a cold start's first window
    # (a random config) lands one time in ten
    assert first >= 0.95 * best and first >= np.quantile(values, 0.9), (first, best, np.quantile(values, 0.9))
