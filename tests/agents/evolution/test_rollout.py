"""Controlled rollout on the running system: a better re-rank config is deployed, a worse or equal one is not."""

from __future__ import annotations

import pytest
import torch

import envs
from agents.decision.configs import static_baseline
from agents.decision.functional import ExperimentDesigner
from agents.decision.system import Simulation
from agents.evolution.rollout import ab_rollout
from agents.infra.store import KnowledgeStore
from envs.validation import ConfigError

TINY = envs.WorldConfig(num_items=1000, num_users=3000, num_topics=8, num_creators=50)


def running(incumbent: dict) -> Simulation:
    torch.set_num_threads(1)
    sim = Simulation(envs.World(TINY, seed=0), static_baseline(TINY), concurrency=400, seed=0)
    sim.system.pipelines[0].reranker.configure(incumbent)
    sim.window(2000)
    return sim


# Measured (4 windows of 2000 requests, half to each arm): pure-diversity MMR (lambda 1) vs plain
# ranking (lambda 0) costs ~0.03-0.045 clicks per request; with 2 windows the interval was too wide to
# exclude 0 on some machines (+0.029 [-0.001, 0.060]), so the test runs 4.
@pytest.mark.parametrize(
    "incumbent, candidate, accepted",
    [
        ({"mmr_lambda": 1.0}, {"mmr_lambda": 0.0}, True),  # measured +0.030 [0.008, 0.052]
        ({"mmr_lambda": 0.0}, {"mmr_lambda": 1.0}, False),  # measured -0.044 [-0.066, -0.023]
        ({"mmr_lambda": 0.0}, {"mmr_lambda": 0.0}, False),  # the same config: measured +0.006 [-0.016, 0.028]
    ],
)
def test_ab_rollout_deploys_only_a_winner(tmp_path, incumbent, candidate, accepted):
    sim = running(incumbent)
    decision = ab_rollout(sim, "baseline/rerank", candidate, ExperimentDesigner(config={"min_requests": 1000}),
                          windows=4, window=2000)
    assert decision.accepted is accepted, decision
    assert min(decision.n_incumbent, decision.n_candidate) >= 1000
    deployed = sim.system.pipelines[0]
    assert deployed.name == "baseline" and len(sim.system.pipelines) == 1
    assert deployed.reranker.config["mmr_lambda"] == (candidate if accepted else incumbent)["mmr_lambda"]
    assert [r.route_id for r in deployed.recalls] == list(range(5))
    sim.window(400)  # the system keeps serving after the test
    with KnowledgeStore(tmp_path / "store.db") as store:
        exp = store.start_experiment("rollout", {}, 0)
        store.add_rollout(exp, 0, "baseline/rerank", candidate, "accepted" if decision.accepted else "rejected",
                          effect=decision.effect, ci_low=decision.ci_low, ci_high=decision.ci_high,
                          p_value=decision.p_value, n_incumbent=decision.n_incumbent,
                          n_candidate=decision.n_candidate, reasons=decision.reasons)
        (row,) = store.rollouts(exp)
        assert row.decision == ("accepted" if accepted else "rejected") and row.effect == pytest.approx(decision.effect)


def test_ab_rollout_rejects_unknown_agent():
    sim = running({})
    with pytest.raises(ConfigError, match=r"`agent` must be one of .* \(got 'baseline/rerenk'\); did you mean 'baseline/rerank'\?"):
        ab_rollout(sim, "baseline/rerenk", {"mmr_lambda": 0.5})


def test_ab_rollout_on_a_routed_system_splits_only_the_target_pipeline():
    torch.set_num_threads(1)
    from agents.decision.configs import segment_routed

    sim = Simulation(envs.World(TINY, seed=0), segment_routed(TINY), concurrency=400, seed=0)
    sim.window(1000)
    before = sim.system.pipelines[0]
    decision = ab_rollout(sim, "cold_start/rerank", {"mmr_lambda": 0.0}, ExperimentDesigner(config={"min_requests": 100}),
                          windows=1, window=1000)
    # only new users reach the cold-start pipeline (~20% of requests), so each arm sees a share of those
    assert 100 <= decision.n_incumbent + decision.n_candidate <= 600, decision
    assert sim.system.pipelines[0] is before and [p.name for p in sim.system.pipelines] == ["baseline", "cold_start"]
    sim.window(400)
