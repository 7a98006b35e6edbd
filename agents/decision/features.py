"""The rankers' feature registry: feature groups over (request, item) pairs, as-of statistics, and logged impressions.

A ranker sees each (request, candidate) pair as a row of numbers. Today's rankers use a fixed layout
(:func:`~agents.decision.ranking.pair_features`); here the layout is a choice: a :class:`FeatureSet` is an ordered
tuple of registered :data:`FEATURE_GROUPS`, and ``FeatureSet(BASE_GROUPS)`` reproduces ``pair_features`` column
for column. Groups:

- base: ``user`` (observable user features), ``item`` (embedding, quality, freshness, popularity, risk), ``cross``
  (profile x embedding, element-wise), ``route`` (one-hot recall route), ``position`` (log1p of the shown position;
  0 when serving);
- user x item: ``dot`` (profile . embedding and their cosine), ``segment`` (one-hot), ``topic_segment`` (a hashed
  topic x segment cross, one-hot over :data:`HASH_BUCKETS` buckets), ``segment_item`` (the item's scalar features
  once per segment: a segment-specific weight for quality, freshness, popularity and risk);
- short-term history: ``user_ctr`` (the user's smoothed click rate and log exposure count so far),
  ``topic_match`` (the user's past clicks on the item's topic, log1p, and how recently: ``exp(-steps since the last
  one / 50)``, 0 when never);
- item statistics learned from the log: ``item_ctr`` (smoothed click rate and log exposure count so far),
  ``item_ctr_recent`` (the smoothed click rate over the last window only: the drift-sensitive one).

Statistics come from :class:`FeatureState`, which is updated once per window from that window's impressions,
after the window's rows were computed: a row never sees its own outcome or a later one (as-of features). The
same code computes a row online (:meth:`Pairs.of_candidates`) and offline from a log
(:class:`LoggedImpressions`, :func:`replay_features`): no train/serve skew. A group that reads the outcome of
its own row (a leak) is what :func:`leakage_check` catches: its values change when the labels of the rows it
describes are shuffled.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from agents.decision.context import Candidates, CatalogView, RequestBatch
from envs.log import InteractionLog
from envs.validation import ConfigError, check_choice, check_int

__all__ = ["BASE_GROUPS", "FEATURE_GROUPS", "HASH_BUCKETS", "FeatureGroup", "FeatureSet", "FeatureState",
           "ImpressionRecorder", "LeakReport", "LoggedImpressions", "Pairs", "leakage_check", "replay_features"]

HASH_BUCKETS = 16
PRIOR_CTR, PRIOR_WEIGHT = 0.05, 20.0  # smoothing: (clicks + w p0) / (shows + w)
RECENCY_STEPS = 50.0


# ---------------------------------------------------------------------------------------------- pairs and logs


@dataclass
class Pairs:
    """``n`` (request, item) pairs, flat: what a feature may read. ``click``/``like``/``dwell`` are the outcomes,
    present offline (a log) and None online; a feature must not read them (:func:`leakage_check`)."""

    user: np.ndarray  # (n,) int64
    segment: np.ndarray  # (n,) int64
    user_features: np.ndarray  # (n, U) float32
    profile: np.ndarray  # (n, D) float32
    item: np.ndarray  # (n,) int64, -1: empty slot (its row is all zeros)
    item_features: np.ndarray  # (n, D + 4) float32 at serving time
    topic: np.ndarray  # (n,) int64
    route: np.ndarray  # (n,) int64
    position: np.ndarray | None  # (n,) shown position, None when scoring candidates
    step: np.ndarray  # (n,) world step at serving time
    embedding_dim: int
    num_routes: int
    num_segments: int
    click: np.ndarray | None = None
    like: np.ndarray | None = None
    dwell: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.item)

    @classmethod
    def of_candidates(cls, batch: RequestBatch, candidates: Candidates, catalog: CatalogView, num_routes: int,
                      num_segments: int) -> Pairs:
        """The (B x C) pairs of a request batch and its candidates, row-major (serving: no position, no outcome)."""
        b, c = candidates.items.shape
        items = candidates.items.reshape(-1)
        safe = np.maximum(items, 0)
        return cls(np.repeat(batch.users, c), np.repeat(batch.segment, c),
                   np.repeat(batch.user_features, c, axis=0), np.repeat(batch.profile, c, axis=0), items,
                   catalog.features[safe], catalog.topic[safe].astype(np.int64),
                   candidates.route.reshape(-1).astype(np.int64), None, np.full(b * c, catalog.step),
                   catalog.embedding_dim, num_routes, num_segments)


@dataclass
class LoggedImpressions:
    """Every shown impression of some windows with what the ranker saw (columnar, oldest first): the logged data
    offline evaluation replays. Built by :class:`ImpressionRecorder` during a simulation."""

    window: np.ndarray  # (n,) the window index (0-based over the recording)
    request: np.ndarray
    user: np.ndarray
    segment: np.ndarray
    item: np.ndarray
    topic: np.ndarray
    route: np.ndarray
    position: np.ndarray
    step: np.ndarray
    user_features: np.ndarray
    profile: np.ndarray
    item_features: np.ndarray
    click: np.ndarray
    like: np.ndarray
    dwell: np.ndarray
    embedding_dim: int = 0
    num_routes: int = 0
    num_segments: int = 0

    def __len__(self) -> int:
        return len(self.item)

    @property
    def windows(self) -> np.ndarray:
        return np.unique(self.window)

    def subset(self, mask: np.ndarray) -> LoggedImpressions:
        cols = {f.name: getattr(self, f.name) for f in fields(self)}
        return LoggedImpressions(**{k: (v[mask] if isinstance(v, np.ndarray) else v) for k, v in cols.items()})

    def pairs(self, mask: np.ndarray | None = None) -> Pairs:
        """The rows (all, or those of ``mask``) as pairs, with their positions and outcomes."""
        s = self if mask is None else self.subset(mask)
        return Pairs(s.user, s.segment, s.user_features, s.profile, s.item, s.item_features, s.topic, s.route,
                     s.position, s.step, s.embedding_dim, s.num_routes, s.num_segments, s.click, s.like, s.dwell)

    def with_outcomes(self, click: np.ndarray, like: np.ndarray, dwell: np.ndarray) -> LoggedImpressions:
        cols = {f.name: getattr(self, f.name) for f in fields(self)}
        return LoggedImpressions(**{**cols, "click": click, "like": like, "dwell": dwell})


class ImpressionRecorder:
    """Collects :class:`LoggedImpressions` from a simulation (``Simulation.recorder``): one :meth:`add` per served
    step, :meth:`end_window` after each window; :meth:`logged` joins them. Recording reads, never draws."""

    def __init__(self) -> None:
        self._parts: list[dict[str, np.ndarray]] = []
        self.window = 0
        self.meta = {"embedding_dim": 0, "num_routes": 0, "num_segments": 0}

    def add(self, batch: RequestBatch, items: np.ndarray, route: np.ndarray, catalog: CatalogView,
            click: np.ndarray, like: np.ndarray, dwell: np.ndarray, num_routes: int, num_segments: int) -> None:
        """A step's slates ``items`` (B, K) with their routes and outcomes (B, K)."""
        b, k = items.shape
        flat = items.reshape(-1)
        self._parts.append({
            "window": np.full(b * k, self.window, np.int64), "request": np.repeat(batch.request, k),
            "user": np.repeat(batch.users, k), "segment": np.repeat(batch.segment, k), "item": flat.copy(),
            "topic": catalog.topic[flat].astype(np.int64), "route": route.reshape(-1).astype(np.int64),
            "position": np.tile(np.arange(k), b), "step": np.full(b * k, catalog.step, np.int64),
            "user_features": np.repeat(batch.user_features, k, axis=0).astype(np.float32),
            "profile": np.repeat(batch.profile, k, axis=0).astype(np.float32),
            "item_features": catalog.features[flat].astype(np.float32),
            "click": click.reshape(-1).astype(bool), "like": like.reshape(-1).astype(bool),
            "dwell": dwell.reshape(-1).astype(np.float32),
        })
        self.meta = {"embedding_dim": catalog.embedding_dim, "num_routes": num_routes, "num_segments": num_segments}

    def end_window(self) -> None:
        self.window += 1

    def logged(self) -> LoggedImpressions:
        if not self._parts:
            raise ValueError("the recorder holds no impressions: attach it to a simulation and serve a window first")
        cols = {k: np.concatenate([p[k] for p in self._parts]) for k in self._parts[0]}
        return LoggedImpressions(**cols, **self.meta)


# ---------------------------------------------------------------------------------------------- as-of statistics


def _grow(a: np.ndarray, size: int) -> np.ndarray:
    return a if len(a) >= size else np.concatenate([a, np.zeros(size - len(a), a.dtype)])


@dataclass
class FeatureState:
    """Counts learned from past windows' impressions (:meth:`update` once per window, after its rows were
    computed): per item and per user, shows and clicks; per item, last window's; per (user, topic), clicks and
    the step of the last one."""

    item_shows: np.ndarray = field(default_factory=lambda: np.zeros(0))
    item_clicks: np.ndarray = field(default_factory=lambda: np.zeros(0))
    item_shows_recent: np.ndarray = field(default_factory=lambda: np.zeros(0))
    item_clicks_recent: np.ndarray = field(default_factory=lambda: np.zeros(0))
    user_shows: np.ndarray = field(default_factory=lambda: np.zeros(0))
    user_clicks: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ut_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted user * 2^20 + topic
    ut_clicks: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ut_last: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @staticmethod
    def _key(user: np.ndarray, topic: np.ndarray) -> np.ndarray:
        return user.astype(np.int64) * (1 << 20) + topic.astype(np.int64)

    def update(self, pairs: Pairs) -> None:
        """Add one window's shown impressions (with outcomes)."""
        if pairs.click is None:
            raise ValueError("FeatureState.update needs the outcomes of the impressions (click is None)")
        ok = pairs.item >= 0
        item, user, click = pairs.item[ok], pairs.user[ok], pairs.click[ok].astype(np.float64)
        n_items = int(item.max()) + 1 if len(item) else 0
        n_users = int(user.max()) + 1 if len(user) else 0
        shows_now = np.bincount(item, minlength=n_items).astype(np.float64)
        clicks_now = np.bincount(item, weights=click, minlength=n_items)
        size = max(n_items, len(self.item_shows))
        self.item_shows = _grow(self.item_shows, size)
        self.item_clicks = _grow(self.item_clicks, size)
        self.item_shows[:n_items] += shows_now
        self.item_clicks[:n_items] += clicks_now
        self.item_shows_recent, self.item_clicks_recent = _grow(shows_now, size), _grow(clicks_now, size)
        size = max(n_users, len(self.user_shows))
        self.user_shows, self.user_clicks = _grow(self.user_shows, size), _grow(self.user_clicks, size)
        self.user_shows[:n_users] += np.bincount(user, minlength=n_users)
        self.user_clicks[:n_users] += np.bincount(user, weights=click, minlength=n_users)
        hit = click > 0
        if hit.any():
            keys = self._key(user[hit], pairs.topic[ok][hit])
            steps = pairs.step[ok][hit].astype(np.float64)
            all_keys = np.concatenate([self.ut_keys, keys])
            all_clicks = np.concatenate([self.ut_clicks, np.ones(len(keys))])
            all_last = np.concatenate([self.ut_last, steps])
            uniq, inv = np.unique(all_keys, return_inverse=True)
            self.ut_keys = uniq
            self.ut_clicks = np.bincount(inv, weights=all_clicks, minlength=len(uniq))
            last = np.full(len(uniq), -np.inf)
            np.maximum.at(last, inv, all_last)
            self.ut_last = last

    def update_log(self, log: InteractionLog) -> None:
        """:meth:`update` from a window's interaction log (its impressions: user, item, topic, step, click)."""
        imp = log.impressions
        n = len(imp["item"])
        z = np.zeros((n, 0), np.float32)
        self.update(Pairs(imp["user"].astype(np.int64), imp["segment"].astype(np.int64), z, z,
                          imp["item"].astype(np.int64), z, imp["topic"].astype(np.int64), imp["route"].astype(np.int64),
                          imp["position"], imp["step"].astype(np.int64), 0, 0, 0, imp["click"], imp["like"],
                          imp["dwell"]))

    def lookup(self, table: np.ndarray, index: np.ndarray) -> np.ndarray:
        """``table[index]``, 0 where the index is beyond what was seen (or negative)."""
        out = np.zeros(len(index))
        ok = (index >= 0) & (index < len(table))
        out[ok] = table[index[ok]]
        return out

    def user_topic(self, user: np.ndarray, topic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(clicks, step of the last click; -inf when none) per (user, topic) pair."""
        if not len(self.ut_keys):
            return np.zeros(len(user)), np.full(len(user), -np.inf)
        keys = self._key(user, topic)
        at = np.clip(np.searchsorted(self.ut_keys, keys), 0, len(self.ut_keys) - 1)
        found = self.ut_keys[at] == keys
        return np.where(found, self.ut_clicks[at], 0.0), np.where(found, self.ut_last[at], -np.inf)


# ---------------------------------------------------------------------------------------------- groups


def _smoothed(clicks: np.ndarray, shows: np.ndarray) -> np.ndarray:
    return (clicks + PRIOR_WEIGHT * PRIOR_CTR) / (shows + PRIOR_WEIGHT)


def _user(p: Pairs, s: FeatureState) -> np.ndarray:
    return p.user_features


TINY = float(np.finfo(np.float32).tiny)


def _item(p: Pairs, s: FeatureState) -> np.ndarray:
    f = p.item_features
    return np.where(np.abs(f) < TINY, np.float32(0.0), f)  # subnormals (a Beta-drawn risk ~1e-41) are 0, as served


def _cross(p: Pairs, s: FeatureState) -> np.ndarray:
    return _item(p, s)[:, : p.embedding_dim] * p.profile


def _route(p: Pairs, s: FeatureState) -> np.ndarray:
    out = np.zeros((len(p), p.num_routes), np.float32)
    out[np.arange(len(p)), p.route] = 1.0
    return out


def _position(p: Pairs, s: FeatureState) -> np.ndarray:
    if p.position is None:
        return np.zeros((len(p), 1), np.float32)
    return np.log1p(p.position, dtype=np.float32)[:, None]


def _dot(p: Pairs, s: FeatureState) -> np.ndarray:
    emb = _item(p, s)[:, : p.embedding_dim]
    dot = (emb * p.profile).sum(axis=1)
    norm = np.linalg.norm(emb, axis=1) * np.linalg.norm(p.profile, axis=1)
    cos = np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0)
    return np.stack([dot, cos], axis=1)


def _segment(p: Pairs, s: FeatureState) -> np.ndarray:
    out = np.zeros((len(p), p.num_segments), np.float32)
    out[np.arange(len(p)), p.segment] = 1.0
    return out


def _topic_segment(p: Pairs, s: FeatureState) -> np.ndarray:
    # a fixed multiplicative hash of (topic, segment) into the buckets: collisions are the price of a bounded width
    bucket = ((p.topic.astype(np.int64) * 1_000_003 + p.segment.astype(np.int64) * 7_919) % 2_147_483_647) % HASH_BUCKETS
    out = np.zeros((len(p), HASH_BUCKETS), np.float32)
    out[np.arange(len(p)), bucket] = 1.0
    return out


def _segment_item(p: Pairs, s: FeatureState) -> np.ndarray:
    # the item's scalar features (quality, freshness, popularity, risk) once per segment, 0 in the other segments'
    # columns: a segment-specific weight for each, which a linear model over the base features cannot have
    scalars = _item(p, s)[:, p.embedding_dim:]
    out = np.zeros((len(p), p.num_segments * scalars.shape[1]), np.float32)
    w = scalars.shape[1]
    for k in range(p.num_segments):  # a loop over segments (a handful), not rows
        rows = p.segment == k
        out[rows, k * w:(k + 1) * w] = scalars[rows]
    return out


def _user_ctr(p: Pairs, s: FeatureState) -> np.ndarray:
    shows, clicks = s.lookup(s.user_shows, p.user), s.lookup(s.user_clicks, p.user)
    return np.stack([_smoothed(clicks, shows), np.log1p(shows)], axis=1)


def _topic_match(p: Pairs, s: FeatureState) -> np.ndarray:
    clicks, last = s.user_topic(p.user, p.topic)
    recency = np.where(np.isfinite(last), np.exp(-np.maximum(p.step - last, 0.0) / RECENCY_STEPS), 0.0)
    return np.stack([np.log1p(clicks), recency], axis=1)


def _item_ctr(p: Pairs, s: FeatureState) -> np.ndarray:
    shows, clicks = s.lookup(s.item_shows, p.item), s.lookup(s.item_clicks, p.item)
    return np.stack([_smoothed(clicks, shows), np.log1p(shows)], axis=1)


def _item_ctr_recent(p: Pairs, s: FeatureState) -> np.ndarray:
    shows, clicks = s.lookup(s.item_shows_recent, p.item), s.lookup(s.item_clicks_recent, p.item)
    return _smoothed(clicks, shows)[:, None]


@dataclass(frozen=True)
class FeatureGroup:
    """A named block of columns: ``compute(pairs, state) -> (n, width)``; ``kind`` says where it comes from."""

    name: str
    kind: str  # base | cross | history | item_stats | drift
    compute: Callable[[Pairs, FeatureState], np.ndarray]
    description: str = ""


FEATURE_GROUPS: dict[str, FeatureGroup] = {g.name: g for g in [
    FeatureGroup("user", "base", _user, "observable user features"),
    FeatureGroup("item", "base", _item, "item embedding, quality, freshness, popularity, risk"),
    FeatureGroup("cross", "base", _cross, "profile x embedding, element-wise"),
    FeatureGroup("route", "base", _route, "one-hot recall route"),
    FeatureGroup("position", "base", _position, "log1p(shown position); 0 when serving"),
    FeatureGroup("dot", "cross", _dot, "profile . embedding and their cosine"),
    FeatureGroup("segment", "cross", _segment, "one-hot user segment"),
    FeatureGroup("topic_segment", "cross", _topic_segment, f"hashed topic x segment, {HASH_BUCKETS} buckets"),
    FeatureGroup("segment_item", "cross", _segment_item, "the item's quality, freshness, popularity, risk per segment"),
    FeatureGroup("user_ctr", "history", _user_ctr, "the user's smoothed click rate and log exposures so far"),
    FeatureGroup("topic_match", "history", _topic_match, "the user's past clicks on the topic and their recency"),
    FeatureGroup("item_ctr", "item_stats", _item_ctr, "the item's smoothed click rate and log exposures so far"),
    FeatureGroup("item_ctr_recent", "drift", _item_ctr_recent, "the item's smoothed click rate last window"),
]}
BASE_GROUPS = ("user", "item", "cross", "route", "position")


class FeatureSet:
    """An ordered set of feature groups (registered names, or :class:`FeatureGroup` objects, e.g. a candidate a
    test builds); :meth:`matrix` lays their columns side by side, :attr:`slices` says where each group sits."""

    def __init__(self, groups: Sequence[str | FeatureGroup] = BASE_GROUPS) -> None:
        resolved = []
        for g in groups:
            if isinstance(g, FeatureGroup):
                resolved.append(g)
            else:
                resolved.append(FEATURE_GROUPS[check_choice("feature group", g, list(FEATURE_GROUPS))])
        names = [g.name for g in resolved]
        if not names:
            raise ConfigError("a feature set needs at least one group (got none)")
        if len(set(names)) != len(names):
            raise ConfigError(f"feature groups must be unique (got {names})")
        self.groups = tuple(resolved)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    def __repr__(self) -> str:
        return f"FeatureSet({list(self.names)})"

    def with_groups(self, add: Sequence[str | FeatureGroup] = (), drop: Sequence[str] = ()) -> FeatureSet:
        keep = [g for g in self.groups if g.name not in set(drop)]
        return FeatureSet([*keep, *[g for g in add if (g if isinstance(g, str) else g.name) not in
                                    {k.name for k in keep}]])

    def width(self, user_dim: int, embedding_dim: int, num_routes: int, num_segments: int) -> int:
        """The number of columns for a world of these sizes (from one probe pair)."""
        z = np.zeros(1, np.int64)
        probe = Pairs(z, z, np.zeros((1, user_dim), np.float32), np.zeros((1, embedding_dim), np.float32), z,
                      np.zeros((1, embedding_dim + 4), np.float32), z, z, None, z, embedding_dim, num_routes,
                      num_segments)
        return int(self.matrix(probe, FeatureState())[0].shape[1])

    def blocks(self, pairs: Pairs, state: FeatureState) -> list[np.ndarray]:
        out = []
        for g in self.groups:
            block = np.asarray(g.compute(pairs, state), dtype=np.float32)
            if block.ndim != 2 or block.shape[0] != len(pairs):
                raise ValueError(f"feature group `{g.name}` returned shape {block.shape}, expected ({len(pairs)}, width)")
            out.append(block)
        return out

    def matrix(self, pairs: Pairs, state: FeatureState) -> tuple[np.ndarray, dict[str, slice]]:
        """``(n, F)`` float32 features (rows of empty slots all 0) and each group's column slice."""
        blocks = self.blocks(pairs, state)
        slices, at = {}, 0
        for g, b in zip(self.groups, blocks):
            slices[g.name] = slice(at, at + b.shape[1])
            at += b.shape[1]
        x = np.concatenate(blocks, axis=1)
        x[pairs.item < 0] = 0.0
        return x, slices


def _window_masks(log: LoggedImpressions) -> Iterator[tuple[int, np.ndarray]]:
    for w in log.windows:
        yield int(w), log.window == w


def replay_features(log: LoggedImpressions, features: FeatureSet, state: FeatureState | None = None
                    ) -> tuple[np.ndarray, dict[str, slice]]:
    """Every row's features as they would have been served: window by window, each window's rows computed from
    the statistics of the windows before it (``state``: what was known before the log; default none), then the
    window added to the statistics."""
    state = FeatureState() if state is None else state
    x: np.ndarray | None = None
    slices: dict[str, slice] = {}
    for _, mask in _window_masks(log):
        pairs = log.pairs(mask)
        xw, slices = features.matrix(pairs, state)
        if x is None:
            x = np.zeros((len(log), xw.shape[1]), np.float32)
        x[mask] = xw
        state.update(pairs)
    if x is None:
        raise ValueError("replay_features: the log is empty")
    return x, slices


# ---------------------------------------------------------------------------------------------- leakage


@dataclass
class LeakReport:
    """:func:`leakage_check`'s finding: ``leaks`` when the group's values on a window's rows change with those
    rows' own outcomes (``changed``: the share of rows that moved)."""

    group: str
    leaks: bool
    changed: float
    reason: str


def leakage_check(group: str | FeatureGroup, log: LoggedImpressions, seed: int = 0, tol: float = 1e-6) -> LeakReport:
    """Is ``group`` computed from the outcome it predicts? Its columns for the log's last window are computed twice
    from the same past (the statistics of the earlier windows): with the window's true outcomes and with them
    shuffled across the window's rows. An as-of feature (history, item statistics) cannot tell the difference; a
    feature that reads its own row's outcome changes. Deterministic given ``seed``."""
    g = group if isinstance(group, FeatureGroup) else FEATURE_GROUPS[check_choice("feature group", group,
                                                                                  list(FEATURE_GROUPS))]
    check_int("seed", seed, 0)
    windows = log.windows
    if len(windows) < 1:
        raise ValueError("leakage_check needs a log with at least one window")
    last = log.window == windows[-1]
    state = FeatureState()
    for w in windows[:-1]:
        state.update(log.pairs(log.window == w))
    pairs = log.pairs(last)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(pairs))
    shuffled = log.subset(last)
    shuffled = shuffled.with_outcomes(shuffled.click[perm], shuffled.like[perm], shuffled.dwell[perm]).pairs()
    fs = FeatureSet([g])
    b = fs.matrix(shuffled, copy.deepcopy(state))[0]  # from the same statistics, whatever the group does to them
    a = fs.matrix(pairs, state)[0]
    moved = np.abs(a - b).max(axis=1) > tol
    changed = float(moved.mean()) if len(moved) else 0.0
    leaks = changed > 0
    reason = (f"`{g.name}` changes on {changed:.1%} of a window's rows when their own outcomes are shuffled: it is "
              f"computed from the outcome it predicts" if leaks else
              f"`{g.name}` does not depend on its rows' own outcomes")
    return LeakReport(g.name, leaks, changed, reason)
