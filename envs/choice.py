"""User choice: a multinomial logit over the slate with a no-click option and position bias.

A user examines position ``k`` with log-weight ``-position_decay * log(1 + k)`` and picks at most one
item: P(item at k) is proportional to ``exp(u_k - position_decay * log(1 + k))`` and P(no click) to
``exp(u_0)``, where ``u_0`` is the segment's no-click utility. Duplicates in a slate are shown once
(later copies get zero weight).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["ChoiceModel", "MultinomialLogitChoice", "position_log_weights"]


def position_log_weights(slate_size: int, position_decay: float) -> np.ndarray:
    """Log examination weight per position: ``-position_decay * log(1 + k)`` for k = 0..K-1."""
    return (-position_decay * np.log1p(np.arange(slate_size))).astype(np.float32)


class ChoiceModel(Protocol):
    """Maps item utilities of a batch of slates to choice probabilities and sampled choices."""

    def probabilities(self, utility: np.ndarray, no_click: np.ndarray, shown: np.ndarray) -> np.ndarray:
        """(B, K) utilities, (B,) no-click utility, (B, K) shown mask -> (B, K + 1); column 0 is no click."""
        ...

    def sample(self, probs: np.ndarray, u: np.ndarray) -> np.ndarray:
        """(B, K + 1) probabilities and (B,) uniforms in [0, 1) -> (B,) choice: 0 for no click, k + 1 for the item
        at position k (inverse CDF: the same uniform and probabilities give the same choice)."""
        ...


class MultinomialLogitChoice:
    """Conditional logit with additive position log-weights and an outside (no-click) option."""

    def __init__(self, slate_size: int, position_decay: float) -> None:
        self.position_log_weight = position_log_weights(slate_size, position_decay)

    def probabilities(self, utility: np.ndarray, no_click: np.ndarray, shown: np.ndarray) -> np.ndarray:
        b, k = utility.shape
        logits = np.empty((b, k + 1), np.float32)
        logits[:, 0] = no_click
        logits[:, 1:] = np.where(shown, utility + self.position_log_weight[:k], -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    def sample(self, probs: np.ndarray, u: np.ndarray) -> np.ndarray:
        cum = np.cumsum(probs, axis=1)
        r = u.astype(probs.dtype, copy=False)[:, None] * cum[:, -1:]
        return np.minimum((cum <= r).sum(axis=1), probs.shape[1] - 1)
