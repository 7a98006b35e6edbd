"""What decision agents may see of a request batch and of the catalog: observable state only.

Hidden state of the world (true interests, fatigue, satisfaction, latent violation flags) never
reaches an agent; it learns from the interaction log instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.items import ITEM_FEATURES
from envs.world import World

__all__ = ["CatalogView", "Candidates", "RequestBatch", "SlotTracker"]


@dataclass
class CatalogView:
    """Observable item state at serving time (views into the world's arrays, not copies)."""

    features: np.ndarray  # (N, D + 4): embedding | quality | freshness | popularity | risk
    topic: np.ndarray  # (N,) category id (platform metadata)
    creator: np.ndarray  # (N,)
    tier: np.ndarray  # (N,) popularity tier 0 head, 1 torso, 2 tail
    birth: np.ndarray  # (N,) days
    now: float  # days
    step: int

    @classmethod
    def of(cls, world: World, tier: np.ndarray | None = None) -> CatalogView:
        cat = world.catalog
        return cls(
            cat.features, cat.topic, cat.creator, cat.popularity_tier() if tier is None else tier,
            cat.birth, world.now, world.steps,
        )

    @property
    def num_items(self) -> int:
        return self.features.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.features.shape[1] - len(ITEM_FEATURES)

    @property
    def embedding(self) -> np.ndarray:
        return self.features[:, : self.embedding_dim]

    def column(self, name: str) -> np.ndarray:
        return self.features[:, self.embedding_dim + ITEM_FEATURES.index(name)]


@dataclass
class RequestBatch:
    """A batch of requests: who asks, and what the platform knows about them."""

    request: np.ndarray  # (B,) request ids
    users: np.ndarray  # (B,) user ids
    segment: np.ndarray  # (B,) segment ids
    user_features: np.ndarray  # (B, U) observable user features (as in the slate env's obs["user"])
    profile: np.ndarray  # (B, D) observable interest profile (EMA of clicked embeddings)
    history: np.ndarray  # (B,) number of past clicks

    @classmethod
    def of(cls, world: World, users: np.ndarray, request: np.ndarray) -> RequestBatch:
        pop = world.users
        return cls(
            request, users, pop.segment[users].astype(np.int64), pop.observation(users), pop.profile[users],
            pop.history[users].copy(),
        )

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, rows: np.ndarray) -> RequestBatch:
        return RequestBatch(
            self.request[rows], self.users[rows], self.segment[rows], self.user_features[rows],
            self.profile[rows], self.history[rows],
        )


@dataclass
class Candidates:
    """Candidate items per request with scores and provenance; ``-1`` pads missing entries."""

    items: np.ndarray  # (B, C) int64 item ids, -1 = empty
    scores: np.ndarray  # (B, C) float32
    route: np.ndarray  # (B, C) int16 route id that found the item

    @property
    def valid(self) -> np.ndarray:
        return self.items >= 0


class SlotTracker:
    """Detects catalog slots whose item was replaced (by birth time), so per-item state can be reset."""

    def __init__(self) -> None:
        self._birth: np.ndarray | None = None

    def reborn(self, catalog: CatalogView) -> np.ndarray:
        """(N,) mask of slots replaced since the last call; all True on the first call or a new catalog size."""
        if self._birth is None or len(self._birth) != catalog.num_items:
            changed = np.ones(catalog.num_items, bool)
        else:
            changed = catalog.birth != self._birth
        if changed.any():
            self._birth = catalog.birth.copy()
        return changed
