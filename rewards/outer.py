"""Outer (platform) objectives from the interaction log: engagement, long-term value, ecosystem health, risk and cost."""

from __future__ import annotations

import math

import numpy as np

from envs.log import InteractionLog
from rewards.inner import TAIL_TIER

__all__ = ["EXPECTED_SUFFIX", "OUTCOMES", "OUTER_KEYS", "exposure_counts", "gini", "outcome_key", "outer_metrics"]

OUTER_KEYS: tuple[str, ...] = (
    "outer/engagement/clicks_per_request",
    "outer/engagement/dwell_min_per_request",
    "outer/long_term/return_rate",
    "outer/long_term/churn_rate",
    "outer/ecosystem/item_gini",
    "outer/ecosystem/creator_gini",
    "outer/ecosystem/tail_share",
    "outer/ecosystem/creator_coverage",
    "outer/risk/violations_per_request",
    "outer/cost/candidates_per_request",
    "outer/cost/serving_per_request",
    # expected versions (the choice model's probabilities instead of the sampled outcomes, ``envs.world.Response``) of
    # the metrics that have sampling noise; the others are functions of what was shown (exposure, violations, cost)
    "outer/engagement/clicks_per_request/exp",
    "outer/engagement/dwell_min_per_request/exp",
    "outer/long_term/return_rate/exp",
    "outer/long_term/churn_rate/exp",
)
EXPECTED_SUFFIX = "/exp"
OUTCOMES = ("expected", "realised")


def outcome_key(key: str, outcome: str) -> str:
    """The metric to judge by: ``key`` itself (realised), or its expected version ``key + "/exp"`` where one exists
    (``outcome="expected"``; a metric without sampling noise has only one version)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"`outcome` must be one of {list(OUTCOMES)} (got {outcome!r})")
    if outcome == "expected" and not key.endswith(EXPECTED_SUFFIX) and key + EXPECTED_SUFFIX in _KEYS:
        return key + EXPECTED_SUFFIX
    return key


_KEYS = frozenset(OUTER_KEYS)


def gini(values: np.ndarray) -> float:
    """Gini coefficient of non-negative values: ``sum_{i,j} |x_i - x_j| / (2 n^2 mean)``, in [0, (n - 1) / n].

    Computed on the ascending sort as ``sum_i (2i - n - 1) x_(i) / (n sum x)`` (i = 1..n), exactly in integers for
    integer counts. 0 for equal values; nan for an empty or all-zero vector (no exposure to be unequal about).
    """
    x = np.sort(np.asarray(values).ravel())
    n = x.size
    if n == 0:
        return math.nan
    if x[0] < 0:
        raise ValueError(f"`values` must be non-negative (got {x[0]})")
    coef = 2 * np.arange(1, n + 1, dtype=np.int64) - n - 1
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        x = x.astype(np.int64)
        num, total = int(coef @ x), int(x.sum())
    else:
        x = x.astype(np.float64)
        num, total = float(coef @ x), float(x.sum())
    if total == 0:
        return math.nan
    return max(num / (n * total), 0.0)  # the clip only removes float rounding below 0


def exposure_counts(ids: np.ndarray, size: int, key: str = "id") -> np.ndarray:
    """Impressions per id over ``size`` ids (zeros included); ids must lie in [0, size)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= size):
        raise ValueError(f"`{key}` ids must lie in [0, {size}) (got ids from {ids.min()} to {ids.max()})")
    return np.bincount(ids, minlength=size)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def outer_metrics(log: InteractionLog) -> dict[str, float]:
    """The platform's objectives over all traffic of the log, under the keys :data:`OUTER_KEYS`.

    Per-request rates divide by the number of requests; return and churn rates are over the requests that ended a
    session; Gini and coverage count every item (``log.num_items``) and creator (``log.num_creators``), unseen ones
    included (nan where the log's size is 0: unknown); tail share is the share of impressions of tier-2 items.
    Two costs: candidates the rankers scored, and the serving cost of the shown items (the impressions' ``cost``,
    the catalog's per-item cost) summed per request. Undefined rates (nothing to divide by) are nan. Engagement and
    long-term metrics also come in their expected version (``.../exp``: expected clicks ``1 - P(no click)``, expected
    dwell, return and churn probabilities of the ended sessions), free of the choice's sampling noise.
    """
    req, imp = log.requests, log.impressions
    n_req, n_imp = log.num_requests, log.num_impressions
    ends = req["session_end"]
    n_end = int(np.count_nonzero(ends))
    items = exposure_counts(imp["item"], log.num_items, "item") if log.num_items else None
    creators = exposure_counts(imp["creator"], log.num_creators, "creator") if log.num_creators else None
    values = (
        _ratio(req["clicks"].sum(dtype=np.int64), n_req),
        _ratio(req["dwell"].sum(dtype=np.float64) / 60.0, n_req),
        _ratio(np.count_nonzero(req["returned"] & ends), n_end),
        _ratio(np.count_nonzero(req["churned"] & ends), n_end),
        gini(items) if items is not None else math.nan,
        gini(creators) if creators is not None else math.nan,
        _ratio(np.count_nonzero(imp["tier"] == TAIL_TIER), n_imp),
        _ratio(np.count_nonzero(creators), log.num_creators) if creators is not None else math.nan,
        _ratio(req["violations"].sum(dtype=np.int64), n_req),
        _ratio(req["candidates_scored"].sum(dtype=np.int64), n_req),
        _ratio(imp["cost"].sum(dtype=np.float64), n_req),
        _ratio(req["clicks_exp"].sum(dtype=np.float64), n_req),
        _ratio(req["dwell_exp"].sum(dtype=np.float64) / 60.0, n_req),
        _ratio(req["return_exp"][ends].sum(dtype=np.float64), n_end),
        _ratio(req["churn_exp"][ends].sum(dtype=np.float64), n_end),
    )
    return dict(zip(OUTER_KEYS, values))
