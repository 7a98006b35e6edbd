"""Fixed slate policies over the slate envs' observations: the floors that learned agents must beat.

Each maps a batched observation ``{"user": (n, U), "candidates": (n, C, F)}`` to actions ``(n, K)``:
candidate indices by slate position, best first.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from agents.decision.recall import top_k
from envs.config import WorldConfig
from envs.sessions import ObservationLayout
from envs.validation import check_choice

__all__ = ["POLICIES", "PopularityPolicy", "ProfilePolicy", "RandomPolicy", "SlatePolicy", "make_policy"]


class SlatePolicy(Protocol):
    """Chooses a slate of ``slate_size`` candidate indices per observation row."""

    name: str

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    return top_k(scores, k)[0]


class RandomPolicy:
    """Uniformly random distinct candidates."""

    name = "random"

    def __init__(self, slate_size: int, rng: np.random.Generator) -> None:
        self.slate_size = slate_size
        self.rng = rng

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        n, c = obs["candidates"].shape[:2]
        return _top(self.rng.random((n, c), dtype=np.float32), self.slate_size)


class PopularityPolicy:
    """The most popular candidates for everyone (no personalisation)."""

    name = "popularity"

    def __init__(self, slate_size: int, layout: ObservationLayout) -> None:
        self.slate_size = slate_size
        self.column = layout.item("popularity")

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return _top(obs["candidates"][..., self.column], self.slate_size)


class ProfilePolicy:
    """Hand-tuned scoring: affinity of each candidate to the user's observed profile, plus quality, minus risk."""

    name = "profile"

    def __init__(
        self,
        slate_size: int,
        layout: ObservationLayout,
        affinity: float = 4.0,
        quality: float = 1.0,
        popularity: float = 0.3,
        risk: float = 10.0,
    ) -> None:
        self.slate_size = slate_size
        self.layout = layout
        self.weights = (affinity, quality, popularity, risk)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        lay, (wa, wq, wp, wr) = self.layout, self.weights
        cand, user = obs["candidates"], obs["user"]
        score = wa * np.einsum("ncd,nd->nc", cand[..., lay.item_embedding], user[:, lay.user_profile])
        score += wq * cand[..., lay.item("quality")]
        score += wp * cand[..., lay.item("popularity")]
        score -= wr * cand[..., lay.item("risk")]
        return _top(score, self.slate_size)


POLICIES = ("random", "popularity", "profile")


def make_policy(name: str, slate_size: int, world: WorldConfig, rng: np.random.Generator) -> SlatePolicy:
    """Build a baseline policy by name (one of ``POLICIES``)."""
    check_choice("policy", name, POLICIES)
    layout = ObservationLayout.of(world)
    if name == "random":
        return RandomPolicy(slate_size, rng)
    if name == "popularity":
        return PopularityPolicy(slate_size, layout)
    return ProfilePolicy(slate_size, layout)
