"""Native numpy vector slate environment: ``num_envs`` concurrent user sessions over one shared world.

Follows Gymnasium's ``VectorEnv`` conventions: ``single_observation_space`` / ``single_action_space``
batched with ``batch_space``, next-step autoreset (a sub-env that terminated or truncated is reset by
the following ``step``, whose action for it is ignored and whose reward for it is 0), and ``info``
entries paired with boolean ``_key`` masks. All sub-envs share one world (one catalog, one
population), as concurrent requests on a real platform do, so sub-envs are not independent copies.
``reset(options={"reset_mask": mask})`` is Gymnasium's partial reset: new sessions start in the masked
slots only (a pending autoreset there is cancelled), the others keep their sessions and observations.
``obs_mode="ids"`` observes candidate item ids instead of their feature rows (see :class:`envs.SlateEnv`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.config import WorldConfig
from envs.reward import ResponseReward
from envs.sessions import SessionBatch, StepResult, check_obs_mode, observation_space, read_only
from envs.slate import RENDER_MODES, make_reward, make_world_config, render_step
from envs.validation import check_action, check_choice, check_int
from envs.world import World

__all__ = ["SlateVectorEnv"]


class SlateVectorEnv(VectorEnv):
    """``num_envs`` slate sessions stepped together without a Python loop over users."""

    metadata = {"render_modes": RENDER_MODES, "render_fps": 4, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 64,
        world: WorldConfig | dict[str, Any] | None = None,
        num_candidates: int = 100,
        slate_size: int = 10,
        reward: ResponseReward | dict[str, float] | None = None,
        max_episode_steps: int | None = 200,
        render_mode: str | None = None,
        obs_mode: str = "dense",
    ) -> None:
        check_int("num_envs", num_envs, 1)
        self.obs_mode = check_obs_mode(obs_mode)
        if render_mode is not None:
            check_choice("render_mode", render_mode, RENDER_MODES)
        self.num_envs = num_envs
        self.world_cfg = make_world_config(world)
        self.reward_fn = make_reward(reward)
        self.num_candidates = num_candidates
        self.slate_size = slate_size
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self._batch = self._new_batch(World(self.world_cfg, seed=0))  # validates sizes now
        self.single_observation_space = observation_space(self.world_cfg, num_candidates, self.obs_mode)
        self.single_action_space = spaces.MultiDiscrete(np.full(slate_size, num_candidates, dtype=np.int64))
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._world: World | None = None
        self._done = np.zeros(num_envs, bool)
        self._last: StepResult | None = None

    def _new_batch(self, world: World) -> SessionBatch:
        return SessionBatch(
            world, self.num_envs, self.num_candidates, self.slate_size, self.reward_fn, self.max_episode_steps,
            obs_mode=self.obs_mode,
        )

    @property
    def world(self) -> World:
        if self._world is None:
            raise RuntimeError("call reset() before using the environment")
        return self._world

    @property
    def catalog_features(self) -> np.ndarray:
        """The shared catalog's current item feature table ``(num_items, F)`` float32, read-only: with
        ``obs_mode="ids"``, ``catalog_features[obs["candidate_ids"]]`` is the dense ``obs["candidates"]``. A view of
        the world's live array: it follows every refresh; a seeded ``reset`` builds a new world: read it again then."""
        return read_only(self.world.catalog.features)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if options is not None and "reset_mask" in options:
            return self._reset_masked(options["reset_mask"], seed)
        super().reset(seed=seed)
        if seed is not None or self._world is None:
            self._world = World(self.world_cfg, seed=int(self.np_random.integers(2**63)))
            self._batch = self._new_batch(self._world)
        self._batch.start(np.arange(self.num_envs))
        self._done[:] = False
        self._last = None
        obs = self._batch.observe()
        return obs, self._start_info(np.ones(self.num_envs, bool))

    def _reset_masked(self, mask: Any, seed: int | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start new sessions in the slots where ``mask`` is True; draw candidates for those slots only."""
        n, batch = self.num_envs, self._batch
        if seed is not None:
            raise ValueError(
                "`seed` must be None with `options['reset_mask']`: the sub-envs share one world, which only a "
                f"full reset reseeds (got seed={seed})"
            )
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            got = f"{type(mask).__name__} of {mask.dtype}" if isinstance(mask, np.ndarray) else type(mask).__name__
            raise TypeError(f"`options['reset_mask']` must be a numpy array of dtype bool (got {got})")
        if mask.shape != (n,):
            raise ValueError(f"`options['reset_mask']` must have shape (num_envs,) = ({n},) (got {mask.shape})")
        if not mask.any():
            raise ValueError("`options['reset_mask']` must be True for at least one sub-env (got all False)")
        _ = self.world  # raises if reset() was never called
        slots = np.flatnonzero(mask)
        batch.start(slots)
        self._done[slots] = False
        return batch.observe(slots), self._start_info(mask)

    def _start_info(self, mask: np.ndarray) -> dict[str, Any]:
        """The ``info`` of a (partial) reset: who started a session in the slots of ``mask``, and when."""
        users = self._batch.users
        info = {
            "user_id": np.where(mask, users, 0),
            "segment": np.where(mask, self.world.users.segment[users], 0).astype(np.int64),
            "day": np.where(mask, self.world.now, 0.0),
        }
        info.update({f"_{k}": mask.copy() for k in list(info)})
        return info

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n, batch = self.num_envs, self._batch
        actions = check_action(
            self.action_space, actions, key="actions", meaning="candidate indices, one row of slate_size per sub-env"
        )
        reset_slots = np.flatnonzero(self._done)
        active = np.flatnonzero(~self._done)
        reward = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        info: dict[str, Any] = {}
        result = batch.serve(active, actions[active]) if len(active) else None
        if result is not None:
            reward[active] = result.reward
            terminated[active] = result.terminated
            truncated[active] = result.truncated
            mask = ~self._done
            for key, value in result.diagnostics.items():
                if len(active) < n:
                    full = np.zeros((n, *value.shape[1:]), value.dtype)
                    full[active] = value
                    value = full
                info[key], info[f"_{key}"] = value, mask
            ended = active[result.terminated | result.truncated]
            if len(ended):
                end_mask = np.zeros(n, bool)
                end_mask[ended] = True
                for key in ("returned", "churned", "session_steps"):
                    value = getattr(result.ended, key)
                    full = np.zeros(n, value.dtype)
                    full[ended] = value
                    info[key], info[f"_{key}"] = full, end_mask
        batch.start(reset_slots)
        self._last = result
        self.world.tick()
        obs = batch.observe()
        self._done = terminated | truncated
        return obs, reward, terminated, truncated, info

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode != "ansi":
            return None
        last = self._last
        if last is None:
            return (render_step(self.world, self._batch, None, 0),)
        return tuple(render_step(self.world, self._batch, last, r) for r in range(len(last.slots)))
