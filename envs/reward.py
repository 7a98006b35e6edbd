"""Reward of one user response: a weighted sum of clicks, dwell, likes, policy violations and next-day returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from envs.validation import check_range
from envs.world import Response

__all__ = ["ResponseReward"]


MAX_WEIGHT = 1e6  # a reward weight's bound: larger ones overflow the float32 reward to inf


@dataclass
class ResponseReward:
    """``r = click * clicks + dwell * minutes + like * likes - violation * violations + returned * [returned]``.

    The ``returned`` term is paid on the step that ends a session (next-day return drawn there).
    """

    click: float = 1.0
    dwell: float = 0.0  # per minute of dwell
    like: float = 0.0
    violation: float = 0.0  # penalty per violating item shown
    returned: float = 0.0  # bonus when the session ends with a next-day return

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            check_range(f"reward.{key}", value, 0.0, MAX_WEIGHT)

    def __call__(self, response: Response, returned: np.ndarray | None = None) -> np.ndarray:
        r = self.click * response.click.sum(axis=1, dtype=np.float32)
        if self.dwell:
            r += self.dwell * response.dwell.sum(axis=1) / 60.0
        if self.like:
            r += self.like * response.like.sum(axis=1)
        if self.violation:
            r -= self.violation * response.violation.sum(axis=1)
        if self.returned and returned is not None:
            r += self.returned * returned
        return r.astype(np.float32)
