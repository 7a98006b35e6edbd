"""Inner metrics per role, each checked on hand-built data against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.validation import ConfigError
from rewards.inner import (
    ROLES,
    auc,
    calibration,
    ece,
    experiment_metrics,
    inner_metrics,
    intra_list_diversity,
    log_loss,
    ndcg,
    ranking_metrics,
    recall_metrics,
    rerank_metrics,
    router_metrics,
)

# item embeddings of the small log: item0 [1,0], item1 [0,1], item2 [1,1], item3 [2,0], item4 [-1,0], item5 [0,0]
EMBEDDING = np.array([[1, 0], [0, 1], [1, 1], [2, 0], [-1, 0], [0, 0]], dtype=np.float32)


# ---------------------------------------------------------------- ranking


def test_auc_brief_example() -> None:
    # positives 0.9, 0.3; negatives 0.8, 0.2: pairs (0.9>0.8) yes, (0.9>0.2) yes, (0.3>0.8) no, (0.3>0.2) yes -> 3/4
    assert auc([0.9, 0.8, 0.3, 0.2], [1, 0, 1, 0]) == pytest.approx(0.75)


def test_auc_counts_ties_as_half() -> None:
    # positives 0.9, 0.5; negative 0.5: (0.9>0.5) 1 + (0.5=0.5) 1/2 -> 1.5 / 2 pairs = 0.75
    assert auc([0.9, 0.5, 0.5], [1, 1, 0]) == pytest.approx(0.75)
    # all scores tied: every pair counts 1/2
    assert auc([0.3, 0.3, 0.3, 0.3], [1, 0, 0, 1]) == pytest.approx(0.5)


def test_auc_is_nan_with_one_class() -> None:
    assert math.isnan(auc([0.1, 0.2], [1, 1]))
    assert math.isnan(auc([0.1, 0.2], [0, 0]))


def test_auc_rejects_mismatched_and_nan_input() -> None:
    with pytest.raises(ValueError, match=r"`scores` and `labels` must have equal lengths \(got 2 and 3\)"):
        auc([0.1, 0.2], [1, 0, 1])
    with pytest.raises(ValueError, match=r"`scores` must not contain nan \(got 1 nan of 2\)"):
        auc([0.1, float("nan")], [1, 0])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-10_000, 10_000), st.booleans()), min_size=2, max_size=40, unique_by=lambda t: t[0])
)
def test_auc_flips_with_the_score_sign_without_ties(pairs: list[tuple[int, bool]]) -> None:
    s = np.array([p[0] for p in pairs], dtype=np.float64) / 100.0  # distinct scores: no ties
    y = np.array([p[1] for p in pairs])
    a = auc(s, y)
    if y.all() or not y.any():
        assert math.isnan(a) and math.isnan(auc(-s, y))
    else:
        assert 0.0 <= a <= 1.0
        assert a == pytest.approx(1.0 - auc(-s, y), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=30))
def test_auc_matches_counting_pairs_with_ties(pairs: list[tuple[int, bool]]) -> None:
    s = np.array([p[0] for p in pairs], dtype=np.float64)  # few distinct values: many ties
    y = np.array([p[1] for p in pairs])
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        assert math.isnan(auc(s, y))
        return
    # the definition: correctly ordered pairs count 1, tied pairs 1/2
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auc(s, y) == pytest.approx(wins / (pos.size * neg.size), abs=1e-12)


def test_ndcg_of_the_shown_order() -> None:
    # request 7: click at position 1 only: DCG = 1/log2(1+2) = 0.63093, IDCG (1 click on top) = 1/log2(2) = 1
    # request 8: clicks at positions 0 and 2: DCG = 1 + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3) = 1.63093 -> 0.91972
    # request 9: no click -> excluded; mean = (0.63093 + 0.91972) / 2 = 0.77533
    request = [7, 7, 8, 8, 8, 9, 9]
    position = [0, 1, 0, 1, 2, 0, 1]
    click = [0, 1, 1, 0, 1, 0, 0]
    first = 1 / np.log2(3)
    second = 1.5 / (1 + 1 / np.log2(3))
    assert ndcg(request, position, click) == pytest.approx((first + second) / 2)
    assert ndcg(request, position, click) == pytest.approx(0.77533, abs=1e-5)
    assert math.isnan(ndcg([1, 1], [0, 1], [0, 0]))


def test_log_loss_clips_and_averages() -> None:
    # -(ln 0.8 + ln(1 - 0.4)) / 2 = (0.22314 + 0.51083) / 2 = 0.36698
    assert log_loss([0.8, 0.4], [1, 0]) == pytest.approx(0.366985, abs=1e-6)
    # a confident miss is clipped at 1e-7: -ln(1e-7) = 16.118
    assert log_loss([0.0], [1]) == pytest.approx(-math.log(1e-7))


def test_ece_with_shared_bins() -> None:
    # 10 bins: 0.12 and 0.18 fall in bin 1 (mean score 0.15, mean click 1/2), 0.85 in bin 8 (mean click 1)
    # ece = 2/3 * |0.15 - 0.5| + 1/3 * |0.85 - 1| = 0.23333 + 0.05 = 0.28333
    assert ece([0.12, 0.18, 0.85], [0, 1, 1]) == pytest.approx(0.283333, abs=1e-6)
    # with 1 bin ece = |mean score - mean click| = |1.15/3 - 2/3| = 0.85/3 = 0.28333 too (the gaps share a sign)
    assert ece([0.12, 0.18, 0.85], [0, 1, 1], bins=1) == pytest.approx(0.85 / 3)
    # a perfectly calibrated bin: scores 0.5, 0.5 with one click -> 0
    assert ece([0.5, 0.5], [1, 0]) == pytest.approx(0.0)
    # a score of exactly 1 lands in the last bin: |1 - 1| = 0
    assert ece([1.0], [1]) == pytest.approx(0.0)


def test_ece_rejects_bad_bins() -> None:
    with pytest.raises(ConfigError, match=r"`bins` must be in \[1, inf\) \(got 0\)"):
        ece([0.5], [1], bins=0)


def test_ranking_metrics_on_the_small_log(small_log) -> None:
    m = ranking_metrics(small_log)
    # scores .95 .45 .85 .35 .65 .15 .75 .25, clicks 0 1 0 0 1 1 1 0
    # positives .45 .65 .15 .75 each beat the negatives .35 and .25 except .15 (0): 2+2+0+2 = 6 of 4*4 pairs
    assert m["auc"] == pytest.approx(6 / 16)
    # r0 click at position 1: 1/log2(3) = 0.63093; r2 clicks at 0 and 1: 1; r3 click at 0: 1; r1 no click: excluded
    assert m["ndcg"] == pytest.approx((1 / np.log2(3) + 1 + 1) / 3)
    # -(ln .05 + ln .45 + ln .15 + ln .65 + ln .65 + ln .15 + ln .75 + ln .75) / 8
    # = (2.99573 + 0.79851 + 1.89712 + 0.43078 + 0.43078 + 1.89712 + 0.28768 + 0.28768) / 8 = 9.02541 / 8
    assert m["log_loss"] == pytest.approx(9.02541 / 8, abs=1e-5)
    # mean score 4.4 / 8 = 0.55 over mean click 4 / 8 = 0.5
    assert m["calibration"] == pytest.approx(1.1, abs=1e-6)
    # every score sits alone in its bin (9, 4, 8, 3, 6, 1, 7, 2): ece = mean |p - y|
    # = (.95 + .55 + .85 + .35 + .35 + .85 + .25 + .25) / 8 = 4.4 / 8
    assert m["ece"] == pytest.approx(0.55, abs=1e-6)


# ---------------------------------------------------------------- recall


def test_recall_metrics_on_the_small_log(small_log) -> None:
    # later clicks (strictly greater step): r0 (user 0, step 0) -> {1, 4} clicked at step 2;
    # r1 (user 1, step 1) -> {2} clicked at step 3; r2 and r3 have none (r2's own clicks at step 2 do not count).
    # popular: r0 {0,4,3} & {1,4} = {4}: hit, 1/2; r1 {0,3} & {2} = {}: miss, 0 -> hit 1/2, recall 1/4
    popular = recall_metrics(small_log, "popular")
    assert popular["hit_rate"] == pytest.approx(0.5)
    assert popular["recall_at_k"] == pytest.approx(0.25)
    assert popular["coverage"] == pytest.approx(3 / 6)  # {0, 3, 4} of 6 items
    assert popular["click_share"] == pytest.approx(1 / 4)  # clicked impressions' routes: r1, r1, r0, r1
    # collab: r0 {1,2} & {1,4} = {1}: hit, 1/2; r1 {2,1} & {2} = {2}: hit, 1 -> hit 1, recall 3/4
    collab = recall_metrics(small_log, 1)
    assert collab["hit_rate"] == pytest.approx(1.0)
    assert collab["recall_at_k"] == pytest.approx(0.75)
    assert collab["coverage"] == pytest.approx(2 / 6)  # {1, 2}
    assert collab["click_share"] == pytest.approx(3 / 4)


def _recall_by_loops(log, route: int) -> tuple[float, float]:
    """The definition, request by request, in plain Python."""
    req, imp, cand = log.requests, log.impressions, log.candidates
    clicks = [(u, i, t) for u, i, t, c in zip(imp["user"], imp["item"], imp["step"], imp["click"]) if c]
    hits, recalls = [], []
    for q, u, t in zip(req["request"], req["user"], req["step"]):
        got = {i for r, i, ro in zip(cand["request"], cand["item"], cand["route"]) if r == q and ro == route}
        later = {i for cu, i, ct in clicks if cu == u and ct > t}
        if got and later:
            hits.append(bool(got & later))
            recalls.append(len(got & later) / len(later))
    return float(np.mean(hits)), float(np.mean(recalls))


def test_recall_matches_the_definition_on_random_logs(make_log) -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        n_req, k, n_cand = 40, 3, 6
        req_user, req_step = rng.integers(0, 5, n_req), rng.integers(0, 8, n_req)
        imp_req = np.repeat(np.arange(n_req), k)
        cand_req = np.repeat(np.arange(n_req), n_cand)
        log = make_log(
            impressions={
                "request": imp_req, "user": req_user[imp_req], "step": req_step[imp_req],
                "item": rng.integers(0, 12, imp_req.size), "click": rng.random(imp_req.size) < 0.3,
            },
            requests={"request": np.arange(n_req), "user": req_user, "step": req_step},
            candidates={"request": cand_req, "item": rng.integers(0, 12, cand_req.size), "route": rng.integers(0, 2, cand_req.size)},
            route_names=["a", "b"], num_items=12,
        )
        for route in (0, 1):
            m = recall_metrics(log, route)
            assert (m["hit_rate"], m["recall_at_k"]) == pytest.approx(_recall_by_loops(log, route))


def test_recall_counts_duplicate_candidates_once(make_log) -> None:
    # user 0 requests at step 0 (r0) and clicks items 5 and 6 at step 1 (r1); the route returned item 5 twice for r0
    # -> |{5} & {5, 6}| / |{5, 6}| = 1/2 (not 2/2)
    log = make_log(
        impressions={"request": [1, 1], "step": [1, 1], "item": [5, 6], "click": [1, 1]},
        requests={"request": [0, 1], "step": [0, 1]},
        candidates={"request": [0, 0], "item": [5, 5], "route": [0, 0]},
        route_names=["r"], num_items=10,
    )
    m = recall_metrics(log, 0)
    assert m["recall_at_k"] == pytest.approx(0.5)
    assert m["hit_rate"] == pytest.approx(1.0)
    assert m["coverage"] == pytest.approx(1 / 10)


def test_recall_uses_each_users_own_later_clicks(make_log) -> None:
    # r0: user 0 at step 0, route returns {3}; user 1 (not user 0) clicks 3 at step 2; user 0 clicks 4 at step 2
    # -> user 0's later clicks are {4}: miss, recall 0. r1: user 1 at step 0, route returns {3} -> hit, recall 1.
    log = make_log(
        impressions={"request": [2, 3], "step": [2, 2], "user": [1, 0], "item": [3, 4], "click": [1, 1]},
        requests={"request": [0, 1, 2, 3], "step": [0, 0, 2, 2], "user": [0, 1, 1, 0]},
        candidates={"request": [0, 1], "item": [3, 3], "route": [0, 0]},
        route_names=["r"], num_items=5,
    )
    m = recall_metrics(log, "r")
    assert m["hit_rate"] == pytest.approx(0.5)
    assert m["recall_at_k"] == pytest.approx(0.5)


def test_recall_ignores_clicks_at_the_requests_own_step(make_log) -> None:
    # user 0: r0 at step 0 shows item 1 and it is clicked there (step 0); item 2 is clicked at step 1 (r1)
    # the route returned {1} for r0: later clicks are {2} only (step 0 is not later than 0) -> miss, recall 0/1.
    # r1 has no later clicks: excluded. Counting same-step clicks would give a hit with recall 1/2.
    log = make_log(
        impressions={"request": [0, 1], "step": [0, 1], "item": [1, 2], "click": [1, 1]},
        requests={"request": [0, 1], "step": [0, 1]},
        candidates={"request": [0, 1], "item": [1, 2], "route": [0, 0]},
        route_names=["r"], num_items=3,
    )
    m = recall_metrics(log, 0)
    assert m["hit_rate"] == 0.0
    assert m["recall_at_k"] == 0.0


def test_recall_is_nan_without_later_clicks(make_log) -> None:
    log = make_log(
        impressions={"request": [0], "item": [1], "click": [1]},
        requests={"request": [0]},
        candidates={"request": [0], "item": [1], "route": [0]},
        route_names=["r"], num_items=2,
    )
    m = recall_metrics(log, 0)
    assert math.isnan(m["hit_rate"]) and math.isnan(m["recall_at_k"])
    assert m["click_share"] == pytest.approx(1.0)


def test_recall_rejects_unknown_routes_and_orphan_candidates(small_log, make_log) -> None:
    with pytest.raises(ConfigError, match=r"`route` must be one of \['popular', 'collab'\] \(got 'colab'\); did you mean 'collab'\?"):
        recall_metrics(small_log, "colab")
    with pytest.raises(ConfigError, match=r"`route` must be in \[0, 1\] \(got 2\)"):
        recall_metrics(small_log, 2)
    log = make_log(requests={"request": [0]}, candidates={"request": [4], "item": [1], "route": [0]}, route_names=["r"])
    with pytest.raises(ValueError, match=r"`candidates` reference requests absent from the `requests` table \(e.g. \[4\]\)"):
        recall_metrics(log, 0)


# ---------------------------------------------------------------- re-rank


def test_intra_list_diversity_by_hand() -> None:
    # request 0 shows items 0, 3, 4 = [1,0], [2,0], [-1,0]: cosines 1, -1, -1 -> mean -1/3 -> diversity 4/3
    # request 1 shows item 1 alone: excluded (no pair)
    # request 2 shows items 1, 2 = [0,1], [1,1]: cosine 1/sqrt(2) -> diversity 1 - 0.70711 = 0.29289
    div = intra_list_diversity([0, 0, 0, 1, 2, 2], [0, 3, 4, 1, 1, 2], EMBEDDING)
    assert div == pytest.approx((4 / 3 + 1 - 1 / math.sqrt(2)) / 2)
    assert math.isnan(intra_list_diversity([0], [1], EMBEDDING))


def test_rerank_metrics_on_the_small_log(small_log) -> None:
    m = rerank_metrics(small_log, EMBEDDING)
    # r0 {0,1}: cos 0 -> 1; r1 {2,3}: cos([1,1],[2,0]) = 1/sqrt(2) -> 0.29289; r2 {1,4}: 0 -> 1; r3 {2,0}: 0.29289
    assert m["intra_list_diversity"] == pytest.approx((1 + (1 - 1 / math.sqrt(2))) / 2)
    assert m["freshness"] == pytest.approx(4.0 / 8)  # (1 + .5 + .2 + .2 + .8 + .4 + .6 + .3) / 8
    assert m["risk_rate"] == pytest.approx(1 / 8)  # one violation (r1, item 2) in 8 impressions
    assert m["tail_share"] == pytest.approx(4 / 8)  # tiers 0 1 2 2 1 2 2 0


def test_rerank_rejects_bad_embeddings(small_log) -> None:
    with pytest.raises(ConfigError, match=r"`embedding` must be a 2-D \(num_items, dim\) array \(got shape \(6,\)\)"):
        rerank_metrics(small_log, np.zeros(6))
    with pytest.raises(ConfigError, match=r"`embedding` must have a row per item id \(got 3 rows, item ids up to 4\)"):
        rerank_metrics(small_log, np.ones((3, 2)))


# ---------------------------------------------------------------- router and experiment


def test_router_metrics_on_the_small_log(small_log) -> None:
    m = router_metrics(small_log)
    assert m["segment/new/clicks_per_request"] == pytest.approx(1.5)  # r0 + r2: (1 + 2) clicks / 2 requests
    assert m["segment/heavy/clicks_per_request"] == pytest.approx(0.5)  # r1 + r3: (0 + 1) / 2
    assert math.isnan(m["segment/casual/clicks_per_request"])  # no requests
    assert m["mean_segment_clicks_per_request"] == pytest.approx(1.0)  # (1.5 + 0.5) / 2, casual left out


def test_router_rejects_unnamed_segments(make_log) -> None:
    log = make_log(requests={"request": [0], "segment": [2]}, segment_names=["a", "b"])
    with pytest.raises(ValueError, match=r"request segments must index `segment_names` \(got segment 2"):
        router_metrics(log)


def test_experiment_metrics_on_the_small_log(small_log) -> None:
    m = experiment_metrics(small_log)
    # pipeline 0 serves r0, r2, r3: (1 + 2 + 1) / 3 = 4/3; pipeline 1 serves r1: 0
    assert m["pipeline/0/clicks_per_request"] == pytest.approx(4 / 3)
    assert m["pipeline/1/clicks_per_request"] == pytest.approx(0.0)
    assert m["pipeline/0/request_share"] == pytest.approx(3 / 4)
    assert m["best_arm_share"] == pytest.approx(3 / 4)
    assert m["regret"] == pytest.approx(4 / 3 - 1.0)  # best arm 4/3 minus overall 4 clicks / 4 requests


# ---------------------------------------------------------------- per role


def test_inner_metrics_namespaces_every_role(small_log) -> None:
    kw = {"recall": {"route": "collab"}, "rerank": {"embedding": EMBEDDING}}
    for role in ROLES:
        m = inner_metrics(role, small_log, **kw.get(role, {}))
        assert all(k.startswith(f"inner/{role}/") for k in m)
        assert bool(m) == (role != "system")
    assert inner_metrics("recall", small_log, route="collab")["inner/recall/recall_at_k"] == pytest.approx(0.75)
    assert inner_metrics("router", small_log)["inner/router/segment/new/clicks_per_request"] == pytest.approx(1.5)
    assert inner_metrics("fusion", small_log)["inner/fusion/ece"] == pytest.approx(0.55, abs=1e-6)


def test_fusion_metrics_are_those_of_the_served_probability(make_log) -> None:
    # the ranker's score and the served (calibrated) probability differ: ranking reads one, fusion the other
    imp = {"request": [0, 0, 1, 1], "position": [0, 1, 0, 1], "click": [1, 0, 0, 0],
           "score": [0.8, 0.6, 0.4, 0.2], "p_click": [0.4, 0.3, 0.2, 0.1]}
    log = make_log(impressions=imp, requests={"request": [0, 1]})
    # ECE: score bins 8, 6, 4, 2 -> |0.8 - 1| + 0.6 + 0.4 + 0.2 = 1.4 / 4; p_click bins 4, 3, 2, 1 -> 0.6 + 0.3 + 0.2 + 0.1
    assert inner_metrics("ranking", log)["inner/ranking/ece"] == pytest.approx(1.4 / 4)
    assert inner_metrics("fusion", log)["inner/fusion/ece"] == pytest.approx(1.2 / 4)
    assert inner_metrics("fusion", log)["inner/fusion/auc"] == inner_metrics("ranking", log)["inner/ranking/auc"] == 1.0
    with pytest.raises(ConfigError, match=r"`column` must be one of \['score', 'p_click'\] \(got 'scor'\)"):
        ranking_metrics(log, "scor")


def test_inner_metrics_validation(small_log) -> None:
    with pytest.raises(ConfigError, match=r"`role` must be one of .* \(got 'rankng'\); did you mean 'ranking'\?"):
        inner_metrics("rankng", small_log)
    with pytest.raises(ConfigError, match=r"role 'recall' needs `route`: a route id or one of \['popular', 'collab'\]"):
        inner_metrics("recall", small_log)
    with pytest.raises(ConfigError, match=r"role 'rerank' needs `embedding`"):
        inner_metrics("rerank", small_log)
    with pytest.raises(ConfigError, match=r"`route` only applies to role 'recall' \(got route 0 for role 'ranking'\)"):
        inner_metrics("ranking", small_log, route=0)
    with pytest.raises(ConfigError, match=r"`embedding` only applies to role 'rerank'"):
        inner_metrics("router", small_log, embedding=EMBEDDING)


def test_metrics_of_an_empty_log_are_nan(make_log) -> None:
    log = make_log(segment_names=["a"], route_names=["r"])
    assert all(math.isnan(v) for v in ranking_metrics(log).values())
    assert all(math.isnan(v) for v in recall_metrics(log, 0).values())
    assert all(math.isnan(v) for v in router_metrics(log).values())
    assert all(math.isnan(v) for v in experiment_metrics(log).values())
    assert math.isnan(calibration([], []))
