"""One interval implementation: t quantiles, p-values and Welch's interval against worked numbers, one sign convention."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rewards.stats import mean_ci, t_quantile, t_two_sided_p, welch_interval


@pytest.mark.parametrize("df,q", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (30, 2.0423),
                                  (1e6, 1.9600), (math.inf, 1.9600)])
def test_t_quantile_matches_the_tables(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)


def test_t_quantile_other_levels_fractional_df_and_symmetry():
    assert t_quantile(0.95, 10) == pytest.approx(1.8125, abs=1e-4)
    assert t_quantile(0.995, 5) == pytest.approx(4.0321, abs=1e-4)
    assert t_quantile(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)
    assert 2.5706 < t_quantile(0.975, 4.5) < 2.7764  # between df 5 and df 4
    with pytest.raises(ValueError, match="0 < p < 1"):
        t_quantile(1.0, 3)


def test_two_sided_p_inverts_the_quantile():
    # the table value t_{0.975, 4} = 2.7764 leaves 5% in the two tails; t = 1 on df 1 (Cauchy) leaves 50%
    assert t_two_sided_p(2.776445, 4) == pytest.approx(0.05, abs=1e-6)
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-9)
    assert t_two_sided_p(-1.959964, math.inf) == pytest.approx(0.05, abs=1e-6)
    assert t_two_sided_p(0.0, 7) == pytest.approx(1.0)


def test_mean_ci_worked_example():
    # [1, 2, 3, 4]: mean 2.5, sd 1.290994, se 0.645497, t(0.975, 3) = 3.182446 -> half-width 2.054261
    m, lo, hi = mean_ci([1, 2, 3, 4])
    assert (m, lo, hi) == pytest.approx((2.5, 0.445739, 4.554261), abs=1e-6)
    assert math.isnan(mean_ci([1.0])[1]) and math.isnan(mean_ci([])[0])


def test_welch_worked_example_equal_variances():
    # treatment [4, 5, 6], control [1, 2, 3]: each variance of the mean 1/3, se 0.816497,
    # df = (2/3)^2 / (2 (1/3)^2 / 2) = 4, t_{0.975, 4} = 2.776445; t = 3 / 0.816497 = 3.674235, p = 0.021312
    r = welch_interval(np.array([4.0, 5, 6]), np.array([1.0, 2, 3]))
    assert r.df == pytest.approx(4.0)
    assert (r.effect, r.low, r.high) == pytest.approx((3.0, 3 - 2.776445 * 0.816497, 3 + 2.776445 * 0.816497), abs=1e-5)
    assert r.p == pytest.approx(0.021312, abs=1e-5)


def test_welch_worked_example_unequal_variances_and_sizes():
    # treatment [2, 4, 6, 8, 10]: mean 6, s^2 10, s^2/n 2; control [1, 2, 3]: mean 2, s^2 1, s^2/n 1/3.
    # effect 4, se sqrt(7/3) = 1.527525; df = (7/3)^2 / (2^2 / 4 + (1/3)^2 / 2) = 5.444444 / 1.055556 = 5.157895;
    # t_{0.975, 5.157895} = 2.549 (between 2.5706 at df 5 and 2.4469 at df 6) -> the interval 4 +- 3.894
    r = welch_interval([2.0, 4, 6, 8, 10], [1.0, 2, 3], level=0.95)
    assert r.df == pytest.approx(5.157895, abs=1e-5)
    half = (r.high - r.low) / 2
    assert 2.4469 * 1.527525 < half < 2.5706 * 1.527525
    assert r.effect == pytest.approx(4.0) and (r.high + r.low) / 2 == pytest.approx(4.0)


def test_the_sign_is_treatment_minus_control():
    a, b = [3.0, 4.0, 5.0, 6.0], [1.0, 1.5, 2.0, 2.5]
    forward, backward = welch_interval(a, b), welch_interval(b, a)
    assert forward.effect > 0 and forward.low > 0
    assert (backward.effect, backward.low, backward.high) == pytest.approx((-forward.effect, -forward.high, -forward.low))
    assert backward.p == pytest.approx(forward.p)


def test_too_little_data_and_no_spread():
    r = welch_interval([1.0], [0.0, 1.0])
    assert (r.low, r.high, r.p) == (-math.inf, math.inf, 1.0) and r.effect == pytest.approx(0.5)
    assert math.isnan(welch_interval([], [0.0, 1.0]).effect)
    point = welch_interval([2.0, 2.0], [1.0, 1.0])
    assert (point.effect, point.low, point.high, point.p) == (1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match=r"`level` must be in \(0, 1\) \(got 95\)"):
        welch_interval([1.0, 2.0], [1.0, 2.0], level=95)
