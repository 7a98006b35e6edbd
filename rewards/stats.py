"""Intervals for judging effects: Student's t quantiles, the t-interval of a mean and Welch's interval of a difference.

One sign convention everywhere: an effect is ``mean(treatment) - mean(control)`` (an A/B test's candidate minus
its incumbent, a claim's group ``a`` minus group ``b``). :class:`~agents.decision.functional.ExperimentDesigner`
decides A/B tests with :func:`welch_interval`; :mod:`experiments.report` judges claims with it (unpaired seeds)
and with :func:`mean_ci` of per-seed differences (paired seeds); :mod:`experiments.plot` draws :func:`mean_ci` bands.
Pure Python and numpy (no scipy): the t distribution through the regularised incomplete beta function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["WelchInterval", "mean_ci", "t_quantile", "t_two_sided_p", "welch_interval"]


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
    vt, vc = float(t.var(ddof=1)) / t.size, float(c.var(ddof=1)) / c.size
    se = math.sqrt(vt + vc)
    if se == 0.0:
        return WelchInterval(effect, effect, effect, math.inf, 0.0 if effect != 0 else 1.0)
    df = (vt + vc) ** 2 / (vt**2 / (t.size - 1) + vc**2 / (c.size - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    return WelchInterval(effect, effect - half, effect + half, df, t_two_sided_p(effect / se, df))
