"""Rewards: inner metrics per role, outer objectives, their layering and constraints.

The response-level reward of the slate envs lives with them (``envs.reward.ResponseReward``)."""

from rewards.constraints import Constraint, ConstraintHandler, LagrangianConstraints, WeightedScalarisation
from rewards.inner import INNER_METRICS, ROLES, inner_metrics
from rewards.layered import LayeredReward, LayeredRewardConfig, layered_reward
from rewards.outer import OUTER_KEYS, gini, outer_metrics

__all__ = [
    "INNER_METRICS",
    "OUTER_KEYS",
    "ROLES",
    "Constraint",
    "ConstraintHandler",
    "LagrangianConstraints",
    "LayeredReward",
    "LayeredRewardConfig",
    "WeightedScalarisation",
    "gini",
    "inner_metrics",
    "layered_reward",
    "outer_metrics",
]
