"""The coordinator: conflicting proposals never test at once (a property over random proposal streams), each running
test has its own users, global constraints before shipping, every decision recorded, credit on twins."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
from agents.decision.configs import segment_routed, static_baseline
from agents.decision.functional import ExperimentDesigner
from agents.decision.system import System
from agents.evolution.coordinator import Coordinator, Proposal, Scheduler, _LayeredRouter, _Router, _Test
from agents.evolution.deployment import Deployment
from agents.infra.store import KnowledgeStore
from envs.validation import ConfigError

TINY = envs.WorldConfig(num_items=1000, num_users=3000, num_topics=8, num_creators=50)
PIPES = ("a", "b", "c")


def overlapping(p: Proposal, q: Proposal) -> bool:
    return bool(p.pipelines & q.pipelines)


proposals = st.lists(st.tuples(
    st.sets(st.sampled_from(PIPES), min_size=1, max_size=2),  # the pipelines it touches
    st.sampled_from((0.1, 0.2, 0.3, 0.5)),  # share
    st.integers(1, 3),  # windows
    st.integers(0, 6),  # the window it is submitted at
), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(proposals, st.sampled_from((0.5, 0.6, 1.0 - 1e-9)))
def test_the_scheduler_never_tests_conflicting_proposals_at_once(stream, budget):
    scheduler = Scheduler(budget, overlapping)
    made = [Proposal("agent", {f"{p}/rerank/mmr": {} for p in pipes} or {"a/x/y": {}}, share=share, windows=windows)
            for pipes, share, windows, _ in stream]
    due = {i: at for i, (*_, at) in enumerate(stream)}
    remaining: dict[int, int] = {}
    started_at: dict[int, int] = {}
    for window in range(200):
        for i in sorted(i for i, at in due.items() if at == window):
            scheduler.submit(i, made[i])
        for i in scheduler.start_ready():
            remaining[i], started_at[i] = made[i].windows, window
        active = list(scheduler.active.items())
        assert sum(p.share for _, p in active) <= budget + 1e-9
        for x, (i, p) in enumerate(active):  # no two running tests touch one pipeline
            assert not any(overlapping(p, q) for j, q in active[x + 1:]), (i, p.pipelines)
        for i in list(scheduler.active):
            remaining[i] -= 1
            if remaining[i] == 0:
                scheduler.finish(i)
        if len(started_at) == len(made) and not scheduler.active:
            break
    assert len(started_at) == len(made)  # every proposal was tested
    for i in range(len(made)):  # conflicting ones in the order they came
        for j in range(i + 1, len(made)):
            if overlapping(made[i], made[j]) and due[i] < due[j]:
                assert started_at[i] < started_at[j]


def test_each_running_test_has_its_own_users():
    router = _Router.__new__(_Router)
    router.tests = [_Test(i, Proposal("x", {"a/b/c": {}}, share=s), salt, [], None, 0)  # type: ignore[arg-type]
                    for i, (s, salt) in enumerate([(0.2, 11), (0.3, 22), (0.1, 33)])]
    users = np.arange(200_000)
    arm = router.arms(users)
    counts = np.bincount(arm + 1, minlength=4) / len(users)
    # the first test takes 20% of users, the next 30% of the rest, the last 10% of what remains; each user one arm
    expected = [0.8 * 0.7 * 0.9, 0.2, 0.8 * 0.3, 0.8 * 0.7 * 0.1]
    np.testing.assert_allclose(counts, expected, atol=0.005)


@pytest.fixture
def service() -> Deployment:
    torch.set_num_threads(1)
    service = Deployment.start(TINY, static_baseline(TINY), world_seed=0, sim_seed=0, concurrency=400, window=1000)
    service.deploy_config("baseline/rerank/mmr", {"mmr_lambda": 0.9})  # a poor start: diversity over clicks
    service.serve(2)
    return service


def test_bad_proposals_are_refused_at_submission(service):
    coordinator = Coordinator(service)
    with pytest.raises(ConfigError, match="baseline/rerank/mmrr"):
        coordinator.submit(Proposal("x", {"baseline/rerank/mmrr": {"mmr_lambda": 0.1}}))
    with pytest.raises(ConfigError, match="mmr_lambda"):
        coordinator.submit(Proposal("x", {"baseline/rerank/mmr": {"mmr_lambda": 7.0}}))
    with pytest.raises(ConfigError, match=r"`share` must be <= the coordinator's traffic_budget 0.5 \(got 0.6"):
        coordinator.submit(Proposal("x", {"baseline/rerank/mmr": {"mmr_lambda": 0.1}}, share=0.6))
    with pytest.raises(ConfigError, match="`goal` must be one of"):
        Proposal("x", {"baseline/rerank/mmr": {}}, goal="speed")
    with pytest.raises(ConfigError, match="needs the resource model"):
        Coordinator(service, cost_budget=1.0)
    with pytest.raises(ConfigError, match="must change at least one agent's config"):
        Proposal("x")
    ranker = service.system.pipelines[0].ranker
    with pytest.raises(ConfigError, match=r"`replace\[baseline/rerank/mmr\]` must be a new agent of role 'rerank'"):
        coordinator.submit(Proposal("x", replace={"baseline/rerank/mmr": ranker}))
    assert coordinator.events == []


@pytest.mark.slow
def test_a_replacement_is_tested_as_a_new_agent_and_shipped_as_that_object(service):
    """AutoTrain and AutoFeature propose new agent objects (rankers): the challenger serves the object, the running
    pipeline keeps its own until the test is won, then holds the very object proposed."""
    running = service.system.pipelines[0]
    old = running.reranker
    new = copy.deepcopy(old)
    new.configure({**new.config, "mmr_lambda": 0.0})
    coordinator = Coordinator(service, traffic_budget=0.5)
    coordinator.submit(Proposal("autotrain", replace={"baseline/rerank/mmr": new}, share=0.3, windows=2))
    coordinator.step()
    assert running.reranker is old  # under test: not shipped yet
    while coordinator.pending:
        coordinator.step()
    assert [e.kind for e in coordinator.events] == ["queued", "started", "shipped"]
    assert running.reranker is new and service.agent("baseline/rerank/mmr") is new


@pytest.mark.slow
def test_conflicting_changes_are_serialised_judged_recorded_and_credited(service, tmp_path):
    with KnowledgeStore(tmp_path / "store.db") as store:
        exp = store.start_experiment("coordinated", {}, 0)
        coordinator = Coordinator(service, traffic_budget=0.5, store=store, exp_id=exp)
        before = service.snapshot()
        good = coordinator.submit(Proposal("rerank_evolution", {"baseline/rerank/mmr": {"mmr_lambda": 0.0}},
                                           share=0.2, windows=2))
        bad = coordinator.submit(Proposal("autoperf", {"baseline/fusion/quota": {"size": 100},
                                                       "baseline/rerank/mmr": {"mmr_lambda": 1.0}},
                                          share=0.2, windows=2, goal="cost"))
        while coordinator.pending:
            coordinator.step()
        assert coordinator.overlaps == 0
        kinds = [(e.proposal, e.kind, e.window) for e in coordinator.events]
        # the second touches the same pipeline: it starts only once the first is decided, although traffic allowed both
        assert kinds[:4] == [(good, "queued", 0), (bad, "queued", 0), (good, "started", 0), (good, "shipped", 2)]
        assert kinds[4:] == [(bad, "started", 2), (bad, "rejected", 4)]
        assert service.agent("baseline/rerank/mmr").config["mmr_lambda"] == 0.0  # shipped
        assert service.agent("baseline/fusion/quota").config["size"] == 500  # not shipped
        summary = coordinator.summary()
        assert (summary["coordinator/shipped"], summary["coordinator/rejected"]) == (1.0, 1.0)
        # one test ran in each of the 4 windows, its challenger serving ~20% of the users (a user's requests vary)
        assert 0.15 < summary["coordinator/test_share"] < 0.25
        assert summary["coordinator/rejected_share"] == pytest.approx(summary["coordinator/test_share"] / 2, rel=0.35)
        (rejected,) = [e for e in coordinator.events if e.kind == "rejected"]
        assert "degradation bound" in rejected.reason
        rollouts = store.rollouts(exp)
        assert [(r.agent, r.decision) for r in rollouts] == [("coordinator/rerank_evolution#0", "accepted"),
                                                             ("coordinator/autoperf#1", "rejected")]
        assert rollouts[0].effect > 0 and rollouts[0].ci_low > 0
        credit = coordinator.credit(before)
        assert credit["credit/0"] > 0 and credit["credit/all"] == pytest.approx(credit["credit/0"])
        (design,) = store.designs(agent="coordinator/credit")
        assert design.document["shipped"][0]["contribution"] == pytest.approx(credit["credit/0"])


@pytest.mark.slow
def test_proposals_on_different_pipelines_test_at_once_on_disjoint_users():
    torch.set_num_threads(1)
    service = Deployment.start(TINY, segment_routed(TINY), world_seed=0, sim_seed=0, concurrency=400, window=1000)
    service.serve()
    names = [p.name for p in service.system.pipelines]
    assert len(names) == 2
    coordinator = Coordinator(service, traffic_budget=0.6)
    first = coordinator.submit(Proposal("a", {f"{names[0]}/rerank/mmr": {"mmr_lambda": 0.2}}, share=0.3, windows=1))
    second = coordinator.submit(Proposal("b", {f"{names[1]}/rerank/mmr": {"mmr_lambda": 0.2}}, share=0.3, windows=1))
    window = coordinator.step()
    started = [(e.proposal, e.window) for e in coordinator.events if e.kind == "started"]
    assert started == [(first, 0), (second, 0)] and coordinator.overlaps == 0
    pipes = window.requests["pipeline"]
    assert set(np.unique(pipes)) <= set(range(len(names) + 2)) and (pipes >= len(names)).any()
    assert isinstance(service.system, System) and [p.name for p in service.system.pipelines] == names  # restored


def _finished(coordinator: Coordinator, proposal: Proposal, control: float, candidate: float, *, n: int = 20_000,
              violations: tuple[float, float] = (0.0, 0.0), flops: float = 0.0) -> _Test:
    """A test that has served its windows with outcomes ``control`` / ``candidate`` clicks per request plus the same
    noise (sd 0.05: the 95% interval of the effect is the exact difference +- 0.001) and the given violations;
    registered with the coordinator as running."""
    rng = np.random.default_rng(0)
    designer = ExperimentDesigner(config={"min_requests": 100})
    noise = 0.05 * rng.standard_normal(n)
    for arm, (mean, viol) in enumerate(zip((control, candidate), violations)):
        designer.outcomes[arm].append(mean + noise)
        designer.users[arm].append(np.arange(n) + arm * n)  # a user per request: the interval is then Welch's
        designer.guardrails[arm].append((rng.random(n) < viol).astype(np.float64))
    pid = len(coordinator.proposals)
    coordinator.proposals[pid] = proposal
    test = _Test(pid, proposal, 1, [], designer, 0, served=proposal.windows, requests=n, flops=[flops])
    coordinator.tests[pid] = test
    if coordinator.coordinate:
        coordinator.scheduler.active[pid] = proposal
    return test


FUSION = "baseline/fusion/quota"


@pytest.mark.parametrize("coordinate", [True, False])
def test_cost_changes_together_stay_within_the_global_bound_only_when_coordinated(service, coordinate):
    """Two cost cuts each losing 0.5% of the clicks (0.7% at the interval's end): each within the 1% bound of its own
    test, together beyond it.
    The coordinator ships the first and refuses the second (global bound); uncoordinated, both ship."""
    coordinator = Coordinator(service, max_degradation=0.01, coordinate=coordinate)
    for size in (300, 200):
        coordinator._decide(_finished(coordinator, Proposal("autoperf", {FUSION: {"size": size}}, goal="cost"),
                                      0.5, 0.5 * (1 - 0.005)))
    kinds = [e.kind for e in coordinator.events if e.kind != "queued"]
    assert kinds == (["shipped", "rejected"] if coordinate else ["shipped", "shipped"])
    if coordinate:
        assert "global degradation bound" in coordinator.events[-1].reason
        assert coordinator.summary()["coordinator/degradation_spent"] == pytest.approx(0.005, rel=0.01)  # effect / the control mean (0.5 + noise)
        assert service.agent(FUSION).config["size"] == 300


def test_a_cost_change_that_worsens_violations_is_rejected_by_either_rule(service):
    for coordinate in (True, False):
        coordinator = Coordinator(service, coordinate=coordinate)
        coordinator._decide(_finished(coordinator, Proposal("autoperf", {FUSION: {"size": 100}}, goal="cost"),
                                      0.5, 0.5, violations=(0.0, 0.2)))
        (event,) = coordinator.events
        assert event.kind == "rejected" and "guardrail worsened" in event.reason


def test_the_flops_budget_refuses_a_costly_winner_only_when_coordinated(service):
    service.calibrate_resources(batch_sizes=(32,), repeats=1)
    name = next(n for n in service.agent_names() if n.startswith("baseline/ranking/"))
    ranker = copy.deepcopy(service.agent(name))
    for coordinate, kind in ((True, "rejected"), (False, "shipped")):
        coordinator = Coordinator(service, flops_budget=1e6, coordinate=coordinate)
        coordinator._decide(_finished(coordinator, Proposal("autotrain", replace={name: copy.deepcopy(ranker)}),
                                      0.5, 0.55, flops=2e6))
        (event,) = coordinator.events
        assert event.kind == kind
        assert ("FLOPs budget" in event.reason) == coordinate
    with pytest.raises(ConfigError, match="`flops_budget` needs the resource model"):
        Coordinator(Deployment.start(TINY, static_baseline(TINY), world_seed=0, sim_seed=0), flops_budget=1.0)


def test_uncoordinated_tests_overlap_each_on_its_own_independent_users():
    """Each test draws its users with its own salt: a user is in test i with probability share_i whatever the
    other tests, so users in several tests exist (and get the combination); test i's arm is every combination with
    its bit."""
    tests = [_Test(i, Proposal("x", {"a/b/c": {}}, share=s), salt, [], None, 0)  # type: ignore[arg-type]
             for i, (s, salt) in enumerate([(0.5, 11), (0.3, 22)])]
    router = _LayeredRouter(None, tests, {0: [0, 1]}, {(0, 1): 1, (0, 2): 2, (0, 3): 3}, [])  # type: ignore[arg-type]
    mask = router.masks(np.arange(200_000))
    shares = np.bincount(mask, minlength=4) / len(mask)
    np.testing.assert_allclose(shares, [0.5 * 0.7, 0.5 * 0.7, 0.5 * 0.3, 0.5 * 0.3], atol=0.005)


@pytest.mark.slow
def test_uncoordinated_serving_gives_a_user_in_two_tests_both_changes(service):
    coordinator = Coordinator(service, coordinate=False)
    first = coordinator.submit(Proposal("rerank", {"baseline/rerank/mmr": {"mmr_lambda": 0.1}}, share=0.5, windows=1))
    second = coordinator.submit(Proposal("autoperf", {FUSION: {"size": 100}}, share=0.5, windows=1, goal="cost"))
    served: dict[str, tuple[float, int]] = {}

    def on_log(window):
        for p in service.system.pipelines:
            served[p.name] = (p.reranker.config["mmr_lambda"], p.fusion.config["size"])

    window = coordinator.step(on_log=on_log)
    assert [(e.proposal, e.kind) for e in coordinator.events[:4]] == [(first, "queued"), (second, "queued"),
                                                                      (first, "started"), (second, "started")]
    assert coordinator.overlaps == 1  # both tests ran on the one pipeline at once
    assert served == {"baseline": (0.9, 500), "baseline/tests0": (0.1, 500), "baseline/tests1": (0.9, 100),
                      "baseline/tests0+1": (0.1, 100)}
    shares = np.bincount(window.requests["pipeline"], minlength=4) / len(window.requests["pipeline"])
    assert (shares > 0.15).all()  # every combination served about a quarter of the requests
    assert service.agent("baseline/rerank/mmr").config["mmr_lambda"] in (0.9, 0.1)  # decided on its own rule
    assert len([e for e in coordinator.events if e.kind in ("shipped", "rejected")]) == 2
