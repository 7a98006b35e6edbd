"""The deployment service: qualified names, deploy, serve, split, score, fork/snapshot, and its Protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from agents.decision.configs import segment_routed, static_baseline
from agents.evolution.composition import CompositionEnv
from agents.evolution.deployment import Deployment, DeploymentService, qualified_agents
from agents.evolution.env import EvolutionEnv
from envs.validation import ConfigError

TINY = envs.WorldConfig(num_items=600, num_users=1500, num_topics=6, num_creators=40)


@pytest.fixture
def service() -> Deployment:
    torch.set_num_threads(1)
    return Deployment.start(TINY, static_baseline(TINY), seed=3, concurrency=200, window=400)


def test_qualified_names_are_pipeline_role_name_and_unambiguous():
    system = segment_routed(TINY)
    names = qualified_agents(system)
    assert "baseline/rerank/mmr" in names and "cold_start/rerank/mmr" in names
    assert names["baseline/rerank/mmr"] is not names["cold_start/rerank/mmr"]  # same short name, two agents
    assert "baseline/recall/popularity" in names and "cold_start/recall/popularity" in names
    assert {"baseline/fusion/quota", "baseline/fusion/multitask", "baseline/ranking/mlp", "system/router/router"} <= set(names)
    assert all(n.split("/")[1] == a.role for n, a in names.items())
    service = Deployment.start(TINY, system, seed=0, concurrency=200, window=400)
    assert service.pipeline_of("cold_start/rerank/mmr") == "cold_start"
    with pytest.raises(ConfigError, match=r"`agent` must be one of .* \(got 'baseline/rerank'\); did you mean 'baseline/rerank/mmr'\?"):
        service.agent("baseline/rerank")


def test_deploy_config_touches_only_the_named_agent_and_merges():
    service = Deployment.start(TINY, segment_routed(TINY), seed=0, concurrency=200, window=400)
    other = dict(service.agent("baseline/rerank/mmr").config)
    after = service.deploy_config("cold_start/rerank/mmr", {"mmr_lambda": 0.9})
    assert after["mmr_lambda"] == 0.9 and service.agent("cold_start/rerank/mmr").config == after
    assert service.agent("baseline/rerank/mmr").config == other
    service.deploy_config("cold_start/rerank/mmr", {"freshness_boost": 0.5})  # merged: mmr_lambda stays
    assert service.agent("cold_start/rerank/mmr").config["mmr_lambda"] == 0.9
    with pytest.raises(ConfigError, match="mmr_lamda"):
        service.deploy_config("cold_start/rerank/mmr", {"mmr_lamda": 0.1})


def test_a_fork_is_independent_and_serves_identical_traffic(service):
    service.serve()
    twin = service.fork()
    a, b = service.serve(), twin.serve()
    for table in ("requests", "impressions"):
        for column, values in getattr(a, table).items():
            np.testing.assert_array_equal(values, getattr(b, table)[column], err_msg=f"{table}.{column}")
    # a different decision in the fork changes the fork's traffic only
    before = dict(service.agent("baseline/rerank/mmr").config)
    twin.deploy_config("baseline/rerank/mmr", {"mmr_lambda": 1.0, "mmr_pool": 200})
    assert service.agent("baseline/rerank/mmr").config == before
    c, d = service.serve(), twin.serve()
    assert not np.array_equal(c.impressions["item"], d.impressions["item"])
    assert service.now == twin.now


def test_snapshot_and_restore_replay_the_same_window(service):
    service.serve()
    snap = service.snapshot()
    first = service.serve()
    service.restore(snap)
    again = service.serve()
    np.testing.assert_array_equal(first.impressions["item"], again.impressions["item"])
    np.testing.assert_array_equal(first.requests["clicks"], again.requests["clicks"])
    service.restore(snap)  # a snapshot stays usable
    np.testing.assert_array_equal(service.serve().impressions["item"], first.impressions["item"])
    with pytest.raises(ConfigError, match="snapshot"):
        service.restore({"not": "a snapshot"})


@pytest.mark.slow
def test_serve_split_uses_a_fresh_salt_per_test_and_marks_the_candidate_arm(service):
    service.serve()
    challenger = static_baseline(TINY, seed=7)
    running = service.system
    one, two = service.serve_split(challenger, 0.5), service.serve_split(challenger, 0.5)
    assert one.salt != two.salt
    assert service.system is running  # the split is only for the window
    for split in (one, two):
        share = split.candidate.mean()
        assert 0.3 < share < 0.7, share  # half the users, by a hash (users' request counts differ)
        assert split.arm("candidate").num_requests + split.arm("control").num_requests == split.log.num_requests
    users = [set(s.log.requests["user"][s.candidate].tolist()) for s in (one, two)]
    control = [set(s.log.requests["user"][~s.candidate].tolist()) for s in (one, two)]
    # a fresh salt re-draws the arms: some users change sides between the two tests
    assert users[0] & control[1] and users[1] & control[0]
    same = service.serve_split(challenger, 0.5, salt=one.salt)
    assert not set(same.log.requests["user"][same.candidate].tolist()) & control[0]  # a given salt reproduces arms


def test_score_for_an_agent_or_the_system(service):
    log = service.serve()
    value, terms = service.score(log)
    assert any(k.startswith("outer/") for k in terms) and np.isfinite(value)
    value, terms = service.score(log, "baseline/rerank/mmr")
    assert any(k.startswith("layered/rerank") for k in terms) and np.isfinite(value)
    assert service.score(log, service.agent("baseline/rerank/mmr"))[0] == value


def test_regime_summarises_the_last_window(service):
    assert service.regime().shape == (len(TINY.segments) + 8,)
    log = service.serve()
    regime = service.regime()
    shares = np.bincount(log.requests["segment"], minlength=len(TINY.segments)) / log.num_requests
    np.testing.assert_allclose(regime[: len(TINY.segments)], shares, rtol=1e-6)
    assert regime[len(TINY.segments)] == pytest.approx(log.requests["clicks"].mean(), rel=1e-6)


def test_the_envs_are_adapters_over_the_service():
    env = EvolutionEnv(world=TINY, window=400, concurrency=200)
    comp = CompositionEnv(world=TINY, window=400, concurrency=200)
    for e in (env, comp):
        e.reset(seed=0)
        assert isinstance(e.service, DeploymentService)
    assert env.target is env.service.agent("baseline/rerank/mmr")
    obs, *_ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(obs[: len(TINY.segments) + 8], np.clip(env.service.regime(), -10, 10))
    assert "main/rerank/mmr" in comp.service.pool.agents and "specialist/recall/fresh" in comp.service.pool.agents
