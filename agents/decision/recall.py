"""Recall agents: each route returns scored candidates with provenance for a batch of requests.

Routes: time-decayed popularity, behaviour-based collaborative (item-to-next-item transitions learned
from logged clicks), content/interest-based (an inverted index over topics probed by the user's
observed profile), fresh items, and long-tail exploration (Thompson sampling over tail items). All
are vectorised over the request batch; global routes compute one top-k and broadcast it.
"""

from __future__ import annotations

import numpy as np

from agents.decision.context import Candidates, CatalogView, RequestBatch, SlotTracker
from agents.decision.params import Choice, DecisionAgent, ParamSpace, Range
from envs.items import TAIL, TORSO
from envs.log import InteractionLog
from envs.validation import check_choice
from rewards.inner import recall_metrics

__all__ = [
    "RECALL_ROUTES",
    "CollaborativeRecall",
    "ContentRecall",
    "ExplorationRecall",
    "FreshRecall",
    "PopularityRecall",
    "RecallAgent",
    "make_recall",
    "top_k",
]


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest entries per row (last axis), best first."""
    k = min(k, scores.shape[-1])
    if k == scores.shape[-1]:
        part = np.broadcast_to(np.arange(k), scores.shape).copy()
    else:
        part = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    vals = np.take_along_axis(scores, part, axis=-1)
    order = np.argsort(-vals, axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1), np.take_along_axis(vals, order, axis=-1)


class RecallAgent(DecisionAgent):
    """A recall route. ``route_id`` is its index in the system's route names (set by the system)."""

    role = "recall"

    def __init__(self, name: str, config: dict | None = None) -> None:
        super().__init__(name, config)
        self.route_id = 0

    def act(self, batch: RequestBatch, catalog: CatalogView, rng: np.random.Generator) -> Candidates:
        raise NotImplementedError

    def observe(self, log: InteractionLog) -> None:
        raise NotImplementedError

    def inner_metrics(self, log: InteractionLog) -> dict[str, float]:
        return {f"inner/recall/{self.name}/{k}": v for k, v in recall_metrics(log, self.route_id).items()}

    def _global(self, scores: np.ndarray, batch: RequestBatch) -> Candidates:
        """The same top-k for every request."""
        idx, val = top_k(scores, int(self.config["k"]))
        b = len(batch)
        return Candidates(
            np.broadcast_to(idx, (b, len(idx))).astype(np.int64),
            np.broadcast_to(val.astype(np.float32), (b, len(idx))),
            np.full((b, len(idx)), self.route_id, np.int16),
        )


class _ItemStats:
    """Per-item impression and click counts from logs, decayed per window, reset when a slot is reborn."""

    def __init__(self) -> None:
        self.impressions: np.ndarray | None = None
        self.clicks: np.ndarray | None = None
        self.slots = SlotTracker()

    def sync(self, catalog: CatalogView) -> None:
        """Size the counts to the catalog and forget the slots whose item was replaced."""
        self.ensure(catalog.num_items)
        self.reset(np.flatnonzero(self.slots.reborn(catalog)))

    def ensure(self, n: int) -> None:
        if self.impressions is None or len(self.impressions) != n:
            self.impressions, self.clicks = np.zeros(n), np.zeros(n)

    def reset(self, slots: np.ndarray) -> None:
        if self.impressions is not None:
            self.impressions[slots] = 0.0
            self.clicks[slots] = 0.0

    def add(self, log: InteractionLog, n: int, decay: float) -> None:
        self.ensure(n)
        imp = log.impressions
        self.impressions *= decay
        self.clicks *= decay
        self.impressions += np.bincount(imp["item"], minlength=n)[:n]
        self.clicks += np.bincount(imp["item"], weights=imp["click"].astype(float), minlength=n)[:n]


class PopularityRecall(RecallAgent):
    """Most-clicked items, with exponentially decayed counts (half-life in windows) and the prior."""

    params = ParamSpace([
        Choice("k", (50, 100, 200, 400), 200),
        Range("half_life", 0.25, 16.0, 2.0),  # windows
        Range("prior_weight", 0.0, 2.0, 0.5),
    ])

    def __init__(self, name: str = "popularity", config: dict | None = None) -> None:
        super().__init__(name, config)
        self.stats = _ItemStats()

    def act(self, batch: RequestBatch, catalog: CatalogView, rng: np.random.Generator) -> Candidates:
        self.stats.sync(catalog)
        score = np.log1p(self.stats.clicks) + self.config["prior_weight"] * catalog.column("popularity")
        return self._global(score, batch)

    def observe(self, log: InteractionLog) -> None:
        self.stats.add(log, log.num_items, 0.5 ** (1.0 / self.config["half_life"]))


class FreshRecall(RecallAgent):
    """The freshest items, weighted by quality and by their observed click-through so far."""

    params = ParamSpace([
        Choice("k", (25, 50, 100, 200), 100),
        Range("quality_weight", 0.0, 2.0, 1.0),
        Range("ctr_weight", 0.0, 4.0, 1.0),
    ])

    def __init__(self, name: str = "fresh", config: dict | None = None) -> None:
        super().__init__(name, config)
        self.stats = _ItemStats()

    def act(self, batch: RequestBatch, catalog: CatalogView, rng: np.random.Generator) -> Candidates:
        self.stats.sync(catalog)
        ctr = (self.stats.clicks + 0.1) / (self.stats.impressions + 1.0)
        score = catalog.column("freshness") + self.config["quality_weight"] * catalog.column("quality")
        score = score + self.config["ctr_weight"] * ctr
        return self._global(score, batch)

    def observe(self, log: InteractionLog) -> None:
        self.stats.add(log, log.num_items, 0.7)


class ExplorationRecall(RecallAgent):
    """Long-tail exploration: per request, Thompson samples over tail (or torso + tail) items."""

    params = ParamSpace([
        Choice("k", (25, 50, 100, 200), 50),
        Choice("pool", ("tail", "torso_tail"), "tail"),
        Range("prior_strength", 1.0, 100.0, 10.0),
    ])

    def __init__(self, name: str = "exploration", config: dict | None = None) -> None:
        super().__init__(name, config)
        self.stats = _ItemStats()

    def act(self, batch: RequestBatch, catalog: CatalogView, rng: np.random.Generator) -> Candidates:
        self.stats.sync(catalog)
        pool = np.flatnonzero(catalog.tier >= (TAIL if self.config["pool"] == "tail" else TORSO))
        k, b = min(int(self.config["k"]), len(pool)), len(batch)
        # one Thompson sample per pool item and call, from each item's Beta posterior (prior mean 0.05)
        s = self.config["prior_strength"]
        alpha = 0.05 * s + self.stats.clicks[pool]
        beta = 0.95 * s + self.stats.impressions[pool] - self.stats.clicks[pool]
        theta = rng.beta(alpha, np.maximum(beta, 1e-3)).astype(np.float32)
        # per request a shortlist of 4k uniform picks, of which the k best sampled rates
        pick = rng.integers(0, len(pool), (b, 4 * k))
        idx, val = top_k(theta[pick], k)
        items = pool[np.take_along_axis(pick, idx, axis=1)]
        return Candidates(items.astype(np.int64), val, np.full(items.shape, self.route_id, np.int16))

    def observe(self, log: InteractionLog) -> None:
        self.stats.add(log, log.num_items, 0.9)


class ContentRecall(RecallAgent):
    """Interest-based: probe the topics closest to the user's profile, score their items by affinity.

    An inverted index keeps, per topic, the items best by quality and freshness; topic centroids are
    the mean embeddings of their items. Topics whose items were clicked more (learned from logs) are
    probed more.
    """

    params = ParamSpace([
        Choice("k", (50, 100, 200, 400), 200),
        Choice("probe", (1, 2, 3, 4), 2),
        Range("quality_weight", 0.0, 2.0, 0.5),
        Range("topic_ctr_weight", 0.0, 4.0, 1.0),
    ])
    per_topic = 200

    def __init__(self, name: str = "content", config: dict | None = None) -> None:
        super().__init__(name, config)
        self._index_step = -1
        self._centroids = np.zeros((0, 0), np.float32)
        self._lists = np.zeros((0, 0), np.int64)
        self.topic_ctr: np.ndarray | None = None

    def _build(self, catalog: CatalogView) -> None:
        if self._index_step == catalog.step and len(self._centroids):
            return
        t = int(catalog.topic.max()) + 1
        emb = catalog.embedding
        counts = np.bincount(catalog.topic, minlength=t).astype(np.float32)
        sums = np.zeros((t, emb.shape[1]), np.float32)
        np.add.at(sums, catalog.topic, emb)
        cent = sums / np.maximum(counts, 1.0)[:, None]
        self._centroids = cent / np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-6)
        prior = catalog.column("quality") + catalog.column("freshness")
        order = np.lexsort((-prior, catalog.topic))  # by topic, best first within a topic
        starts = np.searchsorted(catalog.topic[order], np.arange(t))
        lists = np.full((t, self.per_topic), -1, np.int64)
        for topic in range(t):  # a loop over topics (tens), not items
            chunk = order[starts[topic] : starts[topic] + min(self.per_topic, int(counts[topic]))]
            lists[topic, : len(chunk)] = chunk
        self._lists = lists
        self._index_step = catalog.step
        if self.topic_ctr is None or len(self.topic_ctr) != t:
            self.topic_ctr = np.zeros(t, np.float32)

    def act(self, batch: RequestBatch, catalog: CatalogView, rng: np.random.Generator) -> Candidates:
        self._build(catalog)
        probe = min(int(self.config["probe"]), len(self._centroids))
        topic_score = batch.profile @ self._centroids.T + self.config["topic_ctr_weight"] * self.topic_ctr
        topics, _ = top_k(topic_score, probe)  # (B, probe)
        pool = self._lists[topics].reshape(len(batch), -1)  # (B, probe * per_topic)
        valid = pool >= 0
        safe = np.where(valid, pool, 0)
        emb = catalog.embedding
        score = np.einsum("bcd,bd->bc", emb[safe], batch.profile)
        score += self.config["quality_weight"] * catalog.column("quality")[safe]
        score = np.where(valid, score, -np.inf).astype(np.float32)
        idx, val = top_k(score, int(self.config["k"]))
        items = np.take_along_axis(safe, idx, axis=1)
        items = np.where(np.isfinite(val), items, -1)
        return Candidates(items.astype(np.int64), val, np.full(items.shape, self.route_id, np.int16))

    def observe(self, log: InteractionLog) -> None:
        imp = log.impressions
        if self.topic_ctr is None or not len(imp["topic"]):
            return
        t = len(self.topic_ctr)
        shown = np.bincount(imp["topic"], minlength=t)[:t]
        clicks = np.bincount(imp["topic"], weights=imp["click"].astype(float), minlength=t)[:t]
        ctr = (clicks + 1.0) / (shown + 10.0)
        # centred log-odds of each topic's click rate, smoothed over windows
        z = np.log(ctr / (1 - ctr))
        self.topic_ctr = (0.5 * self.topic_ctr + 0.5 * (z - z.mean())).astype(np.float32)


class CollaborativeRecall(RecallAgent):
    """Behaviour-based: items clicked next by other users after the items this user clicked last.

    Learned from logged clicks: transitions (previous click -> next click of the same user) are
    counted over recent windows; each item keeps its ``neighbours`` most frequent successors.
    """

    params = ParamSpace([
        Choice("k", (50, 100, 200), 100),
        Choice("recent", (1, 2, 3), 2),
        Range("decay", 0.0, 1.0, 0.7),  # weight of older windows' transitions
    ])
    neighbours = 100
    memory = 3

    def __init__(self, name: str = "collaborative", config: dict | None = None) -> None:
        super().__init__(name, config)
        self.recent: np.ndarray | None = None  # (num_users, memory) last clicked items, -1 = none
        self.table: np.ndarray | None = None  # (num_items, neighbours) successors, -1 = none
        self.weight: np.ndarray | None = None  # (num_items, neighbours) transition counts
        self._pairs = np.zeros((0, 2), np.int64)
        self._pair_w = np.zeros(0)

    def _ensure(self, num_users: int, num_items: int) -> None:
        if self.recent is None or len(self.recent) < num_users:
            old = self.recent
            self.recent = np.full((num_users, self.memory), -1, np.int64)
            if old is not None:
                self.recent[: len(old)] = old
        if self.table is None or len(self.table) != num_items:
            self.table = np.full((num_items, self.neighbours), -1, np.int64)
            self.weight = np.zeros((num_items, self.neighbours), np.float32)

    def act(self, batch: RequestBatch, catalog: CatalogView, rng: np.random.Generator) -> Candidates:
        self._ensure(int(batch.users.max()) + 1, catalog.num_items)
        r = int(self.config["recent"])
        last = self.recent[batch.users, :r]  # (B, r)
        last = np.where(batch.history[:, None] > 0, last, -1)  # a new user in a recycled slot has no past
        safe = np.maximum(last, 0)
        items = self.table[safe].reshape(len(batch), -1)  # (B, r * neighbours)
        w = self.weight[safe].reshape(len(batch), -1)
        valid = (np.repeat(last >= 0, self.neighbours, axis=1)) & (items >= 0)
        score = np.where(valid, w, -np.inf).astype(np.float32)
        idx, val = top_k(score, int(self.config["k"]))
        out = np.take_along_axis(items, idx, axis=1)
        out = np.where(np.isfinite(val), out, -1)
        return Candidates(out.astype(np.int64), np.where(np.isfinite(val), val, 0.0).astype(np.float32),
                          np.full(out.shape, self.route_id, np.int16))

    def observe(self, log: InteractionLog) -> None:
        imp = log.impressions
        clicked = imp["click"]
        users, items, req = imp["user"][clicked], imp["item"][clicked], imp["request"][clicked]
        if log.num_items == 0:
            return
        self._ensure(int(max(users.max(initial=0), log.requests["user"].max(initial=0))) + 1, log.num_items)
        order = np.lexsort((req, users))
        users, items = users[order], items[order]
        same = users[1:] == users[:-1]
        pairs = np.stack([items[:-1][same], items[1:][same]], axis=1)
        # carry over the users' last clicks from earlier windows as the first "previous" item
        first = np.ones(len(users), bool)
        first[1:] = ~same
        prev = self.recent[users[first], 0]
        carry = np.stack([prev, items[first]], axis=1)[prev >= 0]
        pairs = np.concatenate([pairs, carry])
        self._pairs = np.concatenate([self._pairs, pairs])
        self._pair_w = np.concatenate([self._pair_w * self.config["decay"], np.ones(len(pairs))])
        keep = self._pair_w > 1e-3
        self._pairs, self._pair_w = self._pairs[keep], self._pair_w[keep]
        self._rebuild(log.num_items)
        self._remember(users, items, same)

    def _remember(self, users: np.ndarray, items: np.ndarray, same: np.ndarray) -> None:
        """Prepend each user's clicks of this window (newest first) to their recent-click memory."""
        if not len(users):
            return
        ends = np.flatnonzero(np.r_[~same, True])  # last index of each user's run
        starts = np.r_[0, ends[:-1] + 1]
        u, n_new = users[ends], ends - starts + 1
        old = self.recent[u].copy()
        new = np.full_like(old, -1)
        for j in range(self.memory):  # a loop over memory slots (3), not users
            fresh = j < n_new
            new[fresh, j] = items[ends[fresh] - j]
            new[~fresh, j] = old[~fresh, j - n_new[~fresh]]
        self.recent[u] = new

    def _rebuild(self, num_items: int) -> None:
        pairs, w = self._pairs, self._pair_w
        self.table[:] = -1
        self.weight[:] = 0.0
        if not len(pairs):
            return
        key = pairs[:, 0] * num_items + pairs[:, 1]
        uniq, inv = np.unique(key, return_inverse=True)
        total = np.bincount(inv, weights=w)
        src, dst = uniq // num_items, uniq % num_items
        order = np.lexsort((-total, src))
        src, dst, total = src[order], dst[order], total[order]
        start = np.searchsorted(src, src, side="left")
        rank = np.arange(len(src)) - start
        ok = rank < self.neighbours
        self.table[src[ok], rank[ok]] = dst[ok]
        self.weight[src[ok], rank[ok]] = total[ok]


RECALL_ROUTES = {
    "popularity": PopularityRecall,
    "collaborative": CollaborativeRecall,
    "content": ContentRecall,
    "fresh": FreshRecall,
    "exploration": ExplorationRecall,
}


def make_recall(kind: str, name: str | None = None, config: dict | None = None) -> RecallAgent:
    """A recall route by kind (one of ``RECALL_ROUTES``)."""
    check_choice("recall route", kind, list(RECALL_ROUTES))
    return RECALL_ROUTES[kind](name or kind, config)
