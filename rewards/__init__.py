"""Rewards: response-level rewards, inner metrics per role, outer objectives, their layering and constraints."""

# ``envs`` imports ``rewards.response``: load it first so that ``import rewards`` works on its own too
import envs  # noqa: F401  (isort: skip)
from rewards.constraints import Constraint, ConstraintHandler, LagrangianConstraints, WeightedScalarisation
from rewards.inner import INNER_METRICS, ROLES, inner_metrics
from rewards.layered import LayeredReward, LayeredRewardConfig, layered_reward
from rewards.outer import OUTER_KEYS, gini, outer_metrics
from rewards.response import ResponseReward

__all__ = [
    "INNER_METRICS",
    "OUTER_KEYS",
    "ROLES",
    "Constraint",
    "ConstraintHandler",
    "LagrangianConstraints",
    "LayeredReward",
    "LayeredRewardConfig",
    "ResponseReward",
    "WeightedScalarisation",
    "gini",
    "inner_metrics",
    "layered_reward",
    "outer_metrics",
]
