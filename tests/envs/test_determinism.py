"""One seed gives one whole trajectory (single env, vector env, world); another seed gives another."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import envs

SINGLE_ID = "agentic-rs/SlateSmall-v0"


def _single_trajectory(seed: int, num_steps: int = 300, used_before: bool = False) -> tuple[list[Any], int]:
    """Reset with ``seed``, then step with a fixed action sequence, resetting (unseeded) after each episode.

    ``used_before``: run the env under another seed first; ``reset(seed=seed)`` must forget that run.
    """
    env = gym.make(SINGLE_ID)
    nvec = env.action_space.nvec
    if used_before:
        env.reset(seed=99)
        warmup = np.random.default_rng(5)
        for _ in range(30):
            _, _, terminated, truncated, _ = env.step(warmup.integers(0, nvec))
            if terminated or truncated:
                env.reset()
    actions = np.random.default_rng(123)  # the same action sequence for every call
    obs, info = env.reset(seed=seed)
    record: list[Any] = [("reset", obs, info)]
    episodes = 1
    for _ in range(num_steps):
        obs, reward, terminated, truncated, info = env.step(actions.integers(0, nvec))
        record.append(("step", obs, reward, terminated, truncated, info))
        if terminated or truncated:
            obs, info = env.reset()
            record.append(("reset", obs, info))
            episodes += 1
    return record, episodes


def _vector_trajectory(seed: int, num_steps: int = 50) -> list[Any]:
    env = gym.make_vec(SINGLE_ID, num_envs=16, vectorization_mode="vector_entry_point")
    actions = np.random.default_rng(123)
    nvec = env.single_action_space.nvec
    record: list[Any] = [env.reset(seed=seed)]
    for _ in range(num_steps):
        record.append(env.step(actions.integers(0, nvec, size=(env.num_envs, len(nvec)))))
    return record


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    """Recursive exact equality of nested tuples / lists / dicts of arrays and scalars."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        np.testing.assert_array_equal(a, b, err_msg=where)
        assert np.asarray(a).dtype == np.asarray(b).dtype, where


def test_single_env_same_seed_same_trajectory() -> None:
    first, episodes = _single_trajectory(seed=7)
    second, _ = _single_trajectory(seed=7, used_before=True)
    assert episodes >= 3  # the comparison spans several episodes, with unseeded resets in between
    _assert_same(first, second)


def test_single_env_different_seed_differs() -> None:
    first, _ = _single_trajectory(seed=7, num_steps=20)
    other, _ = _single_trajectory(seed=8, num_steps=20)
    _, obs, _ = first[0]
    _, other_obs, _ = other[0]
    assert not np.array_equal(obs["candidates"], other_obs["candidates"])
    assert not np.array_equal(obs["user"], other_obs["user"])


def test_vector_env_same_seed_same_trajectory() -> None:
    first = _vector_trajectory(seed=7)
    second = _vector_trajectory(seed=7)
    # the run must contain resets, so the equality also covers autoreset and the session-end infos
    assert any("_returned" in step[4] for step in first[1:])
    _assert_same(first, second)


def test_vector_env_different_seed_differs() -> None:
    first = _vector_trajectory(seed=7, num_steps=10)
    other = _vector_trajectory(seed=8, num_steps=10)
    assert not np.array_equal(first[0][0]["candidates"], other[0][0]["candidates"])
    assert not np.array_equal(first[0][1]["user_id"], other[0][1]["user_id"])
    rewards = np.stack([step[1] for step in first[1:]])
    other_rewards = np.stack([step[1] for step in other[1:]])
    assert not np.array_equal(rewards, other_rewards)


def _world_run(seed: int) -> list[Any]:
    cfg = envs.WorldConfig(
        num_items=500, num_users=300, num_topics=5, embedding_dim=4, num_creators=20, steps_per_day=5
    )
    world = envs.World(cfg, seed=seed)
    actions = np.random.default_rng(0)
    record: list[Any] = []
    users = world.new_requests(32)
    for _ in range(30):
        ids, feats = world.candidates(users, 10)
        slate = np.take_along_axis(ids, np.argsort(actions.random(ids.shape), axis=1)[:, :4], axis=1)
        response = world.respond(users, slate)
        ended = world.end_sessions(users[response.exit])
        record.append((users.copy(), ids, feats, asdict(response), asdict(ended)))
        world.tick()
        users = np.concatenate([users[~response.exit], world.new_requests(int(response.exit.sum()))])
    pop, cat = world.users, world.catalog
    record.append((pop.segment, pop.interest, pop.profile, pop.history, pop.fatigue, pop.satisfaction))
    record.append((cat.features, cat.birth, cat.violating, cat.topic, world.day))
    return record


def test_world_same_seed_same_arrays() -> None:
    first = _world_run(seed=3)
    _assert_same(first, _world_run(seed=3))
    assert first[-1][-1] == 6  # 30 steps at 5 steps per day crossed six day boundaries (expiry ran)


@pytest.mark.parametrize("other_seed", [4, 0])
def test_world_different_seed_differs(other_seed: int) -> None:
    first, other = _world_run(seed=3), _world_run(seed=other_seed)
    assert not np.array_equal(first[-1][0], other[-1][0])  # the final item features
    assert not np.array_equal(first[0][1], other[0][1])  # the first candidate ids
