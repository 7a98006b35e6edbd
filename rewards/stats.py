"""Intervals for judging effects: Student's t quantiles, the t-interval of a mean and Welch's interval of a difference.

One sign convention everywhere: an effect is ``mean(treatment) - mean(control)`` (an A/B test's candidate minus
its incumbent, a claim's group ``a`` minus group ``b``). :class:`~agents.decision.functional.ExperimentDesigner`
decides A/B tests with :func:`welch_interval`; :mod:`experiments.report` judges claims with it (unpaired seeds)
and with :func:`mean_test` of per-seed differences (paired seeds); :mod:`experiments.plot` draws :func:`mean_ci` bands.
For planning and reading them: :func:`power_at`, :func:`mde` and :func:`n_for_mde` (t-test power, the shifted
central t approximation), :func:`holm` and :func:`benjamini_hochberg` (multiplicity) and :func:`bootstrap_ci`
(a percentile check for few seeds). Pure Python and numpy (no scipy): the t distribution through the regularised
incomplete beta function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["Adjusted", "MeanTest", "TrendTest", "WelchInterval", "benjamini_hochberg", "bootstrap_ci",
           "clustered_difference_interval", "clustered_mean_interval", "clustered_se", "holm", "mde", "mean_ci", "mean_test",
           "n_for_mde", "power_at", "psi", "spearman", "t_cdf", "t_quantile", "t_two_sided_p", "trend_test",
           "welch_interval", "wilson"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """``P(|T| >= |t|)`` for Student's t with ``df`` (> 0, possibly fractional or inf) degrees of freedom."""
    if not df > 0:
        raise ValueError(f"t_two_sided_p needs df > 0 (got df={df})")
    if math.isinf(df):
        return math.erfc(abs(t) / math.sqrt(2.0))
    return _betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` (> 0, possibly fractional or inf) degrees of freedom."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0 (got p={p}, df={df})")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 2.0 * (1.0 - p)  # P(|T| > t)
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, df) > tail:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_two_sided_p(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the ``level`` t-interval of the mean of the finite values (nan bounds for fewer than 2)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if x.size < 2:
        return m, math.nan, math.nan
    half = t_quantile(0.5 + level / 2, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m, m - half, m + half


class WelchInterval(NamedTuple):
    """``effect = mean(treatment) - mean(control)``, its two-sided interval, Welch's degrees of freedom, the p-value."""

    effect: float
    low: float
    high: float
    df: float
    p: float


def welch_interval(treatment: Sequence[float] | np.ndarray, control: Sequence[float] | np.ndarray,
                   level: float = 0.95) -> WelchInterval:
    """Welch's two-sided ``level`` t-interval of ``mean(treatment) - mean(control)`` (unequal variances).

    ``se = sqrt(s_t^2 / n_t + s_c^2 / n_c)`` (sample variances, ddof 1); the degrees of freedom are
    Welch-Satterthwaite's ``se^4 / ((s_t^2 / n_t)^2 / (n_t - 1) + (s_c^2 / n_c)^2 / (n_c - 1))``; the interval is
    ``effect +- t_{(1 + level) / 2, df} * se`` and ``p`` the two-sided p-value of ``effect / se``. With fewer than 2
    values in a group the interval is ``(-inf, inf)`` and ``p = 1`` (the effect is nan for an empty group); with
    ``se = 0`` the interval is the point and ``p`` is 0 (or 1 when the effect is 0).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1) (got {level})")
    t, c = np.asarray(treatment, dtype=np.float64), np.asarray(control, dtype=np.float64)
    effect = float(t.mean() - c.mean()) if t.size and c.size else math.nan
    if t.size < 2 or c.size < 2:
        return WelchInterval(effect, -math.inf, math.inf, math.nan, 1.0)
    return _two_sample(effect, float(t.var(ddof=1)) / t.size, t.size - 1, float(c.var(ddof=1)) / c.size, c.size - 1,
                       level)


def _two_sample(effect: float, vt: float, df_t: float, vc: float, df_c: float, level: float) -> WelchInterval:
    """The interval of a difference of two independent means with variances ``vt``, ``vc`` (of the means) on
    ``df_t``, ``df_c`` degrees of freedom: ``se = sqrt(vt + vc)``, Welch-Satterthwaite's degrees of freedom; with
    ``se = 0`` the point (``p`` 0, or 1 when the effect is 0)."""
    se = math.sqrt(vt + vc)
    if se == 0.0:
        return WelchInterval(effect, effect, effect, math.inf, 0.0 if effect != 0 else 1.0)
    df = (vt + vc) ** 2 / (vt**2 / df_t + vc**2 / df_c)
    half = t_quantile(0.5 + level / 2, df) * se
    return WelchInterval(effect, effect - half, effect + half, df, t_two_sided_p(effect / se, df))


# --------------------------------------------------------------------------- tests, power and multiplicity


class MeanTest(NamedTuple):
    """A one-sample t-test of the mean (e.g. of per-seed paired differences): the mean, its two-sided interval, the
    degrees of freedom, the two-sided p-value against 0, the sample's standard deviation (ddof 1) and its size."""

    effect: float
    low: float
    high: float
    df: float
    p: float
    sd: float
    n: int


def mean_test(values: Sequence[float] | np.ndarray, level: float = 0.95) -> MeanTest:
    """The ``level`` t-interval of the mean of the finite values and the two-sided p-value of ``mean / se`` on
    ``n - 1`` degrees of freedom. Fewer than 2 values: infinite interval, ``p = 1``; no spread: the interval is the
    point and ``p`` is 0 (1 when the mean is 0). The interval is :func:`mean_ci`'s."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    m = float(x.mean()) if x.size else math.nan
    if x.size < 2:
        return MeanTest(m, -math.inf, math.inf, math.nan, 1.0, math.nan, int(x.size))
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        return MeanTest(m, m, m, x.size - 1.0, 0.0 if m != 0 else 1.0, 0.0, int(x.size))
    _, low, high = mean_ci(x, level)
    return MeanTest(m, low, high, x.size - 1.0, t_two_sided_p(m / (sd / math.sqrt(x.size)), x.size - 1), sd, int(x.size))


class TrendTest(NamedTuple):
    """The least-squares slope of a series against its index (per step), its two-sided p-value against 0 (t on
    ``n - 2`` degrees of freedom) and the number of finite values."""

    slope: float
    p: float
    n: int


def trend_test(values: Sequence[float] | np.ndarray) -> TrendTest:
    """Is there a linear trend in ``values`` (in order)? Ordinary least squares of value on index; non-finite values
    are dropped with their index. Fewer than 3 values: slope nan, ``p = 1``; a perfect fit: ``p`` 0 (1 when flat)."""
    y = np.asarray(values, dtype=np.float64)
    x = np.arange(y.size, dtype=np.float64)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(y.size)
    if n < 3:
        return TrendTest(math.nan, 1.0, n)
    xc = x - x.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (y - y.mean())) / sxx
    resid = y - y.mean() - slope * xc
    s2 = float(resid @ resid) / (n - 2)
    if s2 <= 1e-30 * max(float(y @ y), 1e-300):
        return TrendTest(slope, 0.0 if slope != 0 else 1.0, n)
    return TrendTest(slope, t_two_sided_p(slope / math.sqrt(s2 / sxx), n - 2), n)


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom (inf: the standard normal)."""
    tail = 0.5 * t_two_sided_p(t, df)
    return 1.0 - tail if t >= 0 else tail


def _design(sd: float, n: int, paired: bool, n_b: int | None) -> tuple[float, float]:
    """Standard error and degrees of freedom of a mean difference: paired (one sample of ``n`` differences of
    standard deviation ``sd``: ``sd / sqrt(n)``, ``n - 1``) or two independent groups of ``n`` and ``n_b`` (default
    ``n``) values of standard deviation ``sd`` each (``sd * sqrt(1/n + 1/n_b)``, ``n + n_b - 2``: Welch's degrees of
    freedom when the variances and sizes are equal)."""
    if not (sd >= 0 and math.isfinite(sd)):
        raise ValueError(f"`sd` must be a finite number >= 0 (got {sd})")
    n_b = n if n_b is None else n_b
    if n < 2 or (not paired and n_b < 2):
        raise ValueError(f"power needs at least 2 values per group (got n={n}{'' if paired else f', n_b={n_b}'})")
    if paired:
        return sd / math.sqrt(n), n - 1.0
    return sd * math.sqrt(1.0 / n + 1.0 / n_b), n + n_b - 2.0


def power_at(effect: float, sd: float, n: int, alpha: float = 0.05, paired: bool = True, n_b: int | None = None) -> float:
    """Power of the two-sided level-``alpha`` t-test to detect a true difference ``effect`` (paired: ``n``
    differences of standard deviation ``sd``; unpaired: groups of ``n`` and ``n_b``, each of standard deviation
    ``sd``, see :func:`mde`).

    The shifted central t approximation of the noncentral t (Student's t quantiles, normal-style shift):
    with ``d = |effect| / se`` and ``c = t_{1 - alpha/2, df}``, ``power = F_df(d - c) + F_df(-d - c)``; at
    ``effect = 0`` it is ``alpha``. Slightly optimistic for very small ``n`` (the exact noncentral t is wider).
    """
    se, df = _design(sd, n, paired, n_b)
    if se == 0.0:
        return 1.0 if effect != 0 else alpha
    d, c = abs(effect) / se, t_quantile(1.0 - alpha / 2, df)
    return t_cdf(d - c, df) + t_cdf(-d - c, df)


def mde(sd: float, n: int, alpha: float = 0.05, power: float = 0.8, paired: bool = True, n_b: int | None = None) -> float:
    """The minimum detectable effect: the true difference the two-sided level-``alpha`` t-test detects with
    probability ``power``, ``(t_{1 - alpha/2, df} + t_{power, df}) * se`` (the same approximation as
    :func:`power_at`, whose far tail it neglects, so ``power_at(mde(...)) ~= power``).

    ``paired=True``: one sample of ``n`` differences (per-seed ``a - b``) of standard deviation ``sd``,
    ``se = sd / sqrt(n)``, ``df = n - 1``; ``paired=False``: two independent groups (Welch) of ``n`` and ``n_b``
    (default ``n``) values with standard deviation ``sd`` each, ``se = sd * sqrt(1/n + 1/n_b)``,
    ``df = n + n_b - 2``. For large ``n`` the two-sample MDE tends to ``(z_{0.975} + z_{0.8}) * sd * sqrt(2 / n)``
    = ``2.80 * sd * sqrt(2 / n)``.
    """
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"`alpha` and `power` must be in (0, 1) (got alpha={alpha}, power={power})")
    se, df = _design(sd, n, paired, n_b)
    return (t_quantile(1.0 - alpha / 2, df) + t_quantile(power, df)) * se


def n_for_mde(sd: float, target: float, alpha: float = 0.05, power: float = 0.8, paired: bool = True,
              max_n: int = 10**7) -> int:
    """The smallest ``n`` (paired: differences, e.g. seeds; unpaired: per group) whose :func:`mde` is at most
    ``target``; at least 2, and ``max_n + 1`` when even ``max_n`` is not enough."""
    if not target > 0:
        raise ValueError(f"`target` (the minimum detectable effect wanted) must be > 0 (got {target})")

    def ok(n: int) -> bool:
        return mde(sd, n, alpha, power, paired) <= target

    if ok(2):
        return 2
    lo, hi = 2, 4
    while not ok(hi):  # mde falls with n: double, then bisect
        if hi > max_n:
            return max_n + 1
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi if hi <= max_n else max_n + 1


class Adjusted(NamedTuple):
    """Multiplicity-adjusted p-values (nan where the input was nan) and whether each hypothesis is rejected."""

    p: np.ndarray
    reject: np.ndarray


def _adjust(p: Sequence[float] | np.ndarray, alpha: float, method: str,
            groups: Sequence[int] | np.ndarray | None = None) -> Adjusted:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must be in (0, 1) (got {alpha})")
    p = np.asarray(p, dtype=np.float64).ravel()
    if groups is not None and np.asarray(groups).shape != p.shape:
        raise ValueError(f"`groups` must give one group per p-value (got {np.asarray(groups).shape[0]} for {p.size})")
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))  # nan (untestable) take no part: m counts the tested hypotheses
    m = ok.size
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        ranked = p[order]
        rank = np.arange(1, m + 1)
        if method == "holm":  # step-down: max over j <= i of t_j p_(j), t_j = m - j + 1 (or Shaffer's count)
            if groups is None:
                t = m - rank + 1
            else:  # the groups still represented among p_(j), ..., p_(m): at most one true hypothesis each
                g = np.asarray(groups).ravel()[order]
                first_seen_from_end = np.zeros(m, dtype=np.int64)
                seen: set = set()
                for j in range(m - 1, -1, -1):
                    seen.add(g[j])
                    first_seen_from_end[j] = len(seen)
                t = first_seen_from_end
            adj = np.maximum.accumulate(np.minimum(1.0, t * ranked))
        else:  # Benjamini-Hochberg step-up: min over j >= i of m p_(j) / j
            adj = np.minimum.accumulate(np.minimum(1.0, m * ranked / rank)[::-1])[::-1]
        out[order] = adj
    return Adjusted(out, np.where(np.isfinite(out), out <= alpha, False))


def holm(p: Sequence[float] | np.ndarray, alpha: float = 0.05, groups: Sequence[int] | np.ndarray | None = None
         ) -> Adjusted:
    """Holm's step-down adjustment (controls the family-wise error rate): sorted ascending, ``p_(i)`` becomes
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``; reject where the adjusted p is ``<= alpha``. nan p-values (claims
    that could not be tested) stay nan, are never rejected and do not count in ``m``.

    ``groups`` (one label per p-value) declares hypotheses of which at most one per group can be true (e.g. a
    claim's "no gain" and "a gain of at least min_effect", which exclude each other): the multiplier ``m - j + 1``
    becomes Shaffer's count of the hypotheses that can still be true, the number of groups with a hypothesis among
    ``p_(j), ..., p_(m)`` (Shaffer 1986; still the family-wise error rate at ``alpha``, under any dependence). With
    one hypothesis per group it is Holm's."""
    return _adjust(p, alpha, "holm", groups)


def benjamini_hochberg(p: Sequence[float] | np.ndarray, alpha: float = 0.05) -> Adjusted:
    """Benjamini-Hochberg's step-up adjustment (controls the false discovery rate): sorted ascending, ``p_(i)``
    becomes ``min_{j >= i} min(1, m p_(j) / j)``; reject where the adjusted p is ``<= alpha``. nan as in :func:`holm`."""
    return _adjust(p, alpha, "bh")


def bootstrap_ci(values: Sequence[float] | np.ndarray, control: Sequence[float] | np.ndarray | None = None,
                 level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """The mean (of ``values``, or ``mean(values) - mean(control)``) and its percentile bootstrap ``level``
    interval: ``resamples`` resamples with replacement (each group on its own when ``control`` is given) from a
    ``numpy.random.Generator`` seeded with ``seed`` (reproducible). Non-finite values are dropped; nan bounds for
    fewer than 2 values in a group. With very few values (n < 5) the percentile interval is too narrow (it cannot
    be wider than the sample's range): read it next to the t-interval, not instead of it."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1) (got {level})")
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    c = None if control is None else np.asarray(control, dtype=np.float64)
    c = None if c is None else c[np.isfinite(c)]
    if x.size == 0 or (c is not None and c.size == 0):
        return math.nan, math.nan, math.nan
    point = float(x.mean() - (c.mean() if c is not None else 0.0))
    if x.size < 2 or (c is not None and c.size < 2):
        return point, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    if c is not None:
        means = means - c[rng.integers(0, c.size, size=(resamples, c.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return point, float(low), float(high)


def clustered_se(values: np.ndarray, clusters: np.ndarray | None = None) -> tuple[float, float, int]:
    """The mean of ``values``, its cluster-robust standard error and the number of clusters (None: every value its
    own cluster):
    ``se^2 = G / (G - 1) * sum_g (sum_{i in g} (v_i - mean))^2 / n^2`` (``G`` clusters, ``n`` values; ``se`` nan
    with fewer than 2 clusters)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    c = np.arange(len(v)) if clusters is None else np.asarray(clusters).ravel()
    if len(c) != len(v):
        raise ValueError(f"`clusters` must have one entry per value (got {len(c)} for {len(v)} values)")
    mean = float(v.mean()) if v.size else math.nan
    _, group = np.unique(c, return_inverse=True)
    g = int(group.max()) + 1 if v.size else 0
    if g < 2:
        return mean, math.nan, g
    sums = np.bincount(group, weights=v - mean, minlength=g)
    return mean, math.sqrt(g / (g - 1) * float((sums**2).sum())) / v.size, g


def clustered_mean_interval(values: np.ndarray, clusters: np.ndarray | None = None, level: float = 0.95) -> WelchInterval:
    """The two-sided ``level`` t-interval of the mean of ``values`` (e.g. per-request credit differences of an
    interleaved test) with requests clustered by ``clusters`` (e.g. their users; None: every value its own cluster).

    ``se^2 = G / (G - 1) * sum_g (sum_{i in g} (v_i - mean))^2 / n^2`` (the cluster-robust sandwich; ``G``
    clusters, ``n`` values), ``G - 1`` degrees of freedom, ``p`` the two-sided p-value of ``mean / se``. Fewer than
    2 clusters: the interval is ``(-inf, inf)`` and ``p = 1`` (the mean is nan without values); ``se = 0``: the
    interval is the point and ``p`` is 0 (or 1 when the mean is 0). Returned as a :class:`WelchInterval`.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1) (got {level})")
    mean, se, g = clustered_se(values, clusters)
    if g < 2:
        return WelchInterval(mean, -math.inf, math.inf, math.nan, 1.0)
    if se == 0.0:
        return WelchInterval(mean, mean, mean, math.inf, 0.0 if mean != 0 else 1.0)
    half = t_quantile(0.5 + level / 2, g - 1) * se
    return WelchInterval(mean, mean - half, mean + half, float(g - 1), t_two_sided_p(mean / se, g - 1))


def clustered_difference_interval(treatment: np.ndarray, treatment_clusters: np.ndarray, control: np.ndarray,
                                  control_clusters: np.ndarray, level: float = 0.95) -> WelchInterval:
    """The two-sided ``level`` t-interval of ``mean(treatment) - mean(control)`` when each group's values come in
    clusters (an A/B test that splits *users*: each user's requests are one cluster, and their outcomes are
    correlated, so a per-request interval (:func:`welch_interval`) is too narrow and accepts equal arms far more
    often than its level says; ``bench/ab_gate.py`` measures by how much).

    Each group's mean gets its cluster-robust standard error (as in :func:`clustered_mean_interval`: the delta
    method for a ratio of per-cluster sums); the groups hold disjoint clusters, so ``se^2 = se_t^2 + se_c^2``, with
    Welch-Satterthwaite degrees of freedom from each group's ``G - 1``. With fewer than 2 clusters in a group the
    interval is ``(-inf, inf)`` and ``p = 1``; with ``se = 0`` it is the point (``p`` 0, or 1 when the effect is 0).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"`level` must be in (0, 1) (got {level})")
    mt, st, gt = clustered_se(treatment, treatment_clusters)
    mc, sc, gc = clustered_se(control, control_clusters)
    effect = mt - mc  # nan when a group is empty (its mean is)
    if gt < 2 or gc < 2:
        return WelchInterval(effect, -math.inf, math.inf, math.nan, 1.0)
    return _two_sample(effect, st**2, gt - 1, sc**2, gc - 1, level)


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` (default z: 95%), e.g. a test's false-alarm rate
    measured over ``n`` null tests."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, bins: int = 10,
        floor: float = 1e-4) -> float:
    """Population stability index of ``actual`` against ``expected``: ``sum_b (a_b - e_b) ln(a_b / e_b)`` over
    ``bins`` quantile bins of ``expected`` (shares floored at ``floor`` so an empty bin is finite). 0 for the same
    distribution; the usual reading: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 large shift. A constant
    ``expected`` gives one bin (its value) plus the rest. nan when either side is empty."""
    e = np.asarray(expected, dtype=np.float64).ravel()
    a = np.asarray(actual, dtype=np.float64).ravel()
    e, a = e[np.isfinite(e)], a[np.isfinite(a)]
    if e.size == 0 or a.size == 0:
        return math.nan
    edges = np.unique(np.quantile(e, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    eb = np.bincount(np.searchsorted(edges, e, side="right"), minlength=len(edges) + 1) / e.size
    ab = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1) / a.size
    eb, ab = np.maximum(eb, floor), np.maximum(ab, floor)
    return float(np.sum((ab - eb) * np.log(ab / eb)))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(sorted_x[1:] != sorted_x[:-1]) + 1]
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends + 1) / 2.0  # positions starts+1 .. ends, averaged
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation (Pearson's on average ranks); nan with fewer than 2 pairs or a constant side."""
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.size != b.size:
        raise ValueError(f"`x` and `y` must have equal lengths (got {a.size} and {b.size})")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 2:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])
