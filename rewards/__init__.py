"""Rewards: response-level rewards now; inner metrics, outer objectives and their layering next."""

from rewards.response import ResponseReward

__all__ = ["ResponseReward"]
