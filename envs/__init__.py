"""The simulated world (items, users, choice, shifts) and the Gymnasium environments over it."""

from envs.config import ItemConfig, SegmentConfig, ShiftConfig, WorldConfig
from envs.registration import ENV_IDS, EVOLUTION_ENV_IDS, register_envs
from envs.slate import SlateEnv
from envs.validation import ConfigError
from envs.vector import SlateVectorEnv
from envs.world import Response, SessionEnd, World

register_envs()

__all__ = [
    "ENV_IDS",
    "EVOLUTION_ENV_IDS",
    "ConfigError",
    "ItemConfig",
    "Response",
    "SegmentConfig",
    "SessionEnd",
    "ShiftConfig",
    "SlateEnv",
    "SlateVectorEnv",
    "World",
    "WorldConfig",
    "register_envs",
]
