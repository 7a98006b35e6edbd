"""Bad input fails at construction (or at the bad call) with a ConfigError naming the key, the range and the value."""

from __future__ import annotations

import re
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import pytest

from envs import ConfigError, ItemConfig, SegmentConfig, ShiftConfig, SlateEnv, SlateVectorEnv, WorldConfig
from envs.config import default_segments
from envs.registration import SMALL_WORLD


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        # counts: key, allowed range, given value
        (lambda: WorldConfig(num_items=0), r"`num_items` must be in \[1, inf\) \(got 0\)"),
        (lambda: WorldConfig(num_users=-1), r"`num_users` must be in \[1, inf\) \(got -1\)"),
        (lambda: WorldConfig(num_topics=0), r"`num_topics` must be in \[1, inf\) \(got 0\)"),
        (lambda: WorldConfig(steps_per_day=0), r"`steps_per_day` must be in \[1, inf\) \(got 0\)"),
        (lambda: WorldConfig(num_items=1.5), r"`num_items` must be an integer \(got float 1\.5\)"),
        (lambda: WorldConfig(num_users=True), r"`num_users` must be an integer \(got bool True\)"),
        (lambda: WorldConfig(position_decay=-0.5), r"`position_decay` must be in \[0\.0, inf\) \(got -0\.5\)"),
        (lambda: WorldConfig(position_decay=float("nan")), r"`position_decay` must be a number \(got nan\)"),
        # probabilities outside [0, 1] (risk_mean is an open interval)
        (lambda: SegmentConfig(churn_probability=1.5), r"churn_probability` must be in \[0\.0, 1\.0\] \(got 1\.5\)"),
        (lambda: SegmentConfig(drift_rate=-0.1), r"drift_rate` must be in \[0\.0, 1\.0\] \(got -0\.1\)"),
        (lambda: ItemConfig(risk_mean=0.0), r"`items\.risk_mean` must be in \(0\.0, 1\.0\) \(got 0\.0\)"),
        (lambda: WorldConfig(items={"risk_mean": 0}), r"`items\.risk_mean` must be in \(0\.0, 1\.0\) \(got 0\)"),
        (
            lambda: ShiftConfig(kind="catalog_refresh", fraction=2.0),
            r"`shifts\.fraction` must be in \[0\.0, 1\.0\] \(got 2\.0\)",
        ),
        (
            lambda: ItemConfig(head_fraction=0.8, torso_fraction=0.5),
            r"`items\.head_fraction \+ items\.torso_fraction` must be <= 1 \(got 0\.8 \+ 0\.5\)",
        ),
        # topic_shock on a topic that does not exist
        (
            lambda: WorldConfig(num_topics=5, shifts=[{"kind": "topic_shock", "topic": 5}]),
            r"`shifts\.topic` must be in \[0, 4\] \(got 5\)",
        ),
        (
            lambda: WorldConfig(shifts=[{"kind": "segment_mix", "day": 2}]),
            r"`shifts\.request_mix` is required for kind 'segment_mix' \(got None\)",
        ),
        (lambda: WorldConfig(request_mix={"new": 0.0}), r"`request_mix` must have a positive total weight"),
        (
            lambda: WorldConfig(request_mix={"new": -1.0, "heavy": 2.0}),
            r"`request_mix\.new` must be in \[0\.0, inf\) \(got -1\.0\)",
        ),
    ],
)
def test_bad_values(build: Callable[[], Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        build()


@pytest.mark.parametrize(
    ("build", "key", "given", "suggestion"),
    [
        (lambda: WorldConfig(request_mix={"new": 0.5, "casul": 0.5}), "request_mix key", "casul", "casual"),
        (lambda: WorldConfig(shifts=[{"kind": "topic_shok"}]), "shifts.kind", "topic_shok", "topic_shock"),
        (lambda: ShiftConfig(kind="segmnt_mix", request_mix={"new": 1.0}), "shifts.kind", "segmnt_mix", "segment_mix"),
        (lambda: WorldConfig(new_user_segment="newbie"), "new_user_segment", "newbie", "new"),
        (lambda: SlateEnv(world={"num_itemz": 500}), "world key", "num_itemz", "num_items"),
        (lambda: WorldConfig(items={"risk_men": 0.1}), "items key", "risk_men", "risk_mean"),
        (
            lambda: WorldConfig(segments={"new": {"patiense": 1.0}}, request_mix={"new": 1.0}),
            "segments.new key", "patiense", "patience",
        ),
        (lambda: SlateEnv(reward={"clik": 1.0}), "reward key", "clik", "click"),
    ],
)
def test_unknown_names_suggest_the_closest(build: Callable[[], Any], key: str, given: str, suggestion: str) -> None:
    pattern = (
        rf"`{re.escape(key)}` must be one of \[.*'{suggestion}'.*\] \(got '{given}'\); "
        rf"did you mean '{suggestion}'\?"
    )
    with pytest.raises(ConfigError, match=pattern):
        build()


def test_bad_segment_in_a_world_names_that_segment() -> None:
    """A world built from plain mappings (YAML / Hydra / env kwargs) must say which segment is wrong.

    Fails: envs/config.py SegmentConfig.__post_init__ (line 109) validates as ``segments.<segment>`` when
    WorldConfig.__post_init__ (line 187) builds the SegmentConfig from the mapping, so the error is raised
    before ``seg.validate(name)`` (line 204) can name the segment: "`segments.<segment>.churn_probability`".
    """
    segments: dict[str, Any] = {**default_segments(), "casual": {"churn_probability": 1.5}}
    pattern = r"`segments\.casual\.churn_probability` must be in \[0\.0, 1\.0\] \(got 1\.5\)"
    with pytest.raises(ConfigError, match=pattern):
        WorldConfig(segments=segments)


def test_slate_size_above_num_candidates() -> None:
    with pytest.raises(ConfigError, match=r"`slate_size` must be <= `num_candidates` \(got 10 > 5\)"):
        SlateEnv(world=SMALL_WORLD, num_candidates=5, slate_size=10)
    with pytest.raises(ConfigError, match=r"`slate_size` must be <= `num_candidates` \(got 6 > 4\)"):
        SlateVectorEnv(num_envs=2, world=SMALL_WORLD, num_candidates=4, slate_size=6)


def test_num_candidates_above_num_items() -> None:
    with pytest.raises(ConfigError, match=r"`num_candidates` must be <= `world\.num_items` \(got 100 > 50\)"):
        SlateEnv(world={"num_items": 50, "num_users": 100}, num_candidates=100)


@pytest.mark.parametrize("key", ["num_candidates", "slate_size"])
def test_non_positive_sizes(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"`{key}` must be in \[1, inf\) \(got 0\)"):
        SlateEnv(world=SMALL_WORLD, **{key: 0})


def test_num_envs_above_num_users() -> None:
    with pytest.raises(ConfigError, match=r"`num_envs` must be <= `world\.num_users`.*\(got 300 > 200\)"):
        SlateVectorEnv(num_envs=300, world={"num_items": 500, "num_users": 200})
    with pytest.raises(ConfigError, match=r"`num_envs` must be <= `world\.num_users`.*\(got 2001 > 2000\)"):
        gym.make_vec("agentic-rs/SlateSmall-v0", num_envs=2001, vectorization_mode="vector_entry_point")


def test_bad_vector_env_arguments() -> None:
    with pytest.raises(ConfigError, match=r"`num_envs` must be in \[1, inf\) \(got 0\)"):
        SlateVectorEnv(num_envs=0, world=SMALL_WORLD)
    with pytest.raises(ConfigError, match=r"`max_episode_steps` must be in \[1, inf\) \(got 0\)"):
        SlateVectorEnv(num_envs=2, world=SMALL_WORLD, max_episode_steps=0)


@pytest.mark.parametrize("bad", [20, -1])
def test_out_of_range_action(bad: int) -> None:
    env = SlateEnv(world=SMALL_WORLD, num_candidates=20, slate_size=5)
    env.reset(seed=0)
    action = np.array([0, 1, 2, 3, bad])
    pattern = rf"action must be 5 candidate indices in \[0, 20\) \(got \[0, 1, 2, 3, {bad}\]\)"
    with pytest.raises(ValueError, match=pattern):
        env.step(action)


def test_out_of_range_vector_action() -> None:
    env = SlateVectorEnv(num_envs=2, world=SMALL_WORLD, num_candidates=20, slate_size=5)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"candidate indices in \[0, 20\) \(got values in \[0, 25\]\)"):
        env.step(np.array([[0, 1, 2, 3, 4], [0, 1, 2, 3, 25]]))
    with pytest.raises(ValueError, match=r"shape \(num_envs, slate_size\) = \(2, 5\) \(got \(2, 4\)\)"):
        env.step(np.zeros((2, 4), np.int64))


def test_step_before_reset() -> None:
    env = SlateEnv(world=SMALL_WORLD, num_candidates=20, slate_size=5)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.arange(5))
