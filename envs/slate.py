"""Single-user slate environment: one user session per episode, a slate of candidate indices per step.

The world persists across episodes (users drift, tire, churn and are replaced; items age and new ones
arrive); ``reset(seed=...)`` rebuilds it from the seed. An episode is one session of one user drawn by
the request mix; it terminates when the user leaves.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.config import WorldConfig, known_keys
from envs.reward import ResponseReward
from envs.sessions import SessionBatch, StepResult, check_obs_mode, observation_space, read_only
from envs.validation import check_action, check_choice
from envs.world import World

__all__ = ["SlateEnv", "make_reward", "make_world_config", "render_step"]

RENDER_MODES = ["ansi"]


def make_world_config(world: WorldConfig | dict[str, Any] | None) -> WorldConfig:
    if world is None:
        return WorldConfig()
    if isinstance(world, WorldConfig):
        return world
    return WorldConfig(**known_keys("world", world, WorldConfig))


def make_reward(reward: ResponseReward | dict[str, float] | None) -> ResponseReward:
    if reward is None:
        return ResponseReward()
    if isinstance(reward, ResponseReward):
        return reward
    return ResponseReward(**known_keys("reward", reward, ResponseReward))


class SlateEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Recommend a slate of ``slate_size`` items out of ``num_candidates`` to one user per step.

    Observation: ``{"user": (U,), "candidates": (C, F)}`` float32 (observable features only); with
    ``obs_mode="ids"``, ``{"user": (U,), "candidate_ids": (C,) int64}`` item ids whose feature rows a policy gathers
    from :attr:`catalog_features` (the catalog's current ``(num_items, F)`` table, read-only), as a ranker reads
    a feature store: ``catalog_features[obs["candidate_ids"]]`` equals the dense ``obs["candidates"]``.
    Action: ``MultiDiscrete([C] * K)``: candidate indices by position (a repeated index shows nothing).
    Reward: :class:`rewards.ResponseReward` of the user's response (default: clicks).
    ``info``: the response per item and the true user state, for diagnostics only.
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 4}

    def __init__(
        self,
        world: WorldConfig | dict[str, Any] | None = None,
        num_candidates: int = 100,
        slate_size: int = 10,
        reward: ResponseReward | dict[str, float] | None = None,
        render_mode: str | None = None,
        obs_mode: str = "dense",
    ) -> None:
        self.obs_mode = check_obs_mode(obs_mode)
        self.world_cfg = make_world_config(world)
        self.reward_fn = make_reward(reward)
        if render_mode is not None:
            check_choice("render_mode", render_mode, RENDER_MODES)
        self.render_mode = render_mode
        # a throwaway world validates the sizes now; reset() builds the seeded one
        self._batch = SessionBatch(
            World(self.world_cfg, seed=0), 1, num_candidates, slate_size, self.reward_fn, obs_mode=self.obs_mode
        )
        self.num_candidates = num_candidates
        self.slate_size = slate_size
        self.observation_space = observation_space(self.world_cfg, num_candidates, self.obs_mode)
        self.action_space = spaces.MultiDiscrete(np.full(slate_size, num_candidates, dtype=np.int64))
        self._world: World | None = None
        self._last: StepResult | None = None
        self._obs: dict[str, np.ndarray] | None = None

    @property
    def world(self) -> World:
        if self._world is None:
            raise gym.error.ResetNeeded("call reset() before using the environment")
        return self._world

    @property
    def catalog_features(self) -> np.ndarray:
        """The catalog's current item feature table ``(num_items, F)`` float32, rows by item id, columns as in
        ``obs["candidates"]``: a read-only view of the world's live array, so it follows every refresh (freshness
        at day boundaries, expired and refreshed items); a seeded ``reset`` builds a new world: read it again then."""
        return read_only(self.world.catalog.features)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None or self._world is None:
            world_seed = int(self.np_random.integers(2**63))
            self._world = World(self.world_cfg, seed=world_seed)
            self._batch = SessionBatch(
                self._world, 1, self.num_candidates, self.slate_size, self.reward_fn, obs_mode=self.obs_mode
            )
        else:
            self._world.tick()
        self._batch.start(np.array([0]))
        self._last = None
        obs = self._single(self._batch.observe())
        self._obs = obs
        user = int(self._batch.users[0])
        pop = self.world.users
        info = {"user_id": user, "segment": int(pop.segment[user]), "day": float(self.world.now)}
        return obs, info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        action = check_action(self.action_space, action, meaning="candidate indices by slate position")
        result = self._batch.serve(np.array([0]), action[None, :])
        self._last = result
        self.world.tick()
        obs = self._single(self._batch.observe())
        self._obs = obs
        terminated = bool(result.terminated[0])
        info = {k: v[0] for k, v in result.diagnostics.items()}
        if terminated:
            info["returned"] = bool(result.ended.returned[0])
            info["churned"] = bool(result.ended.churned[0])
            info["session_steps"] = int(result.ended.session_steps[0])
            self._obs = None  # the session is over
        return obs, float(result.reward[0]), terminated, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return render_step(self.world, self._batch, self._last, 0)

    @staticmethod
    def _single(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v[0].copy() for k, v in obs.items()}


def render_step(world: World, batch: SessionBatch, result: StepResult | None, row: int) -> str:
    """ANSI text of one slot: the user, and the last slate with the response per position."""
    user = int(batch.users[batch_slot(batch, result, row)])
    pop, cat = world.users, world.catalog
    seg = pop.table.names[pop.segment[user]]
    lines = [
        f"day {world.now:.2f} | user {user} ({seg}) | history {pop.history[user]} | "
        f"session step {pop.session_steps[user]} | satisfaction {pop.satisfaction[user]:+.2f}"
    ]
    if result is None:
        lines.append("(no slate shown yet)")
        return "\n".join(lines)
    lines.append(" pos   item topic quality  fresh   risk  p(click) click dwell(s) like")
    d = cat.embedding.shape[1]
    probs = result.response.choice_prob[row]
    for k, item in enumerate(result.slate[row]):
        f = cat.features[item]
        lines.append(
            f"{k:4d} {item:6d} {cat.topic[item]:5d} {f[d]:7.2f} {f[d + 1]:6.2f} {f[d + 3]:6.2f} "
            f"{probs[k + 1]:9.3f} {'*' if result.response.click[row, k] else ' ':>5} "
            f"{result.response.dwell[row, k]:8.1f} {'+' if result.response.like[row, k] else ' ':>4}"
        )
    lines.append(f"no click p={probs[0]:.3f} | reward {result.reward[row]:.3f} | exit {bool(result.response.exit[row])}")
    return "\n".join(lines)


def batch_slot(batch: SessionBatch, result: StepResult | None, row: int) -> int:
    return int(result.slots[row]) if result is not None else row
