"""Outer objectives and the Gini coefficient, checked against hand-worked values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.layered import LayeredRewardConfig, layered_reward
from rewards.outer import OUTER_KEYS, gini, outcome_key, outer_metrics


def test_gini_hand_worked_vectors() -> None:
    # sorted [0,0,0,1], coefficients (2i - n - 1) = -3 -1 1 3: 3*1 / (4 * 1) = 0.75 (the maximum (n-1)/n for n = 4)
    assert gini([0, 0, 0, 1]) == 0.75
    assert gini([1, 0, 0, 0]) == 0.75  # order does not matter
    assert gini([3, 3, 3]) == 0.0  # equal exposure
    # [1,2,3,4]: (-3*1 - 1*2 + 1*3 + 3*4) / (4 * 10) = 10 / 40 = 0.25;
    # check: sum over unordered pairs |x_i - x_j| = 1+2+3+1+2+1 = 10 -> 2*10 / (2 * 16 * 2.5) = 0.25
    assert gini([1, 2, 3, 4]) == 0.25
    assert gini(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.25)


def test_gini_undefined_and_invalid() -> None:
    assert math.isnan(gini([]))
    assert math.isnan(gini([0, 0]))  # no exposure at all
    with pytest.raises(ValueError, match=r"`values` must be non-negative \(got -1\)"):
        gini([-1, 2])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 1_000), min_size=1, max_size=60).filter(lambda v: sum(v) > 0))
def test_gini_lies_in_unit_interval(counts: list[int]) -> None:
    g = gini(counts)
    n = len(counts)
    assert 0.0 <= g < 1.0
    assert g <= (n - 1) / n + 1e-12
    # agrees with the mean-absolute-difference definition
    x = np.array(counts, dtype=np.float64)
    assert g == pytest.approx(np.abs(x[:, None] - x[None, :]).sum() / (2 * n * n * x.mean()), abs=1e-12)
    if len(set(counts)) == 1:
        assert g == 0.0


def test_outer_metrics_on_the_small_log(small_log) -> None:
    m = outer_metrics(small_log)
    assert list(m) == list(OUTER_KEYS)
    assert m["outer/engagement/clicks_per_request"] == pytest.approx(1.0)  # (1 + 0 + 2 + 1) / 4
    assert m["outer/engagement/dwell_min_per_request"] == pytest.approx(0.75)  # (30 + 0 + 90 + 60) s / 60 / 4
    # sessions end at r1, r2, r3: returned F T T -> 2/3 (r0's returned flag is ignored: no session end there)
    assert m["outer/long_term/return_rate"] == pytest.approx(2 / 3)
    assert m["outer/long_term/churn_rate"] == pytest.approx(1 / 3)  # churned T F F
    # item impressions over 6 items: item0 2, item1 2, item2 2, item3 1, item4 1, item5 0 -> sorted [0,1,1,2,2,2]
    # coefficients -5 -3 -1 1 3 5: (0 - 3 - 1 + 2 + 6 + 10) / (6 * 8) = 14 / 48
    assert m["outer/ecosystem/item_gini"] == pytest.approx(14 / 48)
    # creator impressions over 4 creators: c0 4, c1 3, c2 1, c3 0 -> sorted [0,1,3,4], coefficients -3 -1 1 3
    # (0 - 1 + 3 + 12) / (4 * 8) = 14 / 32
    assert m["outer/ecosystem/creator_gini"] == pytest.approx(14 / 32)
    assert m["outer/ecosystem/tail_share"] == pytest.approx(4 / 8)  # tiers 0 1 2 2 1 2 2 0
    assert m["outer/ecosystem/creator_coverage"] == pytest.approx(3 / 4)  # creators 0, 1, 2 of 4 shown
    assert m["outer/risk/violations_per_request"] == pytest.approx(0.25)  # 1 violation / 4 requests
    assert m["outer/cost/candidates_per_request"] == pytest.approx(25.0)  # (10 + 20 + 30 + 40) / 4
    # serving cost of the shown items: (1 + 2) + (0.5 + 0.5) + (1.5 + 2.5) + (3 + 1) = 12 over 4 requests
    assert m["outer/cost/serving_per_request"] == pytest.approx(3.0)


def test_serving_cost_per_request_counts_every_shown_item_over_all_requests(make_log) -> None:
    # 3 requests, one of them showing nothing (no impressions): (0.25 + 0.5 + 1.25) / 3
    log = make_log(impressions={"request": [0, 0, 2], "cost": [0.25, 0.5, 1.25]}, requests={"request": [0, 1, 2]})
    assert outer_metrics(log)["outer/cost/serving_per_request"] == pytest.approx(2.0 / 3.0)
    assert math.isnan(outer_metrics(make_log())["outer/cost/serving_per_request"])  # no request: undefined


def test_outer_rates_are_nan_when_undefined(make_log) -> None:
    # one request that did not end a session, no catalog sizes: return/churn and Gini/coverage are undefined
    m = outer_metrics(make_log(requests={"request": [0], "clicks": [2]}))
    assert m["outer/engagement/clicks_per_request"] == pytest.approx(2.0)
    for key in ("long_term/return_rate", "long_term/churn_rate", "ecosystem/item_gini", "ecosystem/creator_coverage"):
        assert math.isnan(m[f"outer/{key}"])
    assert all(math.isnan(v) for v in outer_metrics(make_log()).values())


def test_outer_rejects_items_outside_the_catalog(make_log) -> None:
    log = make_log(impressions={"request": [0], "item": [7]}, requests={"request": [0]}, num_items=5, num_creators=1)
    with pytest.raises(ValueError, match=r"`item` ids must lie in \[0, 5\) \(got ids from 7 to 7\)"):
        outer_metrics(log)


def test_expected_versions_and_the_outcome_setting(make_log) -> None:
    """Realised and expected metrics side by side; the layered reward judges by the one its config names."""
    log = make_log(
        requests={"request": [0, 1, 2, 3], "clicks": [1, 0, 2, 1], "clicks_exp": [0.5, 0.25, 0.75, 0.5],
                  "dwell": [60, 0, 120, 60], "dwell_exp": [30, 15, 60, 15], "session_end": [0, 1, 1, 1],
                  "returned": [1, 0, 1, 1], "return_exp": [0.9, 0.2, 0.6, 0.7], "churned": [0, 1, 0, 0],
                  "churn_exp": [0.0, 0.5, 0.1, 0.0]},
    )
    m = outer_metrics(log)
    assert m["outer/engagement/clicks_per_request"] == pytest.approx(1.0)
    assert m["outer/engagement/clicks_per_request/exp"] == pytest.approx(0.5)
    assert m["outer/engagement/dwell_min_per_request/exp"] == pytest.approx(120 / 60 / 4)
    assert m["outer/long_term/return_rate/exp"] == pytest.approx((0.2 + 0.6 + 0.7) / 3)  # over the ended sessions only
    assert m["outer/long_term/churn_rate/exp"] == pytest.approx(0.6 / 3)
    assert outcome_key("outer/engagement/clicks_per_request", "expected") == "outer/engagement/clicks_per_request/exp"
    assert outcome_key("outer/risk/violations_per_request", "expected") == "outer/risk/violations_per_request"  # one version
    assert outcome_key("outer/engagement/clicks_per_request", "realised") == "outer/engagement/clicks_per_request"
    expected = layered_reward("system", log, LayeredRewardConfig())
    realised = layered_reward("system", log, LayeredRewardConfig(outcome="realised"))
    assert expected.value == pytest.approx(0.5) and realised.value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="outcome.*expected.*realised.*'sampled'"):
        LayeredRewardConfig(outcome="sampled")
