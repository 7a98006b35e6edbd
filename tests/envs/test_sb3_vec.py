"""SB3VecEnv: the SB3 VecEnv contract over the native vector env, no ignored-action step, PPO learning on it."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv, VectorWrapper
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize

from envs import SegmentConfig, SlateVectorEnv
from envs.registration import SMALL_WORLD
from envs.sb3_vec import SB3VecEnv
from envs.sessions import ObservationLayout

ENV_ID = "agentic-rs/SlateSmall-v0"
NUM_ENVS = 6
C, K = 20, 5  # SlateSmall-v0's candidates and slate size


class Recorder(VectorWrapper):
    """Keeps what the native env returned on its last step and its last reset (partial resets included)."""

    def __init__(self, env: VectorEnv) -> None:
        super().__init__(env)
        self.step_out: tuple[Any, ...] | None = None
        self.reset_obs: dict[str, np.ndarray] | None = None
        self.partial_resets = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.reset_obs = {k: v.copy() for k, v in obs.items()}
        self.partial_resets += int(options is not None and "reset_mask" in options)
        return obs, info

    def step(self, actions: np.ndarray) -> tuple[Any, ...]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        copied = {k: v.copy() for k, v in obs.items()}
        self.step_out = (copied, reward.copy(), terminated.copy(), truncated.copy(), info)
        return obs, reward, terminated, truncated, info


def native(num_envs: int = NUM_ENVS, **kwargs: Any) -> SlateVectorEnv:
    return gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


def adapter(seed: int, num_envs: int = NUM_ENVS, **kwargs: Any) -> SB3VecEnv:
    venv = SB3VecEnv(native(num_envs, **kwargs))
    venv.seed(seed)
    return venv


def random_actions(rng: np.random.Generator, num_envs: int = NUM_ENVS, c: int = C, k: int = K) -> np.ndarray:
    return rng.integers(0, c, (num_envs, k))


def session_step_column(env: SlateVectorEnv) -> int:
    return ObservationLayout.of(env.world_cfg).user_session_steps


# --------------------------------------------------------------------------- the VecEnv contract


def test_spaces_and_reset_follow_the_native_env() -> None:
    base = native()
    venv = SB3VecEnv(base)
    assert venv.num_envs == NUM_ENVS
    assert venv.observation_space == base.single_observation_space
    assert venv.action_space == base.single_action_space
    venv.seed(0)
    obs = venv.reset()
    assert set(obs) == {"user", "candidates"}
    for key, space in base.single_observation_space.spaces.items():
        assert obs[key].shape == (NUM_ENVS, *space.shape) and obs[key].dtype == space.dtype
        assert all(row in space for row in obs[key])
    np.testing.assert_array_equal(obs["user"][:, session_step_column(base)], 0.0)  # every session at step 0
    assert [info["user_id"] for info in venv.reset_infos] == list(base._batch.users)


def test_step_returns_sb3_shapes_and_same_step_autoreset() -> None:
    """When a sub-env's episode ends: its last native observation is `terminal_observation`, its obs a new episode's."""
    rec = Recorder(native(max_episode_steps=4))  # short sessions: terminations and truncations both happen
    base: SlateVectorEnv = rec.unwrapped
    col = session_step_column(base)
    venv = SB3VecEnv(rec)
    venv.seed(1)
    venv.reset()
    rng = np.random.default_rng(1)
    ended = truncations = terminations = 0
    for _ in range(60):
        obs, rewards, dones, infos = venv.step(random_actions(rng))
        assert obs["user"].shape == (NUM_ENVS, base.single_observation_space["user"].shape[0])
        assert obs["candidates"].shape == (NUM_ENVS, C, base.single_observation_space["candidates"].shape[1])
        assert rewards.shape == (NUM_ENVS,) and rewards.dtype == np.float32
        assert dones.shape == (NUM_ENVS,) and dones.dtype == np.bool_
        assert isinstance(infos, list) and len(infos) == NUM_ENVS
        step_obs, step_reward, terminated, truncated, _ = rec.step_out
        np.testing.assert_array_equal(rewards, step_reward)
        np.testing.assert_array_equal(dones, terminated | truncated)
        for i in range(NUM_ENVS):
            assert infos[i]["TimeLimit.truncated"] == bool(truncated[i] and not terminated[i])
            source = rec.reset_obs if dones[i] else step_obs
            for key in obs:
                np.testing.assert_array_equal(obs[key][i], source[key][i])
            if dones[i]:
                for key in obs:  # the native env's last observation of the ended episode
                    np.testing.assert_array_equal(infos[i]["terminal_observation"][key], step_obs[key][i])
                assert obs["user"][i, col] == 0.0  # a fresh session's first observation
                assert venv.reset_infos[i]["user_id"] == base._batch.users[i]
                assert base.world.users.session_steps[base._batch.users[i]] == 0
            else:
                assert "terminal_observation" not in infos[i]
        ended += int(dones.sum())
        truncations += int((truncated & ~terminated).sum())
        terminations += int(terminated.sum())
    assert ended > 0 and truncations > 0 and terminations > 0
    assert rec.partial_resets > 0


def test_same_seed_same_trajectory_and_different_seeds_differ() -> None:
    def rollout(seed: int) -> list[Any]:
        venv = adapter(seed, max_episode_steps=5)
        out: list[Any] = [venv.reset()]
        rng = np.random.default_rng(0)  # the same actions for every seed
        for _ in range(40):
            obs, rewards, dones, infos = venv.step(random_actions(rng))
            terminal = [info["terminal_observation"] for info in infos if "terminal_observation" in info]
            out.append((obs, rewards, dones, terminal, venv.reset_infos))
        return out

    def flat(trajectory: list[Any]) -> list[np.ndarray]:
        arrays: list[np.ndarray] = []

        def walk(x: Any) -> None:
            if isinstance(x, dict):
                for key in sorted(x):
                    walk(x[key])
            elif isinstance(x, (list, tuple)):
                for item in x:
                    walk(item)
            else:
                arrays.append(np.asarray(x))

        walk(trajectory)
        return arrays

    a, b, other = flat(rollout(3)), flat(rollout(3)), flat(rollout(4))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)  # bit-identical, terminal observations and reset infos included
    assert len(a) != len(other) or any(not np.array_equal(x, y) for x, y in zip(a, other, strict=True))


# --------------------------------------------------------------------------- no ignored-action transition


def test_every_returned_transition_applied_its_action() -> None:
    """Each transition SB3 gets served the slate its action picked, and counts as one step of the native session."""
    base = native(max_episode_steps=6)
    venv = SB3VecEnv(base)
    venv.seed(2)
    venv.reset()
    rng = np.random.default_rng(2)
    length = np.zeros(NUM_ENVS, np.int64)  # transitions returned since the sub-env's episode began
    ended = 0
    for _ in range(80):
        actions = random_actions(rng)
        shown = np.take_along_axis(base._batch.candidate_ids, actions, axis=1)  # the slate each action picks
        _, rewards, dones, infos = venv.step(actions)
        length += 1
        for i in range(NUM_ENVS):
            # the slate was served: the step's diagnostics exist for this sub-env and show the chosen items
            np.testing.assert_array_equal(infos[i]["item_ids"], shown[i])
            assert rewards[i] == infos[i]["click"].sum()
            if dones[i]:  # the native session counted exactly the transitions SB3 saw
                assert infos[i]["session_steps"] == length[i]
        length[dones] = 0
        # sessions going on: the native per-slot step counter agrees with the transitions returned
        np.testing.assert_array_equal(base._batch.steps, length)
        ended += int(dones.sum())
    assert ended > 0


def test_native_env_alone_wastes_a_step_per_episode_end_and_the_adapter_does_not() -> None:
    """Stepped directly with the same seed and actions, the native env matches the adapter until the first
    episode ends; then it spends one step per ended episode ignoring the action (reward 0, nothing served)."""
    steps = 50
    direct = native(max_episode_steps=5)
    obs_d, _ = direct.reset(seed=5)
    venv = adapter(5, max_episode_steps=5)
    obs_a = venv.reset()
    rng = np.random.default_rng(5)
    actions = [random_actions(rng) for _ in range(steps)]
    for key in obs_a:
        np.testing.assert_array_equal(obs_a[key], obs_d[key])

    ignored = 0
    first_end: int | None = None
    for t in range(steps):
        obs_d, reward_d, terminated, truncated, info = direct.step(actions[t])
        served = info["_click"] if "_click" in info else np.zeros(NUM_ENVS, bool)
        ignored += int((~served).sum())
        np.testing.assert_array_equal(reward_d[~served], 0.0)
        if first_end is None:  # before any reset, the two are the same env
            obs_a, reward_a, dones, _ = venv.step(actions[t])
            np.testing.assert_array_equal(reward_a, reward_d)
            np.testing.assert_array_equal(dones, terminated | truncated)
            if dones.any():
                first_end = t
            else:
                for key in obs_a:
                    np.testing.assert_array_equal(obs_a[key], obs_d[key])
        else:
            _, _, _, infos = venv.step(actions[t])
            assert all("click" in info for info in infos)  # every sub-env served on every adapter step
    assert first_end is not None and first_end < steps - 1
    assert ignored > 0


def test_partial_reset_of_the_native_env() -> None:
    """reset(options={"reset_mask": m}) restarts the masked slots now and leaves the others as they were."""
    env = native(max_episode_steps=3)
    col = session_step_column(env)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    done = np.zeros(NUM_ENVS, bool)
    while not done.any():
        obs, _, terminated, truncated, _ = env.step(random_actions(rng))
        done = terminated | truncated
    users = env._batch.users.copy()
    new, info = env.reset(options={"reset_mask": done})
    for key in obs:
        np.testing.assert_array_equal(new[key][~done], obs[key][~done])
    np.testing.assert_array_equal(new["user"][done, col], 0.0)
    assert (env._batch.users[done] != users[done]).all()
    np.testing.assert_array_equal(info["_user_id"], done)
    np.testing.assert_array_equal(info["user_id"][done], env._batch.users[done])
    assert env.world.users.in_session[env._batch.users].all()
    _, _, _, _, info = env.step(random_actions(rng))
    np.testing.assert_array_equal(info["_click"], True)  # the pending autoreset was cancelled: all served


def test_partial_reset_errors_name_the_key() -> None:
    env = native()
    with pytest.raises(RuntimeError, match="call reset"):
        env.reset(options={"reset_mask": np.ones(NUM_ENVS, bool)})
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"`seed` must be None .*got seed=1"):
        env.reset(seed=1, options={"reset_mask": np.ones(NUM_ENVS, bool)})
    with pytest.raises(TypeError, match=r"reset_mask.*dtype bool \(got ndarray of int64\)"):
        env.reset(options={"reset_mask": np.ones(NUM_ENVS, np.int64)})
    with pytest.raises(TypeError, match=r"reset_mask.*\(got list\)"):
        env.reset(options={"reset_mask": [True] * NUM_ENVS})
    with pytest.raises(ValueError, match=r"shape \(num_envs,\) = \(6,\) \(got \(3,\)\)"):
        env.reset(options={"reset_mask": np.ones(3, bool)})
    with pytest.raises(ValueError, match="at least one"):
        env.reset(options={"reset_mask": np.zeros(NUM_ENVS, bool)})


def test_adapter_errors() -> None:
    with pytest.raises(TypeError, match=r"gymnasium.vector.VectorEnv.*got TimeLimit.*DummyVecEnv"):
        SB3VecEnv(gym.make(ENV_ID))  # type: ignore[arg-type]
    same_step = SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2, autoreset_mode=AutoresetMode.SAME_STEP)
    with pytest.raises(ValueError, match="autoreset_mode.*got 'SameStep'"):
        SB3VecEnv(same_step)
    venv = adapter(0)
    venv.set_options([{"a": 1}] + [{}] * (NUM_ENVS - 1))
    with pytest.raises(ValueError, match="`options` must be the same for every sub-env"):
        venv.reset()


def test_matches_sb3_dummy_vec_env_over_gymnasium_sync_env() -> None:
    """Over Gymnasium's SyncVectorEnv the adapter reproduces SB3's own DummyVecEnv step for step."""
    n, limit = 3, 12  # a short time limit: truncations as well as terminations
    ours = SB3VecEnv(gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="sync", max_episode_steps=limit))
    reference = DummyVecEnv([lambda: gym.make("CartPole-v1", max_episode_steps=limit) for _ in range(n)])
    ours.seed(7)
    reference.seed(7)
    np.testing.assert_array_equal(ours.reset(), reference.reset())
    rng = np.random.default_rng(7)
    dones_seen = truncated_seen = 0
    for _ in range(100):
        actions = rng.integers(0, 2, n)
        obs, rewards, dones, infos = ours.step(actions)
        obs_r, rewards_r, dones_r, infos_r = reference.step(actions)
        np.testing.assert_array_equal(obs, obs_r)
        np.testing.assert_array_equal(rewards, rewards_r)
        np.testing.assert_array_equal(dones, dones_r)
        for info, info_r in zip(infos, infos_r, strict=True):
            assert info["TimeLimit.truncated"] == info_r["TimeLimit.truncated"]
            assert ("terminal_observation" in info) == ("terminal_observation" in info_r)
            if "terminal_observation" in info:
                np.testing.assert_array_equal(info["terminal_observation"], info_r["terminal_observation"])
            truncated_seen += int(info["TimeLimit.truncated"])
        dones_seen += int(dones.sum())
    assert dones_seen > truncated_seen > 0


# --------------------------------------------------------------------------- SB3 on the adapter


def test_vec_monitor_and_vec_normalize_wrap_it() -> None:
    venv = VecNormalize(VecMonitor(adapter(0, num_envs=4, max_episode_steps=5)), norm_reward=True)
    obs = venv.reset()
    assert set(obs) == {"user", "candidates"}
    rng = np.random.default_rng(0)
    length = np.zeros(4, np.int64)
    episodes = 0
    for _ in range(30):
        obs, rewards, dones, infos = venv.step(random_actions(rng, 4))
        length += 1
        assert all(np.isfinite(v).all() for v in obs.values()) and np.isfinite(rewards).all()
        for i in np.flatnonzero(dones):
            assert infos[i]["episode"]["l"] == length[i]  # VecMonitor counted every transition of the episode
            assert set(infos[i]["terminal_observation"]) == {"user", "candidates"}
            episodes += 1
        length[dones] = 0
    assert episodes > 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # PPO runs on the wrapped adapter end to end
        PPO("MultiInputPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu").learn(64)
    finally:
        torch.set_num_threads(threads)
    venv.close()


# A world with a known optimum: one segment that cares only about quality (no affinity, popularity,
# novelty, risk or fatigue terms), so the best single-item slate is the candidate of highest quality,
# a column of obs["candidates"]. A random pick of 5 clicks about half the time, the optimum ~0.87.
QUALITY_WORLD: dict[str, Any] = {
    **SMALL_WORLD,
    "graduate_after": 0,
    "request_mix": {"new": 1.0},
    "segments": {
        "new": SegmentConfig(
            quality_sensitivity=8.0, no_click_utility=4.0, affinity_scale=0.0, novelty_sensitivity=0.0,
            popularity_sensitivity=0.0, risk_appeal=0.0, fatigue_sensitivity=0.0,
        )
    },
}
LEARN_ENVS, LEARN_C, LEARN_K = 16, 5, 1


@pytest.mark.slow
def test_ppo_learns_through_the_adapter() -> None:
    """PPO trained on the adapter beats a random policy by more than 4 standard errors of the difference."""

    def make(seed: int) -> SB3VecEnv:
        return adapter(seed, LEARN_ENVS, world=QUALITY_WORLD, num_candidates=LEARN_C, slate_size=LEARN_K)

    def per_env_reward(policy: Any, seed: int, steps: int = 100) -> np.ndarray:
        """Mean reward per step of each sub-env (the evaluation's sample units)."""
        venv = make(seed)
        obs = venv.reset()
        rng = np.random.default_rng(seed)
        total = np.zeros(LEARN_ENVS)
        for _ in range(steps):
            obs, rewards, _, _ = venv.step(policy(obs, rng))
            total += rewards
        return total / steps

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = PPO("MultiInputPolicy", make(0), n_steps=64, batch_size=256, learning_rate=1e-3, gamma=0.9,
                    seed=0, device="cpu", verbose=0)
        model.learn(total_timesteps=16_384)
    finally:
        torch.set_num_threads(threads)
    assert model.num_timesteps >= 16_384

    trained = per_env_reward(lambda obs, rng: model.predict(obs, deterministic=True)[0], seed=123)
    uniform = per_env_reward(lambda obs, rng: random_actions(rng, LEARN_ENVS, LEARN_C, LEARN_K), seed=123)
    se = np.sqrt(trained.var(ddof=1) / LEARN_ENVS + uniform.var(ddof=1) / LEARN_ENVS)
    assert trained.mean() - uniform.mean() > 4 * se, (trained.mean(), uniform.mean(), se)
