"""A Stable Baselines3 ``VecEnv`` over a Gymnasium vector env, such as the native :class:`envs.SlateVectorEnv`.

SB3 has no Gymnasium ``VectorEnv`` support, and the two disagree on autoreset. Gymnasium's vector envs
(``SlateVectorEnv`` included) reset a finished sub-env on the *next* ``step``, whose action for it is
ignored and whose reward for it is 0. SB3 expects the reset in the *same* step: when ``dones[i]``, the
returned ``obs[i]`` is already the first observation of a new episode, and ``infos[i]`` holds the last
observation of the ended one under ``"terminal_observation"`` (and ``"TimeLimit.truncated"``).

:class:`SB3VecEnv` gets there with Gymnasium's partial reset: after a step in which some sub-envs
finished, it calls ``reset(options={"reset_mask": dones})``, which starts new episodes in exactly those
sub-envs and cancels their pending next-step autoreset. No step with an ignored action ever happens, so
every transition SB3 sees is one in which its action was applied.

Example::

    import gymnasium as gym
    from stable_baselines3 import PPO
    from envs.sb3_vec import SB3VecEnv

    venv = SB3VecEnv(gym.make_vec("agentic-rs/SlateSmall-v0", num_envs=16, vectorization_mode="vector_entry_point"))
    PPO("MultiInputPolicy", venv, seed=0).learn(10_000)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

__all__ = ["SB3VecEnv"]

SUPPORTED_AUTORESET_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED)


def _copy_obs(obs: Any) -> Any:
    """A copy of a batched observation (a dict of arrays or an array)."""
    if isinstance(obs, dict):
        return {key: np.array(value, copy=True) for key, value in obs.items()}
    return np.array(obs, copy=True)


def _row(obs: Any, i: int) -> Any:
    """The observation of sub-env ``i``, copied out of a batched observation."""
    if isinstance(obs, dict):
        return {key: np.array(value[i], copy=True) for key, value in obs.items()}
    return np.array(obs[i], copy=True)


def _set_rows(obs: Any, mask: np.ndarray, new: Any) -> None:
    """Write the rows ``mask`` of the batched observation ``new`` into ``obs`` in place."""
    if isinstance(obs, dict):
        for key, value in obs.items():
            value[mask] = new[key][mask]
    else:
        obs[mask] = new[mask]


def _unbatch_info(info: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """Gymnasium's batched ``info`` (arrays with ``_key`` masks, nested dicts alike) as one dict per sub-env."""
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, value in info.items():
        if key.startswith("_") and key[1:] in info:
            continue  # a mask, applied below
        mask = info.get(f"_{key}")
        rows = range(num_envs) if mask is None else np.flatnonzero(mask).tolist()
        # one copy per key: the rows handed out are views of it, owned by the infos alone
        values = _unbatch_info(value, num_envs) if isinstance(value, dict) else list(np.array(value, copy=True))
        for i in rows:
            out[i][key] = values[i]
    return out


class SB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` (same-step autoreset, ``terminal_observation``) over a Gymnasium ``VectorEnv``.

    ``env`` must use next-step autoreset or none (``metadata["autoreset_mode"]``) and support partial
    resets through ``reset(options={"reset_mask": mask})``, as :class:`envs.SlateVectorEnv` and
    Gymnasium's ``SyncVectorEnv`` / ``AsyncVectorEnv`` do.

    Seeding follows SB3: ``seed(s)`` (PPO's ``seed=`` calls it) takes effect at the next ``reset()``,
    which calls ``env.reset(seed=s)``; Gymnasium's vector envs derive the sub-envs' seeds from it
    (``SlateVectorEnv`` builds its one shared world from it). ``reset`` options set through
    ``set_options`` must be the same for every sub-env.

    The sub-envs of a native vector env are slots of one object, not separate envs: ``get_attr`` and
    ``env_method`` read or call the wrapped vector env once and repeat the result for each index asked.
    """

    def __init__(self, env: VectorEnv) -> None:
        if not isinstance(env, VectorEnv):
            raise TypeError(
                f"`env` must be a gymnasium.vector.VectorEnv, e.g. gym.make_vec(..., vectorization_mode="
                f"'vector_entry_point') (got {type(env).__name__}); wrap single gym.Envs with SB3's DummyVecEnv"
            )
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode not in SUPPORTED_AUTORESET_MODES:
            raise ValueError(
                f"`env.metadata['autoreset_mode']` must be one of {[m.value for m in SUPPORTED_AUTORESET_MODES]} "
                f"(got {getattr(mode, 'value', mode)!r}); make the vector env with "
                "autoreset_mode=AutoresetMode.NEXT_STEP"
            )
        self.env = env  # before VecEnv.__init__, which reads render_mode through get_attr
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self.metadata = {**env.metadata, "render_modes": self.metadata["render_modes"]}
        self._actions: np.ndarray | None = None

    # ------------------------------------------------------------------ the VecEnv API
    def reset(self) -> VecEnvObs:
        options = self._options[0]
        if any(o != options for o in self._options):
            raise ValueError(
                f"`options` must be the same for every sub-env: they share one reset call (got {self._options})"
            )
        obs, info = self.env.reset(seed=self._seeds[0], options=dict(options) if options else None)
        self.reset_infos = _unbatch_info(info, self.num_envs)
        self._reset_seeds()  # seeds and options are used once, as in SB3's own VecEnvs
        self._reset_options()
        return _copy_obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("call step_async(actions) before step_wait()")
        actions, self._actions = self._actions, None
        obs, reward, terminated, truncated, info = self.env.step(actions)
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        dones = terminated | truncated
        obs = _copy_obs(obs)
        infos = _unbatch_info(info, self.num_envs)
        for i in range(self.num_envs):
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        if dones.any():
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = _row(obs, int(i))
            # same-step autoreset: start the next episodes now, so no step ever ignores an action
            reset_obs, reset_info = self.env.reset(options={"reset_mask": dones.copy()})
            _set_rows(obs, dones, reset_obs)
            for i, row in enumerate(_unbatch_info(reset_info, self.num_envs)):
                if dones[i]:
                    self.reset_infos[i] = row
        return obs, np.asarray(reward, np.float32).copy(), dones, infos

    def close(self) -> None:
        self.env.close()

    # ------------------------------------------------------------------ attributes and methods
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.env, attr_name, value)  # one object holds every sub-env

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]  # sub-envs of a vector env are not gym.Env objects

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
