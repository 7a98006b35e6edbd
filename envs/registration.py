"""Gymnasium ids of the simulator, all under the ``agentic-rs`` namespace."""

from __future__ import annotations

import gymnasium as gym

__all__ = ["ENV_IDS", "EVOLUTION_ENV_IDS", "register_envs"]

NAMESPACE = "agentic-rs"
SMALL_WORLD = {"num_items": 1_000, "num_users": 2_000, "num_topics": 8, "num_creators": 50}

# id -> (kwargs, max_episode_steps)
_SPECS: dict[str, tuple[dict, int]] = {
    # the reference setting: 10k items, 100 candidates, slates of 10
    f"{NAMESPACE}/Slate-v0": ({}, 200),
    # a small world for quick experiments and tests
    f"{NAMESPACE}/SlateSmall-v0": ({"world": SMALL_WORLD, "num_candidates": 20, "slate_size": 5}, 100),
    # non-stationary: segment-mix change on day 2, topic shock on day 4, catalog refresh on day 6
    f"{NAMESPACE}/SlateShift-v0": (
        {
            "world": {
                "shifts": [
                    {"kind": "segment_mix", "day": 2, "request_mix": {"new": 0.6, "casual": 0.3, "heavy": 0.1}},
                    {"kind": "topic_shock", "day": 4, "topic": 0, "strength": 1.0},
                    {"kind": "catalog_refresh", "day": 6, "fraction": 0.5},
                ]
            }
        },
        200,
    ),
}
ENV_IDS = tuple(_SPECS)  # the slate envs (single and native vector entry points)

# the evolution env: a step deploys a config of one agent and runs a window through the whole system
# the composition env: a step wires routes, rankers and segment routing, and runs a window
_EVOLUTION_SPECS: dict[str, tuple[str, int]] = {
    f"{NAMESPACE}/Evolution-v0": ("agents.evolution.env:EvolutionEnv", 50),
    f"{NAMESPACE}/Composition-v0": ("agents.evolution.composition:CompositionEnv", 50),
}
EVOLUTION_ENV_IDS = tuple(_EVOLUTION_SPECS)


def register_envs() -> None:
    """Register every id with a single-env and a native vector entry point (idempotent)."""
    for env_id, (kwargs, max_steps) in _SPECS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="envs.slate:SlateEnv",
            vector_entry_point="envs.vector:SlateVectorEnv",
            max_episode_steps=max_steps,
            kwargs=kwargs,
        )
    for env_id, (entry_point, max_steps) in _EVOLUTION_SPECS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)
