"""Every registered id passes Gymnasium's and SB3's env checkers (in both observation modes) and follows the
vector-env contract."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs

# SB3 recommends flattening any observation that is neither an image nor a vector; the (C, F) candidate
# matrix is 2-D on purpose (one row per candidate), so this one warning is expected.
SB3_CANDIDATES_WARNING = "Your observation candidates has an unconventional shape"

NUM_ENVS = 8
OBS_MODES = ("dense", "ids")  # the slate envs' observation modes (``obs_mode="ids"``: tests/envs/test_obs_ids.py)


def _session_step_column(cfg: envs.WorldConfig) -> int:
    # obs["user"] = segment one-hot (S) | log history (1) | profile (D) | session steps / 100 | session CTR
    return len(cfg.segments) + 1 + cfg.embedding_dim


@pytest.mark.parametrize("obs_mode", OBS_MODES)
@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_gymnasium_env_checker(env_id: str, obs_mode: str) -> None:
    env = gym.make(env_id, obs_mode=obs_mode).unwrapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("obs_mode", OBS_MODES)
@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_sb3_env_checker(env_id: str, obs_mode: str) -> None:
    env = gym.make(env_id, obs_mode=obs_mode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env)
    # ids are 1-D: in that mode not even the dense mode's 2-D candidates warning is expected
    unexpected = [str(w.message) for w in caught if obs_mode == "ids" or SB3_CANDIDATES_WARNING not in str(w.message)]
    assert unexpected == []


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_vector_env_contract(env_id: str) -> None:
    env = gym.make_vec(env_id, num_envs=NUM_ENVS, vectorization_mode="vector_entry_point")
    base = env.unwrapped
    assert isinstance(base, envs.SlateVectorEnv)
    assert env.observation_space == batch_space(env.single_observation_space, NUM_ENVS)
    assert env.action_space == batch_space(env.single_action_space, NUM_ENVS)
    assert env.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    col = _session_step_column(base.world_cfg)

    obs, info = env.reset(seed=0)
    env.action_space.seed(0)
    assert obs in env.observation_space
    np.testing.assert_array_equal(obs["user"][:, col], 0.0)  # every session starts at step 0
    np.testing.assert_array_equal(info["user_id"], base._batch.users)

    steps_in_episode = np.zeros(NUM_ENVS, np.int64)  # steps served since the slot's last reset
    done_prev = np.zeros(NUM_ENVS, bool)
    users_prev = base._batch.users.copy()
    resets = changed_user = ended_total = 0
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs in env.observation_space
        assert reward.dtype == np.float32 and reward.shape == (NUM_ENVS,)
        assert terminated.shape == truncated.shape == (NUM_ENVS,)
        assert not (terminated & truncated).any()

        # next-step autoreset: a slot done on the previous step is reset now, with nothing served
        np.testing.assert_array_equal(reward[done_prev], 0.0)
        assert not terminated[done_prev].any() and not truncated[done_prev].any()
        if "_click" in info:
            np.testing.assert_array_equal(info["_click"], ~done_prev)
        else:
            assert done_prev.all()
        users_now = base._batch.users
        ended = terminated | truncated
        # slots whose episode goes on (or restarted) hold a user in session; ended ones were closed
        in_session = base.world.users.in_session[users_now]
        np.testing.assert_array_equal(in_session[~ended], True)
        np.testing.assert_array_equal(obs["user"][done_prev, col], 0.0)  # a new session restarted
        resets += int(done_prev.sum())
        changed_user += int((users_now[done_prev] != users_prev[done_prev]).sum())
        if "user_id" in info:
            np.testing.assert_array_equal(info["user_id"][~done_prev], users_prev[~done_prev])

        steps_in_episode[done_prev] = 0
        steps_in_episode[~done_prev] += 1
        # sessions still running show their own step count (100 steps or more read as 1)
        running = ~ended & ~done_prev
        np.testing.assert_allclose(obs["user"][running, col], np.minimum(steps_in_episode[running], 100) / 100)

        # session-end diagnostics are present, with masks, exactly where an episode ended
        for key in ("returned", "churned", "session_steps"):
            if ended.any():
                np.testing.assert_array_equal(info[f"_{key}"], ended)
            else:
                assert key not in info and f"_{key}" not in info
        if ended.any():
            np.testing.assert_array_equal(info["session_steps"][ended], steps_in_episode[ended])
            assert not (info["churned"] & info["returned"]).any()  # only users who did not return can churn
            ended_total += int(ended.sum())

        done_prev = ended
        users_prev = users_now.copy()

    assert ended_total > 0 and resets > 0  # the run exercised autoreset
    # a reset draws a new request; the same user coming straight back is rare (one user of thousands)
    assert changed_user >= 0.9 * resets


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_vector_env_truncates_at_max_episode_steps(env_id: str) -> None:
    env = gym.make_vec(env_id, num_envs=NUM_ENVS, vectorization_mode="vector_entry_point", max_episode_steps=3)
    env.reset(seed=1)
    env.action_space.seed(1)
    length = np.zeros(NUM_ENVS, np.int64)
    done_prev = np.zeros(NUM_ENVS, bool)
    truncations = 0
    for _ in range(100):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        length[done_prev] = 0
        length[~done_prev] += 1
        assert length.max() <= 3
        # truncation happens exactly at the third step of a session the user did not leave
        np.testing.assert_array_equal(truncated, ~terminated & ~done_prev & (length == 3))
        if truncated.any():
            np.testing.assert_array_equal(info["session_steps"][truncated], 3)
        truncations += int(truncated.sum())
        done_prev = terminated | truncated
    assert truncations > 0
