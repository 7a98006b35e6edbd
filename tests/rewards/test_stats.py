"""One interval implementation: t quantiles, p-values and Welch's interval against worked numbers, one sign convention."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rewards.stats import (
    benjamini_hochberg,
    bootstrap_ci,
    clustered_difference_interval,
    holm,
    mde,
    mean_ci,
    mean_test,
    n_for_mde,
    power_at,
    t_cdf,
    t_quantile,
    t_two_sided_p,
    trend_test,
    welch_interval,
    wilson,
)


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


def test_mean_test_worked_example():
    # [1, 2, 3, 4]: mean 2.5, se 0.645497, t = 3.872983 on 3 df -> p = 0.030466; the interval is mean_ci's
    r = mean_test([1.0, 2, 3, 4])
    assert (r.effect, r.low, r.high, r.df, r.n) == pytest.approx((2.5, 0.445739, 4.554261, 3, 4), abs=1e-6)
    assert r.p == pytest.approx(0.030466, abs=1e-6) and r.sd == pytest.approx(1.290994, abs=1e-6)
    assert mean_test([1.0]).p == 1.0 and mean_test([2.0, 2.0]).p == 0.0 and mean_test([0.0, 0.0]).p == 1.0
    assert t_cdf(1.0, 1) == pytest.approx(0.75) and t_cdf(-1.959964, math.inf) == pytest.approx(0.025, abs=1e-6)


def test_mde_worked_examples():
    # paired, 5 differences of sd 1: (t_{0.975,4} 2.776445 + t_{0.8,4} 0.940965) / sqrt(5) = 1.662476
    assert mde(1.0, 5) == pytest.approx(1.662476, abs=1e-5)
    # two groups, large n: (z_{0.975} + z_{0.8}) * sd * sqrt(2 / n) = 2.801585 * sd * sqrt(2 / n)
    assert mde(2.0, 5000, paired=False) == pytest.approx(2.801585 * 2.0 * math.sqrt(2 / 5000), rel=1e-3)
    assert mde(1.0, 10, paired=False) == pytest.approx(mde(1.0, 10, paired=False, n_b=10))
    assert mde(1.0, 10, paired=False, n_b=40) < mde(1.0, 10, paired=False)  # a bigger control group helps
    assert mde(1.0, 10, alpha=0.01) > mde(1.0, 10) and mde(1.0, 10, power=0.9) > mde(1.0, 10)
    assert mde(0.0, 3) == 0.0
    with pytest.raises(ValueError, match="at least 2 values per group"):
        mde(1.0, 1)


@pytest.mark.parametrize("n,paired", [(3, True), (5, True), (10, True), (30, True), (5, False), (20, False)])
def test_power_at_the_mde_is_the_target(n, paired):
    d = mde(0.3, n, paired=paired)
    assert power_at(d, 0.3, n, paired=paired) == pytest.approx(0.8, abs=0.01)  # + the far tail (n=3: 0.005)
    assert power_at(-d, 0.3, n, paired=paired) == pytest.approx(power_at(d, 0.3, n, paired=paired))
    assert power_at(0.0, 0.3, n, paired=paired) == pytest.approx(0.05, abs=1e-9)
    assert power_at(d / 2, 0.3, n, paired=paired) < 0.8 < power_at(2 * d, 0.3, n, paired=paired)


def test_power_matches_a_simulated_t_test():
    # 8 paired differences, sd 1, true effect 1: the t-test's rejection rate over 4000 seeded samples
    rng = np.random.default_rng(7)
    x = rng.normal(1.0, 1.0, size=(4000, 8))
    t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(8))
    simulated = float(np.mean(np.abs(t) > t_quantile(0.975, 7)))
    assert power_at(1.0, 1.0, 8) == pytest.approx(simulated, abs=0.03)


def test_n_for_mde():
    # two groups, Cohen's d = 0.5 at 80% power: 64 per group (the textbook / G*Power value)
    assert n_for_mde(1.0, 0.5, paired=False) == 64
    n = n_for_mde(1.0, 0.5)  # paired: ((1.96 + 0.84) / 0.5)^2 = 31.4 by the normal formula; t quantiles add a few
    assert n == 34 and mde(1.0, n) <= 0.5 < mde(1.0, n - 1)
    assert n_for_mde(0.0, 0.1) == 2 and n_for_mde(1.0, 1e-6, max_n=1000) == 1001
    with pytest.raises(ValueError, match="must be > 0"):
        n_for_mde(1.0, 0.0)


BH95 = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262, 0.5719, 0.6528,
        0.7590, 1.0]  # Benjamini & Hochberg (1995), section 4: 15 p-values


def test_holm_and_bh_on_the_textbook_example():
    h, b = holm(BH95), benjamini_hochberg(BH95)
    # BH at 0.05 rejects the 4 smallest (0.0095 <= 4/15 * 0.05 = 0.0133); Holm (and Bonferroni) only 3
    assert b.reject.tolist() == [True] * 4 + [False] * 11
    assert h.reject.tolist() == [True] * 3 + [False] * 12
    assert h.p[:4] == pytest.approx([15 * 0.0001, 14 * 0.0004, 13 * 0.0019, 12 * 0.0095])
    assert b.p[:4] == pytest.approx([0.0015, 0.003, 0.0095, 0.035625])
    assert np.all(np.diff(h.p) >= 0) and np.all(np.diff(b.p) >= 0) and h.p[-1] == b.p[-1] == 1.0
    assert np.all(b.p <= h.p)  # BH never stricter than Holm


def test_holm_and_bh_small_vector_any_order_and_nan():
    p = [0.01, 0.04, 0.03, 0.005, math.nan]
    h, b = holm(p), benjamini_hochberg(p)
    assert h.p[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and b.p[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert math.isnan(h.p[4]) and not h.reject[4] and not b.reject[4]  # untestable: not counted, never rejected
    assert h.reject.tolist() == [True, False, False, True, False] and b.reject[:4].all()
    assert holm([]).p.size == 0 and holm([0.2]).p[0] == 0.2
    with pytest.raises(ValueError, match="alpha"):
        holm(p, alpha=5)


def test_bootstrap_ci_is_seeded_and_covers_at_about_the_nominal_rate():
    assert bootstrap_ci([1.0, 2, 3, 4, 5]) == bootstrap_ci([1.0, 2, 3, 4, 5])  # seeded
    m, lo, hi = bootstrap_ci([1.0, 2, 3, 4, 5])
    assert m == 3.0 and 1.0 <= lo < 3.0 < hi <= 5.0
    assert bootstrap_ci([1.0])[0] == 1.0 and math.isnan(bootstrap_ci([1.0])[1]) and math.isnan(bootstrap_ci([])[0])
    d, lo, hi = bootstrap_ci([3.0, 4, 5, 6], control=[1.0, 2, 3])
    assert d == pytest.approx(2.5) and lo < 2.5 < hi
    rng = np.random.default_rng(11)  # 300 samples of 30 draws from a skewed distribution (mean 1)
    covered = [lo <= 1.0 <= hi for lo, hi in (bootstrap_ci(rng.exponential(1.0, 30), resamples=2000, seed=i)[1:]
                                              for i in range(300))]
    assert 0.88 <= np.mean(covered) <= 0.98


def test_trend_test_against_a_hand_worked_fit():
    # values 1, 3, 2, 5, 4 at 0..4: x mean 2, y mean 3, Sxy = 4 + 0 + 0 + 2 + 2 = 8, Sxx = 10 -> slope 0.8;
    # residuals -0.4, 0.8, -1.0, 1.2, -0.6: SSR 3.6, s^2 = 3.6 / 3 = 1.2, se = sqrt(1.2 / 10) = 0.3464,
    # t = 2.309 on 3 df: two-sided p = 0.104 (t_{0.95, 3} = 2.353 gives p = 0.10 a little further out)
    slope, p, n = trend_test([1, 3, 2, 5, 4])
    assert slope == pytest.approx(0.8) and n == 5
    assert p == pytest.approx(0.1041, abs=5e-4)
    assert trend_test([2.0, 2.0, 2.0]) == (0.0, 1.0, 3)  # flat: no trend
    assert trend_test([0.0, 0.5, 1.0, 1.5]).p == 0.0  # a perfect line
    assert math.isnan(trend_test([1.0, 2.0]).slope) and trend_test([1.0, 2.0]).p == 1.0  # too few to test
    assert trend_test([1, 3, np.nan, 2, 5, 4]).n == 5  # non-finite values are dropped with their index


def test_holm_with_groups_uses_shaffers_count_of_hypotheses_that_can_still_be_true():
    # two claims, each with "no gain" and "a gain of at least min_effect" (at most one true per claim)
    p, groups = [0.005, 0.9, 0.01, 0.02], [0, 0, 1, 1]
    h = holm(p, groups=groups)
    # sorted 0.005 (claim 0), 0.01 (1), 0.02 (1), 0.9 (0): 2 claims in play until claim 1 is gone -> x2, x2, x2, x1
    assert h.p.tolist() == pytest.approx([0.01, 0.9, 0.02, 0.04]) and h.reject.tolist() == [True, False, True, True]
    assert holm(p, groups=[0, 1, 2, 3]).p == pytest.approx(holm(p).p)  # one hypothesis per group: Holm's own
    with pytest.raises(ValueError, match="one group per p-value"):
        holm(p, groups=[0, 1])


@pytest.mark.parametrize("effect", [0.0, 3.0])
def test_holm_over_claim_pairs_keeps_the_family_wise_error(effect):
    """20 claims whose true effect is 0 (the "no gain" hypothesis is true) or exactly min_effect (the "gain >=
    min_effect" one is), z-tests with se 1 and min_effect 3 (power ~0.85 each way): rejecting any
    true hypothesis is an error; over 4,000 families the rate must stay at 5% within 3 binomial standard errors."""
    from math import erfc, sqrt

    rng = np.random.default_rng(7)
    phi = np.vectorize(lambda x: 0.5 * erfc(-x / sqrt(2.0)))
    claims, floor, reps, errors = 20, 3.0, 4000, 0
    z = rng.standard_normal((reps, claims)) + effect
    p_held, p_short = np.minimum(1.0, 2 * (1 - phi(z))), np.minimum(1.0, 2 * phi(z - floor))
    groups = np.tile(np.arange(claims), 2)
    for i in range(reps):
        rejected = holm(np.concatenate([p_held[i], p_short[i]]), groups=groups).reject
        errors += bool(rejected[:claims].any() if effect == 0.0 else rejected[claims:].any())
    assert errors / reps <= 0.05 + 3 * sqrt(0.05 * 0.95 / reps)


def test_psi_is_zero_for_one_distribution_and_large_for_a_shift():
    from rewards.stats import psi

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(20_000), rng.standard_normal(20_000)
    assert psi(a, b) < 0.01 and psi(a, a) == pytest.approx(0.0)
    assert psi(a, b + 1.0) > 0.25  # a shift of one standard deviation: "large" on the usual reading
    assert psi(np.zeros(100), np.zeros(50)) == pytest.approx(0.0) and math.isnan(psi([], [1.0]))


def test_spearman_on_ranks_with_ties():
    from rewards.stats import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): Pearson 0.948683
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.948683, abs=1e-6)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1], [2]))


def test_clustered_difference_is_welch_with_one_value_per_cluster_and_hand_worked_with_clusters():
    rng = np.random.default_rng(3)
    t, c = rng.normal(1.0, 1.0, 40), rng.normal(0.5, 2.0, 25)
    assert tuple(clustered_difference_interval(t, np.arange(40), c, np.arange(25))) == pytest.approx(
        tuple(welch_interval(t, c)))
    # treatment [1, 1, 3, 3] in users (0, 0, 1, 1): mean 2, per-user sums of deviations -2 and +2, so
    # se_t^2 = G / (G - 1) * (4 + 4) / n^2 = 2 * 8 / 16 = 1; control [0, 0, 2, 2] likewise: mean 1, se_c^2 = 1.
    # se = sqrt(2), Welch-Satterthwaite df = (1 + 1)^2 / (1 / 1 + 1 / 1) = 2, t_{0.975, 2} = 4.302653.
    effect, lo, hi, df, _ = clustered_difference_interval(np.array([1.0, 1, 3, 3]), np.array([0, 0, 1, 1]),
                                                          np.array([0.0, 0, 2, 2]), np.array([5, 5, 6, 6]))
    assert effect == pytest.approx(1.0) and df == pytest.approx(2.0)
    assert (lo, hi) == pytest.approx((1 - 4.302653 * math.sqrt(2), 1 + 4.302653 * math.sqrt(2)), abs=1e-5)
    # per request (Welch) the same data look twice as certain: se sqrt(2/3) on df 6
    assert welch_interval(np.array([1.0, 1, 3, 3]), np.array([0.0, 0, 2, 2])).high < hi - 3
    one = clustered_difference_interval(np.array([1.0, 2.0]), np.array([7, 7]), c, np.arange(25))  # one user
    assert (one.low, one.high, one.p) == (-math.inf, math.inf, 1.0)
    with pytest.raises(ValueError, match=r"`clusters` must have one entry per value \(got 3 for 2 values\)"):
        clustered_difference_interval(np.array([1.0, 2.0]), np.array([1, 2, 3]), c, np.arange(25))


def test_wilson_interval_hand_worked():
    # k = 2 of n = 20, z = 1.959964: p 0.1, z^2 = 3.841459; centre (0.1 + 3.841459 / 40) / (1 + 3.841459 / 20) =
    # 0.196036 / 1.192073 = 0.164450; half 1.959964 * sqrt(0.0045 + 3.841459 / 1600) / 1.192073 = 0.136584
    assert wilson(2, 20) == pytest.approx((0.027866, 0.301034), abs=1e-5)
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0
