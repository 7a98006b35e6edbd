"""The item catalog: topic embeddings, quality, creators, Zipf popularity, lifetimes, risk and cost.

The catalog has a fixed number of slots; an item that expires is replaced in its slot by a new item
born at the current time, so every array keeps its shape and the hot path stays vectorised.
"""

from __future__ import annotations

import numpy as np

from envs.calibration import Grounding
from envs.config import ItemConfig
from envs.linalg import unit_rows

__all__ = ["Catalog", "FEATURE_BOUND", "HEAD", "ITEM_FEATURES", "TAIL", "TORSO", "unit_rows"]

HEAD, TORSO, TAIL = 0, 1, 2
# columns of Catalog.features, after the embedding: what a recommender may observe about an item
ITEM_FEATURES = ("quality", "freshness", "popularity", "risk")
FEATURE_BOUND = 10.0  # observable features are clipped to [-FEATURE_BOUND, FEATURE_BOUND]


class Catalog:
    """All items, as column arrays over ``num_items`` slots."""

    def __init__(
        self,
        cfg: ItemConfig,
        num_items: int,
        num_topics: int,
        embedding_dim: int,
        num_creators: int,
        rng: np.random.Generator,
    ) -> None:
        self.cfg = cfg
        self.num_items = num_items
        self.num_topics = num_topics
        self.num_creators = num_creators
        self.rng = rng
        self.topic_centers = unit_rows(rng.standard_normal((num_topics, embedding_dim)))
        n = num_items
        self.topic = np.zeros(n, np.int32)
        self.embedding = np.zeros((n, embedding_dim), np.float32)
        self.quality = np.zeros(n, np.float32)
        self.creator = np.zeros(n, np.int32)
        self.birth = np.zeros(n, np.float64)
        self.lifetime = np.ones(n, np.float64)
        self.risk = np.zeros(n, np.float32)
        self.violating = np.zeros(n, bool)  # latent: the item does violate policy (drawn with prob. risk)
        self.cost = np.zeros(n, np.float32)
        self.log_popularity = np.zeros(n, np.float32)  # log prior rescaled to [0, zipf_exponent]
        self.topic_boost = np.zeros(num_topics, np.float32)  # popularity shocks per topic
        # creator popularity is Zipf too: a few creators own much of the catalog
        creator_w = 1.0 / np.arange(1, num_creators + 1) ** 1.0
        self._creator_p = creator_w / creator_w.sum()
        all_slots = np.arange(n)
        self._fill(all_slots, now=0.0)
        # initial items are spread over their lifetimes: the catalog starts "in steady state"
        self.birth[:] = -rng.random(n) * self.lifetime
        self.features = np.zeros((n, embedding_dim + len(ITEM_FEATURES)), np.float32)
        self.refresh_features(now=0.0)

    # ------------------------------------------------------------------ generation
    def _fill(self, slots: np.ndarray, now: float) -> None:
        """Draw new items into ``slots``, born at ``now``."""
        cfg, rng, k = self.cfg, self.rng, len(slots)
        if k == 0:
            return
        topic = rng.integers(0, self.num_topics, k)
        noise = rng.standard_normal((k, self.embedding.shape[1])).astype(np.float32)
        self.topic[slots] = topic
        self.embedding[slots] = unit_rows(self.topic_centers[topic] + cfg.topic_noise * noise)
        self.quality[slots] = rng.beta(cfg.quality_alpha, cfg.quality_beta, k)
        self.creator[slots] = rng.choice(self.num_creators, size=k, p=self._creator_p)
        self.birth[slots] = now
        self.lifetime[slots] = cfg.lifetime_days * np.exp(cfg.lifetime_sigma * rng.standard_normal(k))
        a = cfg.risk_mean * cfg.risk_concentration
        b = (1.0 - cfg.risk_mean) * cfg.risk_concentration
        risk = rng.beta(a, b, k)
        self.risk[slots] = risk
        self.violating[slots] = rng.random(k) < risk
        self.cost[slots] = cfg.cost_mean * np.exp(cfg.cost_sigma * rng.standard_normal(k) - cfg.cost_sigma**2 / 2)
        # Zipf prior: a uniformly random rank among the catalog size, p ~ rank^-a, normalised log-scale
        rank = rng.integers(1, self.num_items + 1, k)
        self.log_popularity[slots] = self._log_pop(rank)

    def surge_risk(self, mask: np.ndarray, factor: float, rng: np.random.Generator) -> None:
        """Multiply the risk of the ``mask`` items by ``factor`` (capped at 1); whether each violates is redrawn
        consistently: an item that violated still does, one that did not now does with the conditional probability."""
        old = self.risk[mask].astype(np.float64)
        new = np.minimum(old * factor, 1.0)
        extra = (new - old) / np.maximum(1.0 - old, 1e-12)
        self.violating[mask] |= rng.random(len(old)) < extra
        self.risk[mask] = new.astype(np.float32)

    def _log_pop(self, rank: np.ndarray) -> np.ndarray:
        """Log prior ``-a log(rank)`` rescaled to ``[0, a]``: ``a * (1 - log(rank) / log(N))``.

        The head is bounded (the top item scores ``a``, rank 100 of 10k ``a / 2``), so a few head items
        cannot dominate every user's utility.
        """
        a = self.cfg.zipf_exponent
        return (a * (1.0 - np.log(rank) / np.log(max(self.num_items, 2)))).astype(np.float32)

    def ground(self, found: Grounding) -> None:
        """Take a data set's items (:class:`envs.calibration.Grounding`): topic centres, topics, embeddings, quality,
        the popularity prior from their rank, and their age (born that many days before time 0)."""
        self.topic_centers[:] = found.topic_centers  # in place: the population holds this array
        self.topic[:] = found.item_topic
        self.embedding[:] = found.item_embedding
        self.quality[:] = found.item_quality
        self.log_popularity[:] = self._log_pop(found.item_rank)
        self.birth[:] = -found.item_age_days
        self.refresh_features(now=0.0)

    # ------------------------------------------------------------------ time
    def age(self, now: float) -> np.ndarray:
        return now - self.birth

    def freshness(self, now: float) -> np.ndarray:
        return np.exp(-np.maximum(self.age(now), 0.0) / self.lifetime).astype(np.float32)

    def expire(self, now: float) -> np.ndarray:
        """Replace items older than ``expire_after`` lifetimes by new ones; return the replaced slots."""
        slots = np.flatnonzero(self.age(now) > self.cfg.expire_after * self.lifetime)
        self._fill(slots, now)
        return slots

    def refresh(self, fraction: float, now: float) -> np.ndarray:
        """Replace a random ``fraction`` of the catalog by new items (a catalog-refresh shift)."""
        k = int(round(fraction * self.num_items))
        slots = self.rng.choice(self.num_items, size=k, replace=False)
        self._fill(slots, now)
        return slots

    def refresh_features(self, now: float) -> None:
        """Recompute the observable feature matrix (embedding, quality, freshness, popularity, risk)."""
        d = self.embedding.shape[1]
        f = self.features
        f[:, :d] = self.embedding
        f[:, d] = self.quality
        f[:, d + 1] = self.freshness(now)
        f[:, d + 2] = np.clip(self.popularity, -FEATURE_BOUND, FEATURE_BOUND)
        f[:, d + 3] = self.risk

    # ------------------------------------------------------------------ derived
    @property
    def popularity(self) -> np.ndarray:
        """Effective popularity: the item's prior plus any shock to its topic."""
        return self.log_popularity + self.topic_boost[self.topic]

    def popularity_tier(self) -> np.ndarray:
        """HEAD / TORSO / TAIL per item, by the rank of its effective popularity."""
        order = np.argsort(-self.popularity, kind="stable")
        tier = np.full(self.num_items, TAIL, np.int8)
        n_head = int(round(self.cfg.head_fraction * self.num_items))
        n_torso = int(round(self.cfg.torso_fraction * self.num_items))
        tier[order[:n_head]] = HEAD
        tier[order[n_head : n_head + n_torso]] = TORSO
        return tier
