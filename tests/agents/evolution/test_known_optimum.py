"""Known optimum and shift recovery on the real evolution env (not a synthetic function).

Setting: the re-ranker of a pipeline trained during a 3-window warm-up, then frozen (``learn=False``),
evolved over ``mmr_lambda`` x ``freshness_boost`` with the outer reward alone (clicks per request).
The env runs in ``stationary`` mode: every window starts from the same snapshot of world and system,
so a config's reward is a deterministic function of the config (common random numbers) and an
exhaustive 11 x 11 grid gives the optimum exactly. Scores are ``reward / grid optimum``, and also
range-normalised ``(reward - grid min) / (grid max - grid min)``, a stricter scale.

Observed (seed 0, this machine class): grid min 0.333, optimum 0.3975 at (0.0, 0.3); 30 windows:
Optuna TPE best 0.985 / 1.006 / 0.973 of the optimum (normalised 0.91 / 1.04 / 0.83) over seeds 0-2,
random search 0.964 / 0.962 / 0.960 (normalised 0.78 / 0.77 / 0.75); PPO after 256 windows 0.99.
The landscape is rugged (one sample path per config), which is why random search gets within 5% too;
the test asserts the acceptance criterion (>= 95% of the optimum) and that random search does worse
than Optuna on both scales (mean over the same seeds).

Shift: a topic shock (day 1) makes every user's interest move toward one topic, so plain ranking
serves the same topic again and again and fatigue sets in: the optimum moves from no diversity to
strong diversity and freshness (observed regime B optimum 0.4625 at (1.0, 0.8); the static config
(0, 0) gets ~0.27).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.evolution.codec import SpaceCodec
from agents.evolution.controllers import OptunaSearch, RandomSearch, evolve
from agents.evolution.env import SMALL_EVOLUTION_WORLD, EvolutionEnv
from agents.evolution.schedule import ShiftTest

pytestmark = pytest.mark.slow

FREE = ("mmr_lambda", "freshness_boost")
FIXED = {"risk_threshold": 1.0, "exposure_cap": 0, "learn_violations": False, "mmr_pool": 100}
BUDGET = 30  # windows for Optuna and random search
PPO_BUDGET = 256
WORLD = {**SMALL_EVOLUTION_WORLD, "shifts": [{"kind": "topic_shock", "day": 1, "topic": 0, "strength": 1.0}]}


def make_env(**kw) -> EvolutionEnv:
    torch.set_num_threads(1)
    return EvolutionEnv(world=WORLD, agent="baseline/rerank", window=1000, warmup=3, learn=False, stationary=True,
                        fixed=FIXED, reward={"inner_weight": {"rerank": 0.0}}, **kw)


def grid_values(env: EvolutionEnv, bins: int) -> tuple[float, float, dict]:
    grid = SpaceCodec(env.codec.params, "multidiscrete", bins).grid()
    values = [env.step(env.codec.encode(c))[1] for c in grid]
    i = int(np.argmax(values))
    return float(np.min(values)), float(values[i]), grid[i]


@pytest.fixture(scope="module")
def regime_a() -> tuple[float, float, dict]:
    env = make_env()
    env.reset(seed=0)
    return grid_values(env, 11)


def test_stationary_mode_is_deterministic_per_config():
    env = make_env()
    env.reset(seed=0)
    a = env.codec.encode({"mmr_lambda": 0.3, "freshness_boost": 0.5})
    b = env.codec.encode({"mmr_lambda": 0.9, "freshness_boost": 0.1})
    first, other, again = env.step(a)[1], env.step(b)[1], env.step(a)[1]
    assert first == again and first != other


def test_optuna_reaches_the_known_optimum_and_random_search_does_worse(regime_a):
    low, best, where = regime_a
    assert where["mmr_lambda"] <= 0.2  # regime A: little diversity pays (observed optimum at 0.0)
    scores = {"optuna": [], "random": []}
    for seed in range(3):
        for name, make in (("optuna", OptunaSearch), ("random", RandomSearch)):
            history = evolve(make_env(), make(make_env().target_params(), seed=seed), BUDGET, seed=0)
            scores[name].append(history.best[1])
    ratio = {k: np.array(v) / best for k, v in scores.items()}
    normalised = {k: (np.array(v) - low) / (best - low) for k, v in scores.items()}
    assert ratio["optuna"].min() >= 0.95, ratio
    assert ratio["random"].mean() < ratio["optuna"].mean(), ratio
    assert normalised["random"].mean() + 0.05 < normalised["optuna"].mean(), normalised


def test_ppo_reaches_the_known_optimum(regime_a):
    from stable_baselines3 import PPO

    low, best, _ = regime_a
    env = make_env()
    model = PPO("MlpPolicy", env, n_steps=16, batch_size=16, learning_rate=3e-3, gamma=0.0, gae_lambda=1.0,
                ent_coef=0.0, seed=0, device="cpu", policy_kwargs={"log_std_init": -0.5})
    model.learn(PPO_BUDGET)
    obs = env._observe(env._regime_log)
    action, _ = model.predict(obs, deterministic=True)
    reward = env.step(action)[1]
    assert reward >= 0.95 * best, (reward, best, env.target.config)


def test_evolution_recovers_after_a_shift_that_moves_the_optimum():
    env = make_env()
    env.reset(seed=0)
    static = {"mmr_lambda": 0.0, "freshness_boost": 0.0}
    controller = OptunaSearch(env.target_params(), seed=0)
    history = evolve(env, controller, 20, reset=False, shift=ShiftTest(check_every=5, tolerance=0.05))
    before = dict(history.best[0])
    assert not history.shifts  # stationary regime A: the incumbent's sentinels agree exactly
    env.advance(12)  # 12 windows of 1000 requests = 1.5 days: past the topic shock
    _, optimum, where = grid_values(env, 6)
    assert where["mmr_lambda"] >= 0.4, where  # the optimum moved toward diversity
    static_value = env.step(env.codec.encode(static))[1]
    assert static_value < 0.9 * optimum, (static_value, optimum)  # the static config stays below
    recovery = 15
    history = evolve(env, controller, recovery, reset=False, history=history,
                     shift=ShiftTest(check_every=5, tolerance=0.05),
                     restart=lambda: OptunaSearch(env.target_params(), seed=1))
    assert history.shifts == [24], history.shifts  # detected at the first sentinel after the shift
    config, reward = history.best
    assert reward >= 0.9 * optimum, (reward, optimum, config, before)


def test_warm_start_from_the_store_finds_the_optimum_at_once(regime_a, tmp_path):
    from agents.evolution.env import REGIME_SCALARS
    from agents.infra.store import KnowledgeStore

    _, best, _ = regime_a
    n = len(make_env().world_cfg.segments) + len(REGIME_SCALARS)
    with KnowledgeStore(tmp_path / "store.db") as store:
        env = make_env()
        past = store.start_experiment("past", {}, 0)
        regime = env.reset(seed=0)[0][:n]

        def commit(step, config, reward, info):
            store.add_trial(past, step, env.agent_name, "optuna", config, regime, {}, {}, reward)

        evolve(env, OptunaSearch(env.target_params(), seed=0), BUDGET, seed=0, on_window=commit)
        # a new run in the same regime: seeded with the 10 best nearby trials, it starts where the last one ended
        env = make_env()
        query = env.reset(seed=0)[0][:n]
        warm = OptunaSearch(env.target_params(), seed=5)
        assert warm.warm_start_from(store, env.agent_name, query, k=10) == 10
        warm_best = evolve(env, warm, 3, reset=False).best[1]
        cold_best = evolve(make_env(), OptunaSearch(env.target_params(), seed=5), 3, seed=0).best[1]
    assert warm_best >= 0.95 * best and warm_best > cold_best, (warm_best, cold_best, best)
