"""Controllers: valid proposals, Optuna finds a known optimum faster than random search, the evolve loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.decision.params import Choice, ParamSpace, Range
from agents.evolution.controllers import (
    EvolutionHistory,
    OptunaSearch,
    RandomSearch,
    evolve,
    halving_rounds,
    leaders,
    successive_halving,
)
from agents.evolution.env import EvolutionEnv
from envs.validation import ConfigError

SPACE = ParamSpace([Range("x", 0.0, 1.0, 0.5), Range("y", -2.0, 2.0, 0.0), Choice("mode", ("a", "b", "c"), "a")])


def objective(config: dict) -> float:
    """Known optimum 1.0 at x = 0.3, y = -1.2, mode 'b'."""
    bonus = {"a": 0.0, "b": 0.2, "c": 0.1}[config["mode"]]
    return 0.8 + bonus - (config["x"] - 0.3) ** 2 - 0.25 * (config["y"] + 1.2) ** 2


def best_of(controller, budget: int) -> float:
    best = -np.inf
    obs = np.zeros(1)
    for _ in range(budget):
        config = controller.propose(obs)
        assert SPACE.validate(config) == config  # every proposal is a point of the space
        reward = objective(config)
        controller.tell(config, reward, obs)
        best = max(best, reward)
    return best


def test_optuna_reaches_the_known_optimum_and_beats_random_search():
    # One seed's best is one sample path of TPE (its numpy/scipy float kernels differ in the last bits between
    # CPUs, and a flipped argmax changes every later proposal), so the claims are over 5 seeds each.
    # Measured, budget 60, best reward (optimum 1.0): TPE seeds 0-9 0.9916-1.0 (median 0.999; seed 2 0.9916,
    # seed 5 0.9962: a single-seed threshold of 0.995 failed on 1 of 10 seeds); random search seeds 0-19
    # 0.882-0.997 (median 0.97). On log10(regret): TPE seeds 0-4 mean -3.0, random seeds 0-4 -1.6, s.e. of the
    # difference 0.28, so 4.9 s.e. apart (seeds 5-9: 5.5 s.e., seeds 10-14: 6.6 s.e.; medians of TPE 0.999-1.0).
    # A regression to random-like search fails both: its median is ~0.97 and its difference ~0 s.e.
    seeds = range(5)
    optuna = np.array([best_of(OptunaSearch(SPACE, seed=s), 60) for s in seeds])
    random = np.array([best_of(RandomSearch(SPACE, seed=s), 60) for s in seeds])
    assert np.median(optuna) >= 0.99, optuna  # at the known optimum (observed medians 0.9988-0.9999)
    # regret floored at 1e-4 (a seed can hit the optimum exactly)
    lo, lr = np.log10(np.maximum(1.0 - optuna, 1e-4)), np.log10(np.maximum(1.0 - random, 1e-4))
    se = np.sqrt(lo.var(ddof=1) / len(lo) + lr.var(ddof=1) / len(lr))
    assert lr.mean() - lo.mean() > 2 * se, (optuna, random, se)  # TPE's regret is smaller beyond the seeds' spread


def test_random_search_is_seeded():
    a, b = RandomSearch(SPACE, seed=3), RandomSearch(SPACE, seed=3)
    assert [a.propose(np.zeros(1)) for _ in range(5)] == [b.propose(np.zeros(1)) for _ in range(5)]


def test_optuna_warm_start_and_unknown_tell():
    search = OptunaSearch(SPACE, seed=0)
    search.warm_start([{"x": 0.3, "y": -1.2, "mode": "b"}, {"x": 0.9, "y": 0.5, "mode": "a"}], [1.0, 0.2])
    complete = [t for t in search.study.trials if t.state.name == "COMPLETE"]
    assert search.study.best_value == 1.0 and len(complete) == 2
    assert search.propose(np.zeros(1)) == {"x": 0.3, "y": -1.2, "mode": "b"}  # the best seeded config comes first
    with pytest.raises(ConfigError, match="`tell` must receive a config returned by this controller"):
        search.tell({"x": 0.1, "y": 0.0, "mode": "a"}, 0.5, np.zeros(1))
    with pytest.raises(ConfigError, match=r"`directions` must be one of \['maximize', 'minimize'\] \(got 'up'\)"):
        OptunaSearch(SPACE, directions=["up"])


def test_multi_objective_optuna_uses_nsga2():
    search = OptunaSearch(SPACE, seed=0, directions=["maximize", "minimize"])
    for _ in range(12):
        config = search.propose(np.zeros(1))
        search.tell(config, [objective(config), config["x"]], np.zeros(1))
    assert len(search.study.best_trials) >= 1  # a Pareto front


def test_evolve_runs_the_loop_on_the_env():
    torch.set_num_threads(1)
    env = EvolutionEnv(world={"num_items": 600, "num_users": 1200, "num_topics": 5, "num_creators": 30},
                       window=200, concurrency=100)
    seen = []
    history = evolve(env, OptunaSearch(env.target_params(), seed=0), windows=3, seed=0,
                     on_window=lambda step, config, reward, info: seen.append((step, reward)))
    assert len(history.rewards) == 3 and [s for s, _ in seen] == [0, 1, 2]
    assert all(np.isfinite(history.rewards))
    assert history.best[1] == max(history.rewards)


def test_leaders_are_the_best_distinct_configs_since_the_last_shift():
    h = EvolutionHistory(configs=[{"x": 0.9, "t": 1}, {"x": 0.1}, {"x": 0.2}, {"x": 0.1}, {"x": 0.3}, {"x": 0.4}],
                         rewards=[9.0, 0.5, 0.2, 0.7, 0.1, 0.4], shifts=[0])
    assert leaders(h, {"x"}, 3) == [{"x": 0.1}, {"x": 0.4}, {"x": 0.2}]  # window 0 is another regime's; 0.1 once
    assert leaders(h, {"x"}, 10) == [{"x": 0.1}, {"x": 0.4}, {"x": 0.2}, {"x": 0.3}]


def test_successive_halving_spends_its_budget_and_keeps_the_better_half_each_round():
    assert halving_rounds(4) == [4, 2] and halving_rounds(5) == [5, 3, 2] and halving_rounds(1) == [1]
    calls: list[int] = []
    means = [0.0, 0.3, 0.1, 0.2]
    result = successive_halving(4, 8, lambda i: calls.append(i) or means[i])
    # round 1: each of 4 once (4 of the 8 windows, the later round needs 2); round 2: the 2 best (1, 3) twice each
    assert calls == [0, 1, 2, 3, 1, 3, 1, 3] and result.winner == 1
    assert result.values[1] == [0.3, 0.3, 0.3] and result.values[0] == [0.0]
    calls.clear()
    assert successive_halving(5, 10, lambda i: calls.append(i) or i).winner == 4 and len(calls) == 10
    with pytest.raises(ConfigError, match=r"`budget` must be in \[10, inf\) \(got 9\)"):
        successive_halving(5, 9, lambda i: 0.0)


def test_re_testing_leaders_finds_the_best_more_often_than_the_best_single_draw():
    """The best window of a run is the maximum of noisy draws: re-testing its leaders recovers the truly best one.
    Four leaders whose true values are 0, 0.05, 0.1, 0.2 measured with noise s.d. 0.1 (a window's relative reward at
    250 requests per arm, as measured in C2); one draw each picks the best ~60% of the time (leader 3's draw must
    beat three others), successive halving with 12 draws ~90% (on these seeds: 90 of 100 vs 63 of 100)."""
    truth = np.array([0.0, 0.05, 0.1, 0.2])
    by_halving = by_draw = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        by_draw += int(np.argmax(truth + rng.normal(0, 0.1, 4))) == 3
        by_halving += successive_halving(4, 12, lambda i, rng=rng: truth[i] + rng.normal(0, 0.1)).winner == 3
    assert by_halving >= by_draw + 15 and by_halving >= 80, (by_halving, by_draw)


def test_neighbours_change_one_parameter_each_by_a_small_step_within_the_space():
    """``ParamSpace.neighbours`` (the oracle's local grid points): each differs from the base in exactly one
    parameter; a range moves by about ``scale`` of its width and stays inside it (reflected at 0, so a knob at its
    low end, MMR's lambda 0, still moves); a choice switches option; the same generator seed gives the same points."""
    space = ParamSpace([Range("lam", 0.0, 1.0, 0.0), Range("boost", 0.0, 2.0, 1.0), Choice("pool", (20, 50, 100), 50)])
    base = space.default()
    near = space.neighbours(base, 300, np.random.default_rng(0), scale=0.05)
    assert near == space.neighbours(base, 300, np.random.default_rng(0), scale=0.05)
    steps = {"lam": [], "boost": [], "pool": []}
    for c in near:
        changed = [k for k in base if c[k] != base[k]]
        assert len(changed) == 1 and space.validate(c) == c
        steps[changed[0]].append(c[changed[0]])
    assert all(len(v) > 60 for v in steps.values())  # ~100 each of 300
    assert all(0.0 < v < 0.25 for v in steps["lam"])  # |N(0, 0.05)|: a little diversity, never a uniform draw
    widths = np.abs(np.array(steps["boost"]) - 1.0) / 2.0
    assert 0.02 < float(np.mean(widths)) < 0.06 and max(widths) < 0.25  # E|N(0, 0.05)| = 0.04 of the width
    assert set(steps["pool"]) == {20, 100}
