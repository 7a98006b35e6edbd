"""Interleaved tests: team-draft and probabilistic interleaving, credit and the preference test, serving an
interleaved window on a deployment, and the experiment designer's interleaving gate."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import envs
from agents.decision.configs import static_baseline
from agents.decision.functional import ExperimentDesigner
from agents.evolution.deployment import Deployment
from agents.evolution.interleaving import (
    interleave,
    preference_test,
    team_credit,
    team_draft,
    team_draft_multileave,
)
from agents.evolution.rollout import ab_rollout
from envs.validation import ConfigError
from rewards.stats import clustered_mean_interval, mean_ci

TINY = envs.WorldConfig(num_items=600, num_users=1500, num_topics=6, num_creators=40)
WORSE = {"mmr_lambda": 1.0, "mmr_pool": 200}  # pure diversity over 200 candidates: clearly fewer clicks


# ------------------------------------------------------------------------------------------ the methods
def test_team_draft_on_hand_worked_lists():
    a, b = np.array([[1, 2, 3, 4]]), np.array([[2, 5, 1, 6]])
    # round 0: a first -> a adds 1, b adds 2; round 1: b first -> b adds 5 (2 is in), a adds 3 (2 is in)
    out = team_draft(a, b, 4, coins=np.array([[0, 1]]))
    assert out.items.tolist() == [[1, 2, 5, 3]] and out.team.tolist() == [[0, 1, 1, 0]]
    assert out.rank.tolist() == [[0, 0, 1, 2]]
    # b first, then a, a: the item both hold (2) is placed once, by b whose turn it was, and credited to b
    out = team_draft(a, b, 6, coins=np.array([[1, 0, 0]]))
    assert out.items.tolist() == [[2, 1, 3, 5, 4, 6]] and out.team.tolist() == [[1, 0, 0, 1, 0, 1]]
    # identical lists: the slate is the list, the coins only assign the teams
    out = team_draft(a, a, 4, coins=np.array([[1, 0]]))
    assert out.items.tolist() == [[1, 2, 3, 4]] and out.team.tolist() == [[1, 0, 0, 1]]


def test_team_draft_when_a_list_runs_out_the_other_fills_the_slate():
    a, b = np.array([[7, -1, -1, -1]]), np.array([[7, 8, 9, 10]])
    out = team_draft(a, b, 4, coins=np.array([[0, 0]]))
    assert out.items.tolist() == [[7, 8, 9, 10]] and out.team.tolist() == [[0, 1, 1, 1]]
    out = team_draft(np.array([[1, -1]]), np.array([[1, -1]]), 3, coins=np.array([[1, 0]]))
    assert out.items.tolist() == [[1, -1, -1]] and out.team.tolist() == [[1, -1, -1]]


def test_team_draft_multileave_on_hand_worked_lists():
    lists = [np.array([[1, 2, 3]]), np.array([[2, 1, 4]]), np.array([[1, 5, 6]])]
    # round 0 in the order 2, 0, 1: team 2 adds 1, team 0 adds 2, team 1 adds 4; round 1 in the order 1, 2, 0: team
    # 1's items are all in, it drops out, team 2 adds 5, team 0 adds 3; round 2: only team 2 has an item left (6)
    order = np.array([[[2, 0, 1], [1, 2, 0], [0, 1, 2]]])
    out = team_draft_multileave(lists, 7, order=order)
    assert out.items.tolist() == [[1, 2, 4, 5, 3, 6, -1]] and out.team.tolist() == [[2, 0, 1, 2, 0, 2, -1]]


@pytest.mark.parametrize("method", ["team_draft", "probabilistic", "multileave"])
def test_every_item_at_most_once_and_team_draft_keeps_teams_balanced(method):
    rng = np.random.default_rng(0)
    b, length, k = 500, 15, 10
    # overlapping lists over a small universe, some rows padded
    a = np.stack([rng.choice(25, length, replace=False) for _ in range(b)])
    c = np.stack([rng.choice(25, length, replace=False) for _ in range(b)])
    a[:50, 12:] = -1
    lists = [a, c]
    if method == "multileave":
        lists.append(np.stack([rng.choice(25, length, replace=False) for _ in range(b)]))
        out = team_draft_multileave(lists, k, rng)
    else:
        out = interleave(method, a, c, k, rng)
    assert (out.items >= 0).all()
    s = np.sort(out.items, axis=1)
    assert (s[:, 1:] != s[:, :-1]).all()  # no item twice in a slate
    for t, x in enumerate(lists):  # each item sits at its rank in the list of the team that placed it
        m = out.team == t
        assert (np.take_along_axis(x, np.maximum(out.rank, 0), axis=1)[m] == out.items[m]).all()
    if method != "probabilistic":
        counts = np.stack([np.cumsum(out.team == t, axis=1) for t in range(len(lists))])  # picks at each prefix
        assert (counts.max(axis=0) - counts.min(axis=0) <= 1).all()
    else:
        assert 0.4 < (out.team == 1).mean() < 0.6


def test_methods_reject_bad_inputs():
    a = np.arange(4)[None]
    with pytest.raises(ConfigError, match="`method` must be one of"):
        interleave("balanced", a, a, 2, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="needs `rng`"):
        team_draft(a, a, 2)
    with pytest.raises(ConfigError, match="`coins` must be"):
        team_draft(a, a, 2, coins=np.array([[2]]))
    with pytest.raises(ConfigError, match="`rankings` must be"):
        team_draft_multileave([a], 2, np.random.default_rng(0))


# ------------------------------------------------------------------------------------------ credit and the test
def test_team_credit_sums_each_teams_clicks_and_prefers_expected_clicks_when_logged():
    imp = {"request": np.array([5, 5, 5, 5, 9, 9, 9, 9]), "user": np.array([1, 1, 1, 1, 2, 2, 2, 2]),
           "click": np.array([1, 0, 1, 1, 0, 0, 0, 1], bool),
           "click_exp": np.array([0.5, 0.1, 0.2, 0.3, 0.0, 0.1, 0.2, 0.4])}
    team = np.array([0, 1, 1, 0, 1, 0, -1, -1])
    log = SimpleNamespace(impressions=imp)
    requests, users, credit = team_credit(log, team, "clicks")
    assert requests.tolist() == [5, 9] and users.tolist() == [1, 2]
    assert credit.tolist() == [[2.0, 1.0], [0.0, 0.0]]
    _, _, credit = team_credit(log, team, "expected_clicks")
    np.testing.assert_allclose(credit, [[0.8, 0.3], [0.1, 0.0]])
    del imp["click_exp"]  # a log without expected clicks: realised clicks
    _, _, credit = team_credit(log, team, "expected_clicks")
    assert credit.tolist() == [[2.0, 1.0], [0.0, 0.0]]


def test_clustered_interval_is_the_t_interval_with_one_value_per_cluster_and_wider_with_correlated_users():
    rng = np.random.default_rng(1)
    v = rng.normal(0.1, 1.0, 400)
    effect, lo, hi, df, _ = clustered_mean_interval(v, None, 0.95)
    assert (effect, lo, hi) == pytest.approx(mean_ci(v, 0.95)) and df == 399
    users = np.repeat(np.arange(40), 10)
    correlated = v + np.repeat(rng.normal(0, 1.0, 40), 10)  # a per-user shift shared by its 10 requests
    _, lo_i, hi_i, _, _ = clustered_mean_interval(correlated, None)
    _, lo_c, hi_c, df_c, _ = clustered_mean_interval(correlated, users)
    assert df_c == 39 and hi_c - lo_c > 2 * (hi_i - lo_i)
    assert clustered_mean_interval(v[:1], None).p == 1.0


def _simulated(rng: np.random.Generator, method: str, planted: bool, n: int = 300, users: int = 100,
               statistic: str = "difference", identical: bool = False):
    """``n`` requests of ``users`` users (each with its own click propensity); two rankers each sort the items by a
    noisy view of the relevance (the same view when ``identical``); ``planted``: ranker b sorts worst first.
    Clicks: relevance x propensity x a position discount."""
    k, length, items = 10, 20, 100
    user = rng.integers(0, users, n)
    propensity = rng.beta(2, 5, users)[user]
    rel = rng.random((n, items))
    view_a = rel + rng.normal(0, 0.3, rel.shape)
    view_b = view_a if identical else rel + rng.normal(0, 0.3, rel.shape)
    a = np.argsort(-view_a, axis=1)[:, :length]
    b = np.argsort(view_b if planted else -view_b, axis=1)[:, :length]
    out = interleave(method, a, b, k, rng)
    p = propensity[:, None] * np.take_along_axis(rel, out.items, axis=1) / np.sqrt(1.0 + np.arange(k))
    click = rng.random(p.shape) < p
    credit = np.stack([(click & (out.team == t)).sum(axis=1) for t in (0, 1)], axis=1)
    return preference_test(credit, user, 0.05, statistic)


@pytest.mark.parametrize("method", ["team_draft", "probabilistic"])
def test_no_false_preference_between_equal_rankers(method):
    # 200 tests at alpha 0.05 per case: 10 rejections expected, sd 3.1; more than 21 is a bias (p < 0.001)
    rng = np.random.default_rng(7)
    for identical, statistic in [(True, "difference"), (False, "difference"), (False, "wins")]:
        rejected = sum(_simulated(rng, method, False, statistic=statistic, identical=identical).verdict != "none"
                       for _ in range(200))
        assert rejected <= 21, (identical, statistic, rejected)


@pytest.mark.parametrize("method", ["team_draft", "probabilistic"])
def test_detects_a_reversed_ranker_in_a_few_hundred_requests(method):
    rng = np.random.default_rng(3)
    verdicts = [_simulated(rng, method, True, n=200) for _ in range(40)]
    assert all(v.verdict == "incumbent" and v.losses > v.wins for v in verdicts)


def test_designer_interleaving_rule():
    rng = np.random.default_rng(2)
    users = rng.integers(0, 300, 1200)
    designer = ExperimentDesigner(config={"method": "interleaving", "min_requests": 1000})
    assert designer.interleaving and not ExperimentDesigner().interleaving
    designer.observe_paired(rng.normal(0.2, 1.0, 1200), users, guardrail=np.zeros(1200))
    d = designer.decide()
    assert d.accepted and d.metric == "interleaving/clicks" and d.n_incumbent == d.n_candidate == 1200
    designer.reset()
    designer.observe_paired(rng.normal(0.2, 1.0, 1200), users, guardrail=rng.normal(0.5, 0.1, 1200))
    d = designer.decide(guardrail_tolerance=0.05)
    assert not d.accepted and "guardrail worsened" in d.reasons[0]
    designer.reset()
    designer.observe_paired(rng.normal(0.2, 1.0, 500), users[:500])
    assert "too few interleaved requests" in designer.decide().reasons[0]
    with pytest.raises(ConfigError, match=r"`experiment.method` must be one of \['ab', 'interleaving'\]"):
        ExperimentDesigner(config={"method": "multileave"})


# ------------------------------------------------------------------------------------------ serving
@pytest.fixture(scope="module")
def trained() -> Deployment:
    """A deployment whose ranker has learned from 3 windows (after one, its scores barely beat pure diversity)."""
    torch.set_num_threads(1)
    service = Deployment.start(TINY, static_baseline(TINY), seed=3, concurrency=200, window=400)
    service.serve(3)
    return service


@pytest.fixture
def service(trained: Deployment) -> Deployment:
    return trained.fork()


def test_interleaving_the_running_system_with_itself_serves_what_it_would_alone(service):
    twin = service.fork()
    alone = twin.serve(learn=False)
    window = service.serve_interleaved(service.system)
    assert (window.team == -1).all()  # one pipeline object on both sides: outside the test
    for column in ("request", "user", "item", "position", "route", "click"):
        np.testing.assert_array_equal(window.log.impressions[column], alone.impressions[column], err_msg=column)
    np.testing.assert_array_equal(window.log.requests["candidates_scored"], alone.requests["candidates_scored"])


def test_serve_interleaved_puts_both_systems_in_every_slate(service):
    challenger = copy.deepcopy(service.system)
    before = {n: dict(service.agent(n).config) for n in service.agent_names()}
    window = service.serve_interleaved(challenger, salt=11)
    imp = window.log.impressions
    assert window.log.num_requests == 400 and set(np.unique(window.team)) == {0, 1}
    per_request = np.bincount(np.unique(imp["request"], return_inverse=True)[1], weights=window.team)
    assert (per_request == 5).all()  # team draft over long lists: 5 items of each team in a slate of 10
    key = imp["request"] * TINY.num_items + imp["item"]
    assert len(np.unique(key)) == len(key)  # no item twice in a slate
    assert {n: dict(service.agent(n).config) for n in service.agent_names()} == before
    assert service.system.pipelines[0].name == "baseline"  # the running system is back in place
    again = service.fork()
    # the same salt on an identical state: the same interleaving
    np.testing.assert_array_equal(again.serve_interleaved(challenger, salt=11).team, service.fork().serve_interleaved(
        challenger, salt=11).team)


@pytest.mark.parametrize("method", ["team_draft", "probabilistic"])
def test_serve_interleaved_detects_a_worse_reranker_in_one_window(service, method):
    worse = copy.deepcopy(service.system)
    worse.pipelines[0].reranker.configure({**worse.pipelines[0].reranker.config, **WORSE})
    service.window = 800
    result = service.serve_interleaved(worse, method).test("expected_clicks")  # credit by the choice model's probabilities
    assert result.verdict == "incumbent" and result.effect < 0, result


def test_ab_rollout_gate_runs_as_interleaving(service):
    designer = ExperimentDesigner(config={"method": "interleaving", "min_requests": 100})
    running = dict(service.agent("baseline/rerank/mmr").config)
    logs = []
    decision = ab_rollout(service, "baseline/rerank/mmr", WORSE, designer, windows=2, on_log=logs.append)
    assert decision.metric == "interleaving/clicks_exp" and not decision.accepted and decision.effect < 0, decision
    assert decision.n_incumbent == decision.n_candidate == 800 and len(logs) == 2
    assert service.agent("baseline/rerank/mmr").config == running and len(service.system.pipelines) == 1
    assert service.system.pipelines[0].name == "baseline"
    service.serve()
