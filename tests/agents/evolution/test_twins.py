"""Counterfactual twins: identical traffic from one state, an oracle that finds a planted optimum, headroom by shift."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from agents.decision.configs import static_baseline
from agents.evolution.deployment import Deployment
from agents.evolution.twins import evaluate, headroom, oracle, shift_headroom
from envs.validation import ConfigError

TINY = envs.WorldConfig(num_items=600, num_users=1500, num_topics=6, num_creators=40)
AGENT = "baseline/rerank/mmr"
# pure relevance (the default) against configs that spend the slate on diversity or freshness regardless of
# relevance: in this world the first is the planted optimum, by ~0.05 clicks per request (pure MMR diversity
# loses ~0.06 in bench/sensitivity_interleaving.py) against a twin noise far below that
GRID = [{"mmr_lambda": 1.0, "mmr_pool": 200}, {"mmr_lambda": 0.0, "freshness_boost": 0.0}, {"freshness_boost": 1.0, "mmr_lambda": 0.9}]


@pytest.fixture(scope="module")
def trained() -> Deployment:
    torch.set_num_threads(1)
    service = Deployment.start(TINY, static_baseline(TINY), seed=3, concurrency=200, window=400)
    service.serve(3)  # the ranker learns first: twins start from a learned state
    return service


def test_the_same_state_forked_twice_gives_identical_windows(trained):
    a, b = evaluate(trained, [GRID[0], GRID[0]], agent=AGENT, windows=2)
    assert a.value == b.value and a.realised == b.realised
    for la, lb in zip(a.logs, b.logs):
        for table in ("requests", "impressions"):
            for column, values in getattr(la, table).items():
                np.testing.assert_array_equal(values, getattr(lb, table)[column], err_msg=f"{table}.{column}")


def test_twins_leave_the_service_as_it_was(trained):
    before = dict(trained.agent(AGENT).config), trained.now
    evaluate(trained, GRID, agent=AGENT, learn=True)
    assert (dict(trained.agent(AGENT).config), trained.now) == before


def test_the_oracle_finds_the_planted_optimum_and_measures_regret(trained):
    result = oracle(trained, GRID, agent=AGENT, windows=2)
    assert result.best == 1, [round(v.value, 4) for v in result.values]
    assert result.regret(1) == 0.0
    assert result.regret(0) > 0.02 and result.regret(2) > 0.02  # a gap well above a twin's noise
    assert all(np.isfinite([v.expected, v.realised]).all() for v in result.values)
    assert result.best_candidate == GRID[1]


def test_headroom_of_a_static_config(trained):
    check = headroom(trained, GRID[0], GRID[1:], agent=AGENT)
    assert check.gap > 0.02 and check.best == GRID[1]
    assert headroom(trained, GRID[1], [GRID[0]], agent=AGENT).gap == 0.0  # nothing beats the optimum


def test_shift_headroom_checks_before_and_after_each_shift():
    torch.set_num_threads(1)
    cfg = envs.WorldConfig(num_items=600, num_users=1500, num_topics=6, num_creators=40, steps_per_day=4,
                           shifts=[envs.ShiftConfig(day=1, kind="topic_shock", topic=0, strength=2.0)])
    service = Deployment.start(cfg, static_baseline(cfg), seed=0, concurrency=200, window=400)
    checks = shift_headroom(service, {}, [GRID[0]], cfg.shifts, steps_per_day=4, steps_per_window=2, margin_days=0.5,
                            agent=AGENT)
    assert [c.label.split(" (")[1].split(" ")[0] for c in checks] == ["before", "after"]
    assert checks[0].day < 1.0 <= checks[1].day
    assert all(c.gap >= 0 for c in checks)


def test_bad_candidates_fail_early(trained):
    with pytest.raises(ConfigError, match="at least one candidate"):
        evaluate(trained, [], agent=AGENT)
    with pytest.raises(ConfigError, match="need `agent`"):
        evaluate(trained, [{"mmr_lambda": 0.5}])
    with pytest.raises(ConfigError, match="outcome"):
        evaluate(trained, [{}], agent=AGENT, outcome="noisy")


def test_twins_of_different_configs_share_their_users_and_an_independent_fork_does_not(trained):
    """Synchronised streams: twins serving different re-rankers see (nearly) the same requests (user, step); a fork
    on another traffic seed sees others as the sessions open at the fork end (sessions last ~25 steps here). Measured
    in the eighth window: 0.90 of requests shared by the twins, 0.61 with the independent fork."""
    def requests(service):
        log = service.serve(8, learn=False)
        return set(zip(log.requests["user"].tolist(), log.requests["step"].tolist()))

    a, b, c = trained.fork(), trained.fork(), trained.fork(traffic_seed=12345)
    b.deploy_config(AGENT, GRID[0])
    c.deploy_config(AGENT, GRID[0])
    ra, rb, rc = requests(a), requests(b), requests(c)
    assert len(ra & rb) > 0.8 * len(ra)
    assert len(ra & rc) < len(ra & rb) - 0.15 * len(ra)
    # the system's own randomness too: a twin splits an A/B test's users as the original would, an independent fork
    # with a salt of its own (forks on one traffic seed agree: a replicate is reproducible)
    salts = [f.new_salt() for f in (trained.fork(), trained.fork(), *(trained.fork(traffic_seed=s) for s in (1, 2, 1)))]
    assert salts[0] == salts[1] and len({salts[0], salts[2], salts[3]}) == 3 and salts[2] == salts[4]
