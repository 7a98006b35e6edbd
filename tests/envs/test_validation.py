"""Bad input fails at construction (or at the bad call) with a ConfigError naming the key, the range and the value."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from agents.decision.recall import ContentRecall
from agents.evolution.codec import SpaceCodec
from agents.evolution.composition import CompositionEnv
from envs import ConfigError, ItemConfig, SegmentConfig, ShiftConfig, SlateEnv, SlateVectorEnv, WorldConfig
from envs.config import default_segments
from envs.registration import SMALL_WORLD
from envs.validation import ActionError


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        # counts: key, allowed range, given value
        (lambda: WorldConfig(num_items=0), r"`num_items` must be in \[1, 10000000\] \(got 0\)"),
        (lambda: WorldConfig(num_users=-1), r"`num_users` must be in \[1, 10000000\] \(got -1\)"),
        (lambda: WorldConfig(num_topics=0), r"`num_topics` must be in \[1, 10000\] \(got 0\)"),
        (lambda: WorldConfig(steps_per_day=0), r"`steps_per_day` must be in \[1, 1000000\] \(got 0\)"),
        (lambda: WorldConfig(num_items=1.5), r"`num_items` must be an integer \(got float 1\.5\)"),
        (lambda: WorldConfig(num_users=True), r"`num_users` must be an integer \(got bool True\)"),
        (lambda: WorldConfig(position_decay=-0.5), r"`position_decay` must be in \[0\.0, 50\.0\] \(got -0\.5\)"),
        (lambda: WorldConfig(position_decay=float("nan")), r"`position_decay` must be a number \(got nan\)"),
        # probabilities outside [0, 1] (risk_mean keeps 1e-6 from both ends: Beta(risk_mean * c, (1 - risk_mean) * c))
        (lambda: SegmentConfig(churn_probability=1.5), r"churn_probability` must be in \[0\.0, 1\.0\] \(got 1\.5\)"),
        (lambda: SegmentConfig(drift_rate=-0.1), r"drift_rate` must be in \[0\.0, 1\.0\] \(got -0\.1\)"),
        (lambda: ItemConfig(risk_mean=0.0), r"`items\.risk_mean` must be in \[1e-06, 0\.999999\] \(got 0\.0\)"),
        (lambda: WorldConfig(items={"risk_mean": 0}), r"`items\.risk_mean` must be in \[1e-06, 0\.999999\] \(got 0\)"),
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


@pytest.fixture(scope="module")
def slate_env() -> SlateEnv:
    env = SlateEnv(world=SMALL_WORLD, num_candidates=20, slate_size=5)
    env.reset(seed=0)
    return env


@pytest.fixture(scope="module")
def vector_env() -> SlateVectorEnv:
    env = SlateVectorEnv(num_envs=2, world=SMALL_WORLD, num_candidates=20, slate_size=5)
    env.reset(seed=0)
    return env


@pytest.mark.parametrize("bad", [20, -1])
def test_out_of_range_action(slate_env: SlateEnv, bad: int) -> None:
    pattern = (
        rf"`action` must lie in MultiDiscrete\(\[20 20 20 20 20\]\) \(got \[0, 1, 2, 3, {bad}\]: entry 4 = {bad} is out "
        r"of range\); allowed: integers in \[0, 20\) of shape \(5,\) \(candidate indices by slate position\)"
    )
    with pytest.raises(ActionError, match=pattern):
        slate_env.step(np.array([0, 1, 2, 3, bad]))


# every way an action used to crash deep inside or be silently misread; each is an ActionError (a ConfigError,
# so a ValueError) naming `action`, the space and the value, raised before the world moves
BAD_ACTIONS = [
    ([0, 1, 2, 3, 2**63], r"\[0, 1, 2, 3, 9223372036854775808\]: entry 4 = 9223372036854775808 is out of range"),
    ([0, 1, 2, 3, 10**400], r"entry 4 = an integer of about 401 digits is out of range"),
    ([0, 1, 2, 3, float("inf")], r"entry 4 is inf"),
    (np.array([0, 1, 2, np.nan, 4]), r"entry 3 is nan"),
    (np.array([0, 1, 2, 3, 4.5]), r"entry 4 = 4.5 is not an integer"),
    (np.array([True, False, True, False, True]), r"a bool array"),
    (np.array([0, 1, 2, 3, 4], complex), r"a complex128 array"),
    (np.array(["0", "1", "2", "3", "4"]), r"an array of dtype <U1, not of numbers"),
    (np.array([0, 1, 2, 3, None], object), r"entry 4 is NoneType None, not a number"),
    (np.array([[0, 1, 2, 3, 4]]), r"shape \(1, 5\), not \(5,\); it is never reshaped"),
    (np.array([[0], [1], [2], [3], [4]]), r"shape \(5, 1\), not \(5,\)"),
    ([0, 1, 2], r"shape \(3,\), not \(5,\)"),
    ([[0, 1], [2], [3], [4], [5]], r"entry 0 is list \[0, 1\], not a number"),  # ragged
    ("01234", r"a str, not an array"),
    (None, r"a NoneType, not an array"),
]


@pytest.mark.parametrize(("action", "problem"), BAD_ACTIONS)
def test_bad_action_is_named_before_any_work(slate_env: SlateEnv, action: Any, problem: str) -> None:
    steps = slate_env.world.steps
    with pytest.raises(ActionError, match=r"^`action` must lie in MultiDiscrete\(\[20 20 20 20 20\]\) \(got .*" + problem):
        slate_env.step(action)
    assert slate_env.world.steps == steps  # nothing ran


def test_integral_floats_and_lists_are_valid_actions(slate_env: SlateEnv) -> None:
    """A float that is an integer (3.0) is that index: a policy may emit a float array of indices."""
    for action in ([0, 1, 2, 3, 4], np.array([0.0, 1.0, 2.0, 3.0, 4.0]), np.arange(5, dtype=np.uint8), (4, 3, 2, 1, 0)):
        obs, reward, terminated, _, _ = slate_env.step(action)
        assert np.isfinite(reward) and np.isfinite(obs["user"]).all()
        if terminated:
            slate_env.reset()


def test_bad_vector_action(vector_env: SlateVectorEnv) -> None:
    prefix = r"`actions` must lie in Box\(0, 19, \(2, 5\), int64\) \(got "  # batch_space of a MultiDiscrete
    with pytest.raises(ActionError, match=prefix + r"\[\[0, 1, 2, 3, 4\], \[0, 1, 2, 3, 25\]\]: entry \(1, 4\) = 25 is out of range\)"):
        vector_env.step(np.array([[0, 1, 2, 3, 4], [0, 1, 2, 3, 25]]))
    with pytest.raises(ActionError, match=r"shape \(2, 4\), not \(2, 5\).*allowed: integers in \[0, 19\] of shape \(2, 5\)"):
        vector_env.step(np.zeros((2, 4), np.int64))
    # NaN passed the old min/max check and became index -9223372036854775808
    with pytest.raises(ActionError, match=prefix + r".*entry \(0, 2\) is nan"):
        vector_env.step(np.array([[0, 1, np.nan, 3, 4], [0, 1, 2, 3, 4]]))
    with pytest.raises(ActionError, match=r"a bool array"):
        vector_env.step(np.ones((2, 5), bool))
    with pytest.raises(ActionError, match=r"entry \(1, 0\) = 0.5 is not an integer"):
        vector_env.step(np.array([[0, 1, 2, 3, 4], [0.5, 1, 2, 3, 4]]))
    with pytest.raises(ActionError, match=r"shape \(10,\), not \(2, 5\)"):
        vector_env.step(np.arange(10) % 5)


@pytest.mark.parametrize("kind", ["box", "multidiscrete"])
def test_codec_decode_rejects_what_is_not_a_point(kind: str) -> None:
    codec = SpaceCodec(ContentRecall.params, kind)
    n = codec.size
    bad = [
        np.array([2**70] + [0] * (n - 1), object),  # huge ints used to raise OverflowError
        np.array([np.nan] * n),
        np.array([np.inf] * n),
        np.zeros(n, complex),
        np.zeros(n, bool),
        np.zeros((1, n)),
        np.zeros((n, 1)),
    ]
    if kind == "multidiscrete":
        bad.append(np.full(n, 0.5))  # would be truncated to 0
    for action in bad:
        with pytest.raises(ConfigError, match=r"^`action` must lie in (Box|MultiDiscrete)\("):
            codec.decode(action)
    assert codec.decode(np.zeros(n, int)) == codec.decode(np.zeros(n, float))


def test_composition_decode_rejects_huge_ints() -> None:
    env = CompositionEnv(world=SMALL_WORLD, window=20, concurrency=10)
    n = len(env.nvec)
    with pytest.raises(ConfigError, match=r"^`action` must lie in MultiDiscrete\(.*entry 0 = 18446744073709551616 is out of range"):
        env.decode(np.array([2**64] + [0] * (n - 1), object))
    with pytest.raises(ConfigError, match=r"entry 0 = 1.5 is not an integer"):
        env.decode(np.array([1.5] + [0] * (n - 1)))
    assert env.decode(np.zeros(n, np.int64)).key() == env.decode([0.0] * n).key()


# ------------------------------------------------------------------ config holes found by a property-based audit
@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        # a non-mapping where a mapping is expected: was an AttributeError deep inside
        (lambda: WorldConfig(request_mix=None), r"`request_mix` must be a mapping of name -> weight \(got NoneType None\)"),
        (lambda: WorldConfig(graduate_to=None), r"`graduate_to` must be a mapping of name -> weight \(got NoneType None\)"),
        (lambda: WorldConfig(graduate_after=0, graduate_to=[0.5]), r"`graduate_to` must be a mapping .* \(got list \[0\.5\]\)"),
        (
            lambda: WorldConfig(shifts=[{"kind": "segment_mix", "request_mix": [("new", 1.0)]}]),
            r"`shifts\.request_mix` must be a mapping of segment -> weight \(got list \[\('new', 1\.0\)\]\)",
        ),
        (lambda: SlateEnv(world={"items": "abc"}), r"`items` must be a mapping of item parameters \(got str 'abc'\)"),
        (lambda: SlateEnv(world="abc"), r"`world` must be a mapping of WorldConfig fields \(got str 'abc'\)"),
        (lambda: WorldConfig(items=3), r"`items` must be a mapping of item parameters \(got int 3\)"),
        (
            lambda: WorldConfig(segments={**default_segments(), "casual": 3}),
            r"`segments\.casual` must be a mapping of segment parameters \(got int 3\)",
        ),
        (lambda: WorldConfig(segments=None), r"`segments` must be a mapping of segment name -> segment parameters \(got NoneType None\)"),
        (lambda: WorldConfig(segments={1: SegmentConfig()}), r"`segments` keys must be non-empty segment names \(got int 1\)"),
        (lambda: WorldConfig(shifts=None), r"`shifts` must be a list of shifts \(got NoneType None\)"),
        (lambda: WorldConfig(shifts={"kind": "risk_surge"}), r"`shifts` must be a list of shifts \(got dict"),
        (lambda: WorldConfig(shifts=["risk_surge"]), r"`shifts\[0\]` must be a mapping of shift parameters \(got str 'risk_surge'\)"),
        # huge ints: were an OverflowError in envs/validation.py
        (lambda: WorldConfig(position_decay=10**400), r"`position_decay` must be finite \(got an integer of about 401 digits\); allowed: \[0\.0, 50\.0\]"),
        (lambda: WorldConfig(num_items=2**70), r"`num_items` must be in \[1, 10000000\] \(got 1180591620717411303424\)"),
        (lambda: WorldConfig(request_mix={"new": 10**400}), r"`request_mix\.new` must be finite \(got an integer of about 401 digits\)"),
        (lambda: ShiftConfig(kind="risk_surge", day=10**30), r"`shifts\.day` must be in \[0, 1000000\] \(got 1000000000000000000000000000000\)"),
        # inf: was accepted where no upper bound was set, then NaN in the simulation
        (lambda: WorldConfig(request_mix={"new": math.inf}), r"`request_mix\.new` must be finite \(got inf\); allowed: \[0\.0, inf\)"),
        (lambda: SegmentConfig(patience=-math.inf), r"`segments\.<segment>\.patience` must be finite \(got -inf\); allowed: \[-50\.0, 50\.0\]"),
        (lambda: SlateEnv(world=SMALL_WORLD, reward={"click": math.inf}), r"`reward\.click` must be finite \(got inf\)"),
        # finite but absurd: was `lam value too large`, float32 overflow, or memory for a planet
        (lambda: SegmentConfig(history_mean=1e19), r"`segments\.<segment>\.history_mean` must be in \[0\.0, 1000000\.0\] \(got 1e\+19\)"),
        (lambda: SegmentConfig(affinity_scale=1e39), r"`segments\.<segment>\.affinity_scale` must be in \[0\.0, 50\.0\] \(got 1e\+39\)"),
        (lambda: ItemConfig(lifetime_days=1e308), r"`items\.lifetime_days` must be in \[0\.001, 100000\.0\] \(got 1e\+308\)"),
        (lambda: ItemConfig(cost_sigma=1e200), r"`items\.cost_sigma` must be in \[0\.0, 5\.0\] \(got 1e\+200\)"),
        (lambda: WorldConfig(num_users=10_000_000, num_topics=1_000), r"`num_users \* \(2 \* embedding_dim \+ num_topics\) .* must be <= 536870912"),
    ],
)
def test_audit_holes(build: Callable[[], Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        build()


def _numeric_fields(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.type in ("float", "int")]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**400])
@pytest.mark.parametrize(
    ("cls", "name"),
    [(ItemConfig, n) for n in _numeric_fields(ItemConfig)]
    + [(SegmentConfig, n) for n in _numeric_fields(SegmentConfig)]
    + [(WorldConfig, n) for n in _numeric_fields(WorldConfig)],
)
def test_every_numeric_parameter_rejects_non_finite(cls: type, name: str, value: float) -> None:
    """Each of these was accepted (or crashed) and made NaN observations or choice probabilities."""
    with pytest.raises(ConfigError, match=rf"`([a-z]+\.)?(<segment>\.)?{name}` must be "):
        cls(**{name: value})


def test_step_before_reset() -> None:
    env = SlateEnv(world=SMALL_WORLD, num_candidates=20, slate_size=5)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.arange(5))
