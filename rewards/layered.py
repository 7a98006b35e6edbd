"""The layered reward: each agent's inner metric mixed with the platform's outer objective by role, minus constraints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from envs.log import InteractionLog
from envs.validation import ConfigError, check_choice, check_probability, check_range
from rewards.constraints import ConstraintHandler
from rewards.inner import INNER_METRICS, ROLES, inner_metrics
from rewards.outer import OUTCOMES, OUTER_KEYS, outcome_key, outer_metrics

__all__ = [
    "DEFAULT_INNER_METRIC",
    "DEFAULT_INNER_SIGN",
    "DEFAULT_INNER_WEIGHT",
    "LayeredReward",
    "LayeredRewardConfig",
    "layered_reward",
]

# sub-agents are judged mostly on their own metric, coordination agents mostly on the platform's
DEFAULT_INNER_WEIGHT: dict[str, float] = {
    "recall": 0.8, "fusion": 0.6, "ranking": 0.8, "rerank": 0.6, "router": 0.2, "experiment": 0.2, "system": 0.0,
}
DEFAULT_INNER_METRIC: dict[str, str | None] = {
    "recall": "recall_at_k",
    "fusion": "ece",  # fusion calibrates scores
    "ranking": "auc",
    "rerank": "intra_list_diversity",
    "router": "mean_segment_clicks_per_request",
    "experiment": "regret",  # clicks per request lost to traffic on worse arms
    "system": None,  # the system's reward is the outer one
}
DEFAULT_INNER_SIGN: dict[str, float] = {  # +1: higher is better; -1: lower is better
    "recall": 1.0, "fusion": -1.0, "ranking": 1.0, "rerank": 1.0, "router": 1.0, "experiment": -1.0, "system": 1.0,
}
# data-dependent metric names (segment and pipeline ids) allowed besides INNER_METRICS
_DYNAMIC = {"router": ("segment/",), "experiment": ("pipeline/",)}


def _merged(key: str, given: dict, defaults: dict) -> dict:
    for role in given:
        check_choice(f"{key} key", role, ROLES)
    return {**defaults, **given}


@dataclass
class LayeredRewardConfig:
    """Per role: the weight of the inner term, the inner metric and its sign; the outer objective and extra terms.

    ``reward = w * sign * inner / s_in + (1 - w) * (outer + sum_k c_k * outer_k) / s_out - penalty`` (scales
    ``inner_scale[role]``, ``outer_scale``: 1 unless an experiment states a normalisation), the outer metrics in their
    expected version by default (``outcome``). Role dicts may name only the
    roles they change; the others keep the defaults (:data:`DEFAULT_INNER_WEIGHT` and friends).

    Costs enter as extra outer terms with a negative weight, e.g. ``outer_terms={"outer/cost/serving_per_request":
    -0.01}`` charges 0.01 per unit of serving cost per request (~10 units with 10-item slates of mean cost 1); as a
    constraint instead, ``Constraint("outer/cost/serving_per_request", bound)`` (:mod:`rewards.constraints`).
    """

    inner_weight: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_INNER_WEIGHT))
    inner_metric: dict[str, str | None] = field(default_factory=lambda: dict(DEFAULT_INNER_METRIC))
    inner_sign: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_INNER_SIGN))
    outer: str = "outer/engagement/clicks_per_request"
    outer_terms: dict[str, float] = field(default_factory=dict)  # extra outer metric -> signed weight
    # Normalisation (stated, per experiment): the inner term of a role is divided by ``inner_scale[role]`` and the
    # outer one by ``outer_scale`` before they are mixed, e.g. each by its spread across the decision space, so that
    # the weight ``w`` means what it says (a term that moves 0.35 across configs would otherwise outvote one that
    # moves 0.05 at any w). 1 = raw units (the default).
    inner_scale: dict[str, float] = field(default_factory=dict)
    outer_scale: float = 1.0
    # judge by the expected outcomes (the choice model's probabilities: no sampling noise) or the realised ones; a
    # metric without sampling noise (exposure, violations, cost) has one version only. Both are always logged.
    outcome: str = "expected"

    def __post_init__(self) -> None:
        self.inner_weight = _merged("inner_weight", dict(self.inner_weight), DEFAULT_INNER_WEIGHT)
        self.inner_metric = _merged("inner_metric", dict(self.inner_metric), DEFAULT_INNER_METRIC)
        self.inner_sign = _merged("inner_sign", dict(self.inner_sign), DEFAULT_INNER_SIGN)
        self.outer_terms = dict(self.outer_terms)
        self.inner_scale = _merged("inner_scale", dict(self.inner_scale), dict.fromkeys(ROLES, 1.0))
        for role, scale in self.inner_scale.items():
            check_range(f"inner_scale.{role}", scale, 0.0, low_inclusive=False)
        check_range("outer_scale", self.outer_scale, 0.0, low_inclusive=False)
        for role in ROLES:
            w = check_probability(f"inner_weight.{role}", self.inner_weight[role])
            metric = self.inner_metric[role]
            if metric is None:
                if w > 0:
                    raise ConfigError(
                        f"`inner_metric.{role}` must name a metric when `inner_weight.{role}` > 0 (got None with weight {w})"
                    )
            elif not INNER_METRICS[role]:
                raise ConfigError(f"`inner_metric.{role}` must be None: role {role!r} has no inner metrics (got {metric!r})")
            elif not metric.startswith(_DYNAMIC.get(role, ())):
                check_choice(f"inner_metric.{role}", metric, INNER_METRICS[role])
            sign = self.inner_sign[role]
            if sign not in (1.0, -1.0) or isinstance(sign, bool):
                raise ConfigError(f"`inner_sign.{role}` must be 1 (higher is better) or -1 (lower is better) (got {sign!r})")
        check_choice("outcome", self.outcome, OUTCOMES)
        check_choice("outer", self.outer, OUTER_KEYS)
        for key, c in self.outer_terms.items():
            check_choice("outer_terms key", key, OUTER_KEYS)
            check_range(f"outer_terms[{key}]", c)
            if not math.isfinite(c):
                raise ConfigError(f"`outer_terms[{key}]` must be finite (got {c})")


@dataclass(frozen=True)
class LayeredReward:
    """The scalar reward of one role on one window, and every term under namespaced keys.

    ``terms`` holds ``layered/<role>/inner`` (signed inner metric), ``/outer`` (outer objective with its extra
    terms), ``/penalty`` (and ``/penalty/<metric>`` per constraint), ``/inner_weight`` and ``/total``, plus the raw
    ``inner/<role>/...`` and ``outer/...`` metrics.
    """

    role: str
    value: float
    terms: dict[str, float]

    def __float__(self) -> float:
        return self.value


def layered_reward(
    role: str,
    log: InteractionLog,
    cfg: LayeredRewardConfig | None = None,
    constraint: ConstraintHandler | None = None,
    *,
    route: int | str | None = None,
    embedding: np.ndarray | None = None,
) -> LayeredReward:
    """``w * sign * inner / s_in + (1 - w) * outer / s_out - penalty`` of ``role`` on ``log`` (see :class:`LayeredRewardConfig`).

    ``constraint`` only reads its current multipliers here; the caller steps it (``constraint.update``) once per
    window. ``route`` / ``embedding`` are passed to :func:`rewards.inner.inner_metrics` (recall / rerank). A term
    with weight 0 is left out of the sum, so a nan metric there does not reach the total; elsewhere nan propagates.
    """
    cfg = LayeredRewardConfig() if cfg is None else cfg
    check_choice("role", role, ROLES)
    inner_raw = inner_metrics(role, log, route=route, embedding=embedding)
    outer_raw = outer_metrics(log)

    w = cfg.inner_weight[role]
    metric = cfg.inner_metric[role]
    if metric is None:
        inner = 0.0
    else:
        name = f"inner/{role}/{metric}"
        if name not in inner_raw:
            check_choice(f"inner_metric.{role}", metric, [k.removeprefix(f"inner/{role}/") for k in inner_raw])
        inner = cfg.inner_sign[role] * inner_raw[name]
    judged = lambda key: outer_raw[outcome_key(key, cfg.outcome)]  # noqa: E731
    outer = judged(cfg.outer) + sum(c * judged(key) for key, c in cfg.outer_terms.items())

    prefix = f"layered/{role}"
    parts = constraint.terms(outer_raw) if constraint is not None else {}
    penalty = float(sum(parts.values()))
    inner_part = w * inner / cfg.inner_scale[role] if w > 0 else 0.0
    outer_part = (1.0 - w) * outer / cfg.outer_scale if w < 1 else 0.0
    total = inner_part + outer_part - penalty
    terms = {
        f"{prefix}/inner": float(inner),
        f"{prefix}/outer": float(outer),
        f"{prefix}/penalty": penalty,
        **{f"{prefix}/penalty/{k}": v for k, v in parts.items()},
        f"{prefix}/inner_weight": float(w),
        f"{prefix}/inner_scale": float(cfg.inner_scale[role]),
        f"{prefix}/outer_scale": float(cfg.outer_scale),
        f"{prefix}/total": float(total),
        **inner_raw,
        **outer_raw,
    }
    return LayeredReward(role, float(total), terms)
