"""The agent protocol and the promotion check that decides whether a module is an agent.

A module is promoted to an agent only when it (i) closes a loop: it acts and it learns from
feedback (``act`` and ``observe``); (ii) can be evaluated on its own: ``inner_metrics(log)`` returns
numbers computed from the interaction log; and (iii) has an evolvable decision space: a
``gymnasium.spaces.Space`` of configurations with more than one point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces

from envs.log import InteractionLog

__all__ = ["ROLES", "Agent", "Promotion", "decision_space_size", "promote"]

ROLES = ("recall", "fusion", "ranking", "rerank", "router", "experiment")


@runtime_checkable
class Agent(Protocol):
    """What every decision agent offers."""

    name: str
    role: str  # one of ROLES
    decision_space: spaces.Space  # the configurations evolution may choose from
    config: dict[str, Any]  # the current point of the decision space

    def act(self, *args: Any, **kwargs: Any) -> Any:
        """Decide for a request batch (signature depends on the role)."""
        ...

    def observe(self, log: InteractionLog) -> None:
        """Learn from the feedback in a window of traffic."""
        ...

    def inner_metrics(self, log: InteractionLog) -> dict[str, float]:
        """The agent's local metrics, computed from the log, under ``inner/<role>/...`` keys."""
        ...

    def configure(self, config: dict[str, Any]) -> None:
        """Deploy a point of the decision space (validated against it)."""
        ...


@dataclass
class Promotion:
    """The verdict of :func:`promote`: which criteria hold, and why not where they fail."""

    name: str
    closes_loop: bool
    evaluable: bool
    evolvable: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return self.closes_loop and self.evaluable and self.evolvable

    def __bool__(self) -> bool:
        return self.promoted

    def __str__(self) -> str:
        if self.promoted:
            return f"{self.name}: promoted to agent"
        return f"{self.name}: not an agent: " + "; ".join(self.reasons)


def decision_space_size(space: spaces.Space) -> float:
    """Number of points of a space (``inf`` for continuous ones with a non-degenerate interval)."""
    if isinstance(space, spaces.Discrete):
        return float(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return float(np.prod(space.nvec.astype(float)))
    if isinstance(space, spaces.MultiBinary):
        return float(2 ** int(np.prod(space.shape)))
    if isinstance(space, spaces.Box):
        return math.inf if np.any(space.high > space.low) else 1.0
    if isinstance(space, spaces.Dict):
        return float(np.prod([decision_space_size(s) for s in space.spaces.values()])) if len(space.spaces) else 1.0
    if isinstance(space, spaces.Tuple):
        return float(np.prod([decision_space_size(s) for s in space.spaces])) if len(space.spaces) else 1.0
    raise TypeError(f"decision space of type {type(space).__name__} is not supported (use Discrete, MultiDiscrete, MultiBinary, Box, Dict or Tuple)")


def promote(module: Any, log: InteractionLog | None = None) -> Promotion:
    """Check the three promotion criteria on ``module``; ``log`` (optional) is used to evaluate it.

    Returns a :class:`Promotion` that is truthy only when all three hold; ``str()`` explains failures.
    """
    name = getattr(module, "name", type(module).__name__)
    reasons: list[str] = []

    act, observe = getattr(module, "act", None), getattr(module, "observe", None)
    closes_loop = callable(act) and callable(observe)
    if not closes_loop:
        missing = [m for m, f in (("act", act), ("observe", observe)) if not callable(f)]
        reasons.append(f"does not close a loop (observe -> decide -> act -> feedback): no {' or '.join(missing)}()")

    metrics_fn = getattr(module, "inner_metrics", None)
    evaluable = callable(metrics_fn)
    if not evaluable:
        reasons.append("cannot be evaluated on its own: no inner_metrics(log)")
    elif log is not None:
        try:
            values = metrics_fn(log)
        except Exception as exc:  # noqa: BLE001 - report any failure as the reason
            evaluable = False
            reasons.append(f"cannot be evaluated on its own: inner_metrics(log) raised {type(exc).__name__}: {exc}")
        else:
            bad = not isinstance(values, dict) or not values or not all(
                isinstance(k, str) and isinstance(v, (int, float, np.floating, np.integer)) for k, v in values.items()
            )
            if bad:
                evaluable = False
                reasons.append(f"cannot be evaluated on its own: inner_metrics(log) must return a non-empty dict of numbers (got {values!r:.80})")

    space = getattr(module, "decision_space", None)
    evolvable = isinstance(space, spaces.Space)
    if not evolvable:
        reasons.append(f"has no evolvable decision space: decision_space must be a gymnasium.spaces.Space (got {type(space).__name__})")
    else:
        size = decision_space_size(space)
        if size <= 1:
            evolvable = False
            reasons.append(f"has no evolvable decision space: {space} has a single point")
    return Promotion(name, closes_loop, evaluable, evolvable, reasons)
