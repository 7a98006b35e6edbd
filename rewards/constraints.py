"""Constrained objectives over outer metrics: Lagrangian primal-dual multipliers, or fixed weighted scalarisation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from envs.validation import ConfigError, check_choice, check_range
from rewards.outer import OUTER_KEYS
from rewards.stats import t_quantile

__all__ = ["SENSES", "Constraint", "ConstraintHandler", "LagrangianConstraints", "WeightedScalarisation"]

SENSES = ("<=", ">=")


@dataclass(frozen=True)
class Constraint:
    """``metric <= bound`` (or ``>=``) on one outer metric, e.g. ``outer/risk/violations_per_request <= 0.05`` or a
    budget ``outer/cost/serving_per_request <= 9.0``.

    ``scale`` is the metric's unit for the dual step: the multiplier moves by ``lr * excess / scale``.
    """

    metric: str
    bound: float
    sense: str = "<="
    scale: float = 1.0

    def __post_init__(self) -> None:
        check_choice("constraint.metric", self.metric, OUTER_KEYS)
        check_range(f"constraint[{self.metric}].bound", self.bound)
        if not math.isfinite(self.bound):
            raise ConfigError(f"`constraint[{self.metric}].bound` must be finite (got {self.bound})")
        check_choice(f"constraint[{self.metric}].sense", self.sense, SENSES)
        check_range(f"constraint[{self.metric}].scale", self.scale, 0, low_inclusive=False)
        if not math.isfinite(self.scale):
            raise ConfigError(f"`constraint[{self.metric}].scale` must be finite (got {self.scale})")

    def excess(self, metrics: Mapping[str, float]) -> float:
        """How far the metric is past its bound: ``g - bound`` for ``<=``, ``bound - g`` for ``>=`` (> 0: violated)."""
        if self.metric not in metrics:
            raise ValueError(f"metrics lack {self.metric!r}, needed by the constraint on it (pass outer_metrics(log))")
        g = float(metrics[self.metric])
        if math.isnan(g):
            raise ValueError(f"constraint metric {self.metric!r} is nan in this window (nothing to measure it on)")
        return g - self.bound if self.sense == "<=" else self.bound - g

    def confident_excess(self, values: Sequence[float], level: float = 0.95) -> float:
        """The excess at the one-sided ``level`` confidence bound of the metric's mean over ``values`` (one per
        window): ``mean + t * se - bound`` for ``<=``, ``bound - (mean - t * se)`` for ``>=`` (Student's t with
        ``n - 1`` degrees of freedom). <= 0: the bound holds with that confidence; inf with fewer than 2 finite
        values (no spread to bound the mean with)."""
        x = np.asarray(values, dtype=np.float64)
        x = x[np.isfinite(x)]
        if x.size < 2:
            return math.inf
        half = t_quantile(level, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
        return self.excess({self.metric: float(x.mean()) + (half if self.sense == "<=" else -half)})


@runtime_checkable
class ConstraintHandler(Protocol):
    """Turns constraint excesses into a reward penalty ``sum_i m_i * excess_i``; ``update`` adapts the weights ``m``."""

    constraints: tuple[Constraint, ...]

    def terms(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Each constraint's penalty ``m_i * excess_i``, keyed by its metric."""
        ...

    def penalty(self, metrics: Mapping[str, float]) -> float:
        """The total penalty to subtract from the reward."""
        ...

    def update(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Adapt the weights to the metrics of a window; return them keyed by metric."""
        ...

    def state(self) -> dict[str, float]:
        """``constraint/<metric>/lambda``, ``/slack`` and ``/violated`` (1.0 or 0.0) for logging."""
        ...


class _LinearPenalty:
    """Shared bookkeeping: constraints, their weights ``m_i`` and the excesses last seen."""

    def __init__(self, constraints: Sequence[Constraint], weights: np.ndarray) -> None:
        self.constraints = tuple(constraints)
        if not self.constraints:
            raise ConfigError("`constraints` must hold at least one Constraint (got none; pass constraint=None instead)")
        for c in self.constraints:
            if not isinstance(c, Constraint):
                raise ConfigError(f"`constraints` must hold Constraint objects (got {type(c).__name__})")
        metrics = [c.metric for c in self.constraints]
        dup = sorted({m for m in metrics if metrics.count(m) > 1})
        if dup:
            raise ConfigError(f"`constraints` must name each metric once (got {dup} more than once)")
        self.multipliers = np.asarray(weights, dtype=np.float64)
        self._excess = np.full(len(self.constraints), np.nan)

    def _excesses(self, metrics: Mapping[str, float]) -> np.ndarray:
        self._excess = np.array([c.excess(metrics) for c in self.constraints])
        return self._excess

    def terms(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Each constraint's penalty ``m_i * excess_i``, keyed by its metric."""
        parts = self.multipliers * self._excesses(metrics)
        return {c.metric: float(p) for c, p in zip(self.constraints, parts)}

    def penalty(self, metrics: Mapping[str, float]) -> float:
        """``sum_i m_i * excess_i``: negative when constraints hold with slack and their multipliers are positive."""
        return float(np.dot(self.multipliers, self._excesses(metrics)))

    def state(self) -> dict[str, float]:
        """Multipliers, and the slack (``-excess``) and violation of the metrics last passed in (nan before any)."""
        out: dict[str, float] = {}
        for c, m, e in zip(self.constraints, self.multipliers, self._excess):
            out[f"constraint/{c.metric}/lambda"] = float(m)
            out[f"constraint/{c.metric}/slack"] = float(-e)
            out[f"constraint/{c.metric}/violated"] = float(e > 0) if not math.isnan(e) else math.nan
        return out

    def _as_dict(self) -> dict[str, float]:
        return {c.metric: float(m) for c, m in zip(self.constraints, self.multipliers)}


class LagrangianConstraints(_LinearPenalty):
    """Primal-dual multipliers: the reward is penalised by ``sum_i lambda_i (g_i - b_i)`` and, once per window,
    ``lambda_i <- max(0, lambda_i + lr * (g_i - b_i) / scale_i)`` (projected dual ascent).

    A multiplier grows while its constraint is violated and shrinks back to 0 once it holds with slack, so the
    policy trained on the penalised reward is pushed to the constraint boundary and not further.
    """

    def __init__(self, constraints: Sequence[Constraint], lr: float = 0.1, init: float = 0.0) -> None:
        check_range("lagrangian.lr", lr, 0, low_inclusive=False)
        check_range("lagrangian.init", init, 0)
        super().__init__(constraints, np.full(len(constraints), float(init)))
        self.lr = float(lr)
        self._scale = np.array([c.scale for c in self.constraints])

    def update(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """One dual ascent step on the window's metrics; returns the new multipliers keyed by metric."""
        step = self.lr * self._excesses(metrics) / self._scale
        self.multipliers = np.maximum(0.0, self.multipliers + step)
        return self._as_dict()


class WeightedScalarisation(_LinearPenalty):
    """The alternative to primal-dual: fixed weights ``w_i`` on the same terms, ``penalty = sum_i w_i (g_i - b_i)``.

    ``update`` changes nothing: whether the constraints end up satisfied depends on choosing the weights well.
    """

    def __init__(self, constraints: Sequence[Constraint], weights: float | Sequence[float] = 1.0) -> None:
        n = len(constraints)
        w = [weights] * n if isinstance(weights, (int, float)) else list(weights)
        if len(w) != n:
            raise ConfigError(f"`weights` must have one weight per constraint (got {len(w)} weights for {n} constraints)")
        for c, wi in zip(constraints, w):
            check_range(f"weights[{getattr(c, 'metric', c)}]", wi, 0)
        super().__init__(constraints, np.array([float(wi) for wi in w], dtype=np.float64))

    def update(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Record the metrics for :meth:`state`; the weights stay fixed."""
        self._excesses(metrics)
        return self._as_dict()
