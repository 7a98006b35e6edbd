"""Inner (local) metrics per agent role, computed from the interaction log: what each agent is judged on by itself."""

from __future__ import annotations

import math

import numpy as np

from envs.log import InteractionLog
from envs.validation import ConfigError, check_choice, check_int

__all__ = [
    "INNER_METRICS",
    "ROLES",
    "TAIL_TIER",
    "auc",
    "calibration",
    "click_share",
    "ece",
    "experiment_metrics",
    "hit_rate",
    "inner_metrics",
    "intra_list_diversity",
    "log_loss",
    "ndcg",
    "ranking_metrics",
    "recall_at_k",
    "recall_metrics",
    "rerank_metrics",
    "route_coverage",
    "router_metrics",
    "segment_clicks_per_request",
]

# agent roles (agents.protocol.ROLES plus "system", the whole serving system as one agent)
ROLES: tuple[str, ...] = ("recall", "fusion", "ranking", "rerank", "router", "experiment", "system")
TAIL_TIER = 2  # the ``tier`` value of long-tail items (0 head, 1 torso, 2 tail)
_SCORE_METRICS = ("auc", "ndcg", "log_loss", "calibration", "ece")
# the fixed metric names per role; router and experiment add data-dependent ``segment/<segment>/clicks_per_request``,
# ``pipeline/<p>/clicks_per_request`` and ``pipeline/<p>/request_share`` keys (one name per quantity, as in the tables)
INNER_METRICS: dict[str, tuple[str, ...]] = {
    "recall": ("hit_rate", "recall_at_k", "coverage", "click_share"),
    "fusion": _SCORE_METRICS,  # fusion calibrates the click probability: the score metrics of the one it serves
    "ranking": _SCORE_METRICS,
    "rerank": ("intra_list_diversity", "freshness", "risk_rate", "tail_share"),
    "router": ("mean_segment_clicks_per_request",),
    "experiment": ("regret", "best_arm_share"),
    "system": (),  # the system's own objective is the outer reward
}
_EPS = 1e-7


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def _distinct(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a sort and a mask: faster than ``np.unique``'s hash path on large int arrays)."""
    x = np.sort(x)
    return x[np.append(True, x[1:] != x[:-1])] if x.size else x


def _paired(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"`scores` and `labels` must have equal lengths (got {s.size} and {y.size})")
    if np.isnan(s).any():
        raise ValueError(f"`scores` must not contain nan (got {int(np.isnan(s).sum())} nan of {s.size})")
    return s, y


# ---------------------------------------------------------------- ranking: array metrics


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` ascending, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new = np.empty(x.size, dtype=bool)
    new[:1] = True
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], x.size)  # a group covers sorted positions starts..ends-1, ranks starts+1..ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[np.cumsum(new) - 1]
    return ranks


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC: the share of (positive, negative) pairs a score orders correctly, ties counting 1/2; nan with one class.

    Computed from ranks (Mann-Whitney U) in O(n log n).
    """
    s, y = _paired(scores, labels)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    u = _average_ranks(s)[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def log_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of ``scores`` read as click probabilities (clipped to [1e-7, 1 - 1e-7])."""
    s, y = _paired(scores, labels)
    if s.size == 0:
        return math.nan
    p = np.clip(s, _EPS, 1.0 - _EPS)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def calibration(scores: np.ndarray, labels: np.ndarray) -> float:
    """``mean(score) / mean(click)``: 1 when calibrated on average, > 1 when over-predicting; nan without clicks."""
    s, y = _paired(scores, labels)
    return _ratio(s.sum(), y.sum())


def ece(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width score bins on [0, 1]: ``sum_b n_b/n |mean p_b - mean y_b|``."""
    check_int("bins", bins, 1)
    s, y = _paired(scores, labels)
    if s.size == 0:
        return math.nan
    p = np.clip(s, 0.0, 1.0)
    b = np.minimum((p * bins).astype(np.int64), bins - 1)  # a score of exactly 1 falls in the last bin
    gap = np.bincount(b, weights=p, minlength=bins) - np.bincount(b, weights=y, minlength=bins)
    return float(np.abs(gap).sum() / s.size)  # n_b/n * |sum_b p/n_b - sum_b y/n_b| = |sum_b p - sum_b y| / n


def ndcg(request: np.ndarray, position: np.ndarray, click: np.ndarray, k: int | None = None) -> float:
    """Mean over requests with a click of the NDCG of the shown order (0-based ``position``, click = relevance 1).

    ``DCG = sum_clicked 1 / log2(position + 2)``, ``IDCG = sum_{j=1..clicks} 1 / log2(j + 1)``; with ``k``
    (NDCG@k) only positions ``< k`` count and the ideal holds ``min(clicks, k)`` clicks on top.
    """
    req = np.asarray(request).ravel()
    pos = np.asarray(position, dtype=np.int64).ravel()
    y = np.asarray(click).ravel().astype(bool)
    if not req.size == pos.size == y.size:
        raise ValueError(f"`request`, `position` and `click` must have equal lengths (got {req.size}, {pos.size}, {y.size})")
    if (pos < 0).any():
        raise ValueError(f"`position` must be >= 0 (got {int(pos.min())})")
    _, row = np.unique(req, return_inverse=True)
    clicks = np.bincount(row, weights=y).astype(np.int64)
    if not (clicks > 0).any():
        return math.nan
    gain = y / np.log2(pos + 2.0)
    if k is not None:
        check_int("k", k, 1)
        gain = np.where(pos < k, gain, 0.0)
    dcg = np.bincount(row, weights=gain)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, clicks.max() + 2)))])  # ideal[n]: n clicks on top
    has = clicks > 0
    top = clicks[has] if k is None else np.minimum(clicks[has], k)
    return float(np.mean(dcg[has] / ideal[top]))


def ranking_metrics(log: InteractionLog, column: str = "score") -> dict[str, float]:
    """AUC, NDCG, log-loss, calibration and ECE of an impression column against ``click``: ``score`` (the ranker's
    predicted click probability, default) or ``p_click`` (the probability served after score fusion's calibration)."""
    imp = log.impressions
    check_choice("column", column, ("score", "p_click"))
    s, y = imp[column], imp["click"]
    return {
        "auc": auc(s, y),
        "ndcg": ndcg(imp["request"], imp["position"], y),
        "log_loss": log_loss(s, y),
        "calibration": calibration(s, y),
        "ece": ece(s, y),
    }


# ---------------------------------------------------------------- recall


def _route_id(log: InteractionLog, route: int | str) -> int:
    if isinstance(route, str):
        return log.route_names.index(check_choice("route", route, log.route_names))
    if isinstance(route, np.integer):
        route = int(route)
    high = len(log.route_names) - 1 if log.route_names else None
    return check_int("route", route, 0, high)


def _later_click_counts(log: InteractionLog, route_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Per request with candidates from the route: (# of its distinct route candidates that its user clicks at a
    strictly later step, # of distinct items that user clicks at a strictly later step).

    A request's user and step come from the ``requests`` table (joined on the request id)."""
    req, imp, cand = log.requests, log.impressions, log.candidates
    sel = cand["route"] == route_id
    c_req, c_item = cand["request"][sel], cand["item"][sel]
    if c_req.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # each candidate's request row (for the request's user and step)
    order = np.argsort(req["request"], kind="stable")
    ids = req["request"][order]
    at = np.minimum(np.searchsorted(ids, c_req), max(ids.size - 1, 0))
    if ids.size == 0 or (ids[at] != c_req).any():
        missing = np.setdiff1d(c_req, ids)[:5].tolist()
        raise ValueError(f"`candidates` reference requests absent from the `requests` table (e.g. {missing})")
    c_row = order[at]

    clicked = imp["click"]
    k_user, k_item, k_step = imp["user"][clicked], imp["item"][clicked], imp["step"][clicked]
    # dense user and item indices shared by clicks, requests and candidates: pair codes stay < n_rows ** 2
    _, u_inv = np.unique(np.concatenate([k_user, req["user"]]), return_inverse=True)
    k_u, r_u = u_inv[: k_user.size], u_inv[k_user.size :]
    items, i_inv = np.unique(np.concatenate([k_item, c_item]), return_inverse=True)
    n_items = items.size
    k_i, c_i = i_inv[: k_item.size], i_inv[k_item.size :]

    # the last click step of each clicked (user, item) pair, pairs sorted by code
    by = np.lexsort((k_step, k_u * n_items + k_i))
    k_code, k_step = (k_u * n_items + k_i)[by], k_step[by]
    last = np.append(k_code[1:] != k_code[:-1], True)[: k_code.size]
    pair, pair_last = k_code[last], k_step[last]

    # distinct (request row, item) candidates whose user clicks the item at a step later than the request's
    row, item = np.divmod(_distinct(c_row * n_items + c_i), n_items)
    code = r_u[row] * n_items + item
    j = np.minimum(np.searchsorted(pair, code), max(pair.size - 1, 0))
    later = (pair[j] == code) & (pair_last[j] > req["step"][row]) if pair.size else np.zeros(code.size, dtype=bool)
    rows = _distinct(row)
    hits = np.bincount(row[later], minlength=req["request"].size)[rows]

    # distinct items each request's user clicks later: that user's pairs with a last click step > the request's step
    steps, s_inv = np.unique(np.concatenate([pair_last, req["step"][rows]]), return_inverse=True)
    p_key = np.sort(pair // n_items * steps.size + s_inv[: pair.size])
    q_user = r_u[rows]
    n_later = np.searchsorted(p_key, (q_user + 1) * steps.size) - np.searchsorted(
        p_key, q_user * steps.size + s_inv[pair.size :], side="right"
    )
    return hits, n_later


def recall_metrics(log: InteractionLog, route: int | str) -> dict[str, float]:
    """Hit rate, recall@K of later-clicked items, catalog coverage and click share of one recall route.

    A request counts when the route returned candidates for it and its user clicks some item at a strictly later
    ``step`` of the log; K is the number of candidates the route returned.
    """
    r = _route_id(log, route)
    hits, n_later = _later_click_counts(log, r)
    ok = n_later > 0
    route_items = log.candidates["item"][log.candidates["route"] == r]
    clicked_routes = log.impressions["route"][log.impressions["click"]]
    return {
        "hit_rate": float(np.mean(hits[ok] > 0)) if ok.any() else math.nan,
        "recall_at_k": float(np.mean(hits[ok] / n_later[ok])) if ok.any() else math.nan,
        "coverage": _ratio(_distinct(route_items).size, log.num_items),
        "click_share": _ratio(np.count_nonzero(clicked_routes == r), clicked_routes.size),
    }


def hit_rate(log: InteractionLog, route: int | str) -> float:
    """Share of the route's requests whose candidates hold an item the user clicks later (see :func:`recall_metrics`)."""
    return recall_metrics(log, route)["hit_rate"]


def recall_at_k(log: InteractionLog, route: int | str) -> float:
    """Mean share of the items a user clicks later that the route returned (see :func:`recall_metrics`)."""
    return recall_metrics(log, route)["recall_at_k"]


def route_coverage(log: InteractionLog, route: int | str) -> float:
    """Distinct items the route returned over the catalog size ``log.num_items``."""
    return recall_metrics(log, route)["coverage"]


def click_share(log: InteractionLog, route: int | str) -> float:
    """Share of clicked impressions whose item the route found."""
    return recall_metrics(log, route)["click_share"]


# ---------------------------------------------------------------- re-rank


def intra_list_diversity(request: np.ndarray, item: np.ndarray, embedding: np.ndarray) -> float:
    """Mean over requests showing >= 2 items of ``1 - mean pairwise cosine similarity`` of the items' embeddings.

    Per request, ``sum_{i<j} cos_ij = (|sum_i u_i|^2 - sum_i |u_i|^2) / 2`` over unit vectors ``u`` (an all-zero
    embedding row has similarity 0 with everything).
    """
    emb = np.asarray(embedding, dtype=np.float64)
    req = np.asarray(request).ravel()
    it = np.asarray(item, dtype=np.int64).ravel()
    if emb.ndim != 2:
        raise ConfigError(f"`embedding` must be a 2-D (num_items, dim) array (got shape {emb.shape})")
    if req.size != it.size:
        raise ValueError(f"`request` and `item` must have equal lengths (got {req.size} and {it.size})")
    if it.size and (it.min() < 0 or it.max() >= emb.shape[0]):
        raise ConfigError(f"`embedding` must have a row per item id (got {emb.shape[0]} rows, item ids up to {it.max()})")
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = emb / np.where(norm > 0, norm, 1.0)
    _, row = np.unique(req, return_inverse=True)
    n = np.bincount(row).astype(np.float64)
    keep = n[row] >= 2
    if not keep.any():
        return math.nan
    row, it = row[keep], it[keep]
    order = np.argsort(row, kind="stable")
    row, vec = row[order], unit[it[order]]
    starts = np.flatnonzero(np.append(True, row[1:] != row[:-1]))
    total = np.add.reduceat(vec, starts, axis=0)
    self_sim = np.add.reduceat((vec * vec).sum(axis=1), starts)
    n = n[row[starts]]
    mean_cos = ((total * total).sum(axis=1) - self_sim) / (n * (n - 1))
    return float(np.mean(1.0 - mean_cos))


def rerank_metrics(log: InteractionLog, embedding: np.ndarray) -> dict[str, float]:
    """Intra-list diversity (needs the item ``embedding`` matrix), mean freshness, risk (violations) per impression
    and tail share of the shown slates."""
    imp = log.impressions
    n = log.num_impressions
    return {
        "intra_list_diversity": intra_list_diversity(imp["request"], imp["item"], embedding),
        "freshness": float(np.mean(imp["freshness"], dtype=np.float64)) if n else math.nan,
        "risk_rate": _ratio(np.count_nonzero(imp["violation"]), n),
        "tail_share": _ratio(np.count_nonzero(imp["tier"] == TAIL_TIER), n),
    }


# ---------------------------------------------------------------- router and experiment


def segment_clicks_per_request(log: InteractionLog) -> dict[str, float]:
    """Clicks per request of each segment, keyed ``segment/<name>/clicks_per_request`` (nan without requests)."""
    seg = log.requests["segment"].astype(np.int64)
    names = log.segment_names
    if seg.size and (seg.min() < 0 or seg.max() >= len(names)):
        raise ValueError(f"request segments must index `segment_names` (got segment {int(seg.max())}, names {names})")
    n = np.bincount(seg, minlength=len(names))
    clicks = np.bincount(seg, weights=log.requests["clicks"], minlength=len(names))
    return {f"segment/{name}/clicks_per_request": _ratio(clicks[k], n[k]) for k, name in enumerate(names)}


def router_metrics(log: InteractionLog) -> dict[str, float]:
    """Per-segment clicks per request and their unweighted mean over the segments that had requests."""
    ctr = segment_clicks_per_request(log)
    seen = [v for v in ctr.values() if not math.isnan(v)]
    return {**ctr, "mean_segment_clicks_per_request": float(np.mean(seen)) if seen else math.nan}


def experiment_metrics(log: InteractionLog) -> dict[str, float]:
    """Traffic allocation over pipelines (arms): clicks per request and traffic share per pipeline, the share of
    traffic on the best observed arm, and the regret ``max_p ctr_p - overall ctr`` of the allocation."""
    pipe = log.requests["pipeline"].astype(np.int64)
    clicks = log.requests["clicks"].astype(np.float64)
    if pipe.size == 0:
        return {"regret": math.nan, "best_arm_share": math.nan}
    arms, inv = np.unique(pipe, return_inverse=True)
    n = np.bincount(inv)
    ctr = np.bincount(inv, weights=clicks) / n
    out = {f"pipeline/{a}/clicks_per_request": float(c) for a, c in zip(arms, ctr)}
    out |= {f"pipeline/{a}/request_share": float(k / pipe.size) for a, k in zip(arms, n)}
    best = int(np.argmax(ctr))
    out["regret"] = float(ctr[best] - clicks.mean())
    out["best_arm_share"] = float(n[best] / pipe.size)
    return out


# ---------------------------------------------------------------- per role


def inner_metrics(
    role: str,
    log: InteractionLog,
    *,
    route: int | str | None = None,
    embedding: np.ndarray | None = None,
) -> dict[str, float]:
    """The inner metrics of ``role`` under ``inner/<role>/<metric>`` keys.

    ``route`` (an id or a name of ``log.route_names``) is required for ``recall`` and ``embedding`` (a
    ``(num_items, dim)`` matrix) for ``rerank``; neither applies to the other roles. ``system`` has none.
    """
    check_choice("role", role, ROLES)
    if route is not None and role != "recall":
        raise ConfigError(f"`route` only applies to role 'recall' (got route {route!r} for role {role!r})")
    if embedding is not None and role != "rerank":
        raise ConfigError(f"`embedding` only applies to role 'rerank' (got an embedding for role {role!r})")
    if role == "recall":
        if route is None:
            raise ConfigError(f"role 'recall' needs `route`: a route id or one of {log.route_names}")
        values = recall_metrics(log, route)
    elif role == "ranking":
        values = ranking_metrics(log)
    elif role == "fusion":  # judged on what it serves: the calibrated click probability
        values = ranking_metrics(log, "p_click")
    elif role == "rerank":
        if embedding is None:
            raise ConfigError("role 'rerank' needs `embedding`: the (num_items, dim) item embedding matrix")
        values = rerank_metrics(log, embedding)
    elif role == "router":
        values = router_metrics(log)
    elif role == "experiment":
        values = experiment_metrics(log)
    else:
        values = {}
    return {f"inner/{role}/{name}": value for name, value in values.items()}
