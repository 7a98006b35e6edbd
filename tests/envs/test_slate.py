"""The single-user slate env: its ANSI rendering of the slate and the response, and its info at session end."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

from envs import ConfigError, SlateEnv, SlateVectorEnv
from envs.registration import SMALL_WORLD

POSITION_LINE = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+([\d.]+)\s")


def _small_env(render_mode: str | None = "ansi") -> SlateEnv:
    return SlateEnv(world=SMALL_WORLD, num_candidates=20, slate_size=5, render_mode=render_mode)


def test_ansi_render_shows_user_and_one_line_per_position() -> None:
    env = _small_env()
    _, reset_info = env.reset(seed=0)
    before = env.render()
    assert isinstance(before, str)
    names = env.world.cfg.segment_names
    assert f"user {reset_info['user_id']} ({names[reset_info['segment']]})" in before
    assert "no slate shown yet" in before

    _, reward, _, _, info = env.step(np.array([4, 0, 7, 7, 19]))  # a repeated candidate at positions 2, 3
    text = env.render()
    assert isinstance(text, str)
    assert f"({names[info['segment']]})" in text.splitlines()[0]
    lines = [line for line in text.splitlines() if POSITION_LINE.match(line)]
    rows = [POSITION_LINE.match(line) for line in lines]
    assert [int(m.group(1)) for m in rows] == list(range(5))  # one line per slate position, in order
    assert [int(m.group(2)) for m in rows] == info["item_ids"].tolist()
    np.testing.assert_allclose([float(m.group(7)) for m in rows], info["choice_prob"][1:], atol=5e-4)
    assert float(rows[3].group(7)) == 0.0  # the repeated item is not shown
    assert ["*" in line for line in lines] == info["click"].tolist()  # the click marker
    assert f"reward {reward:.3f}" in text


def test_vector_ansi_render_one_text_per_served_slot() -> None:
    env = SlateVectorEnv(num_envs=3, world=SMALL_WORLD, num_candidates=20, slate_size=5, render_mode="ansi")
    env.reset(seed=0)
    assert len(env.render()) == 1
    _, _, _, _, info = env.step(np.tile(np.arange(5), (3, 1)))
    texts = env.render()
    assert len(texts) == 3
    for text, user in zip(texts, info["user_id"]):
        assert f"user {user} (" in text


def test_no_render_mode_renders_nothing() -> None:
    env = _small_env(render_mode=None)
    env.reset(seed=0)
    assert env.render() is None


def test_human_render_mode_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"`render_mode` must be one of \['ansi'\] \(got 'human'\)"):
        _small_env(render_mode="human")
    with pytest.raises(ConfigError, match=r"`render_mode` must be one of \['ansi'\] \(got 'human'\)"):
        SlateVectorEnv(num_envs=2, world=SMALL_WORLD, render_mode="human")


def test_session_end_info_and_reset_after_termination() -> None:
    env = _small_env(render_mode=None)
    env.reset(seed=3)
    actions = np.random.default_rng(0)
    steps = 0
    for _ in range(500):
        _, _, terminated, truncated, info = env.step(actions.integers(0, 20, 5))
        steps += 1
        assert not truncated  # the bare env never truncates; gym.make's TimeLimit does
        if terminated:
            assert info["session_steps"] == steps
            assert isinstance(info["returned"], bool) and isinstance(info["churned"], bool)
            assert not (info["returned"] and info["churned"])
            break
        assert "returned" not in info
    else:
        raise AssertionError("no session ended in 500 steps")
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.arange(5))
    obs, info = env.reset()
    assert obs["user"][len(env.world.cfg.segments) + 1 + env.world.cfg.embedding_dim] == 0.0  # new session
