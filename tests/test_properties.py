"""Property-based checks of validation: generated configs and actions either fail with a clear error or run clean.

The property, for every input generated here (valid values mixed with NaN, +/-inf, huge ints, negative values,
wrong types, non-mappings, unknown keys, wrong shapes and dtypes): it raises ``ConfigError`` (or its subclass
``ActionError``, a ``ValueError`` as Gymnasium envs raise for bad actions) whose message names the key in
backticks, or it succeeds and every number in the result (the config, or the observation and reward after one
step) is finite and within its declared range. Any other exception fails the test.

Examples per property (``derandomize=True``: the same examples on every run, so CI is deterministic):

* ``test_world_config``: 3,000 world configs (``WorldConfig`` via ``make_world_config``, with nested items,
  segments, request mix, graduation, shifts);
* ``test_valid_extreme_worlds_simulate``: 200 worlds whose every parameter is at a bound or inside its range,
  built and stepped (observations, rewards and choice probabilities stay finite);
* ``test_slate_env_actions``: 700 actions per slate id (3 ids: 2,100);
* ``test_slate_vector_env_actions``: 300 batched actions per slate id (3 ids: 900);
* ``test_window_env_actions``: 200 actions per evolution id (2 ids: 400);
* ``test_codec_decode``: 120 actions per agent decision space and codec (10 spaces x 2 codecs: 2,400);
* ``test_param_space_validate``: 1,400 agent configs.

Total 10,400 examples, about a minute on 2 shared cores. Envs are built once per module over tiny worlds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs
from agents.decision import functional, fusion, ranking, recall, rerank
from agents.decision.params import Choice, DecisionAgent, ParamSpace, Range
from agents.evolution.codec import CODECS, SpaceCodec
from envs.config import SHIFT_KINDS, TASTE_PARAMS, ItemConfig, SegmentConfig, ShiftConfig, WorldConfig
from envs.registration import NAMESPACE
from envs.slate import make_world_config
from envs.validation import ConfigError

SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))

# ---------------------------------------------------------------------------------------------- declared domains
# (low, high, integer): the range every accepted value must lie in. Open ends are checked by the configs; these
# closed intervals are what the simulation may rely on.
ITEM_DOMAIN: dict[str, tuple[float, float, bool]] = {
    "zipf_exponent": (0.0, 10.0, False),
    "head_fraction": (0.0, 1.0, False),
    "torso_fraction": (0.0, 1.0, False),
    "topic_noise": (0.0, 100.0, False),
    "quality_alpha": (1e-3, 1e4, False),
    "quality_beta": (1e-3, 1e4, False),
    "risk_mean": (1e-6, 1.0 - 1e-6, False),
    "risk_concentration": (1e-3, 1e4, False),
    "lifetime_days": (1e-3, 1e5, False),
    "lifetime_sigma": (0.0, 5.0, False),
    "expire_after": (0.0, 1e3, False),
    "cost_mean": (0.0, 1e6, False),
    "cost_sigma": (0.0, 5.0, False),
}
SEGMENT_DOMAIN: dict[str, tuple[float, float, bool]] = {
    "history_mean": (0.0, 1e6, False),
    "interest_concentration": (1e-3, 1e4, False),
    **{k: (0.0, 50.0, False) for k in ("affinity_scale", "quality_sensitivity", "novelty_sensitivity",
                                      "popularity_sensitivity", "risk_appeal", "risk_sensitivity",
                                      "fatigue_sensitivity", "fatigue_increment")},
    **{k: (0.0, 1.0, False) for k in ("fatigue_decay", "drift_rate", "churn_probability")},
    **{k: (-50.0, 50.0, False) for k in ("no_click_utility", "patience", "return_bias")},
}
WORLD_DOMAIN: dict[str, tuple[float, float, bool]] = {
    "num_items": (1, 10**7, True),
    "num_users": (1, 10**7, True),
    "num_topics": (1, 10**4, True),
    "embedding_dim": (1, 1024, True),
    "num_creators": (1, 10**7, True),
    "steps_per_day": (1, 10**6, True),
    "position_decay": (0.0, 50.0, False),
    "graduate_after": (0, 10**6, True),
}
SHIFT_DOMAIN: dict[str, tuple[float, float, bool]] = {
    "day": (0, 10**6, True),
    "topic": (0, 10**4 - 1, True),
    "strength": (0.0, 100.0, False),
    "fraction": (0.0, 1.0, False),
    "value": (-50.0, 50.0, False),
    "every": (0, 10**6, True),
}
SEGMENT_NAMES = ("new", "casual", "heavy", "s3")

# a name whose change may surface as an error about another key
COUPLED = {
    "num_topics": ("topic",),
    "graduate_after": ("graduate_to",),
    "kind": ("request_mix", "topic"),
    "segments": ("request_mix", "graduate_to", "new_user_segment"),
    **{k: ("num_users * (2 * embedding_dim",) for k in ("num_items", "num_users", "embedding_dim")},
    "head_fraction": ("torso_fraction",),
    "torso_fraction": ("head_fraction",),
}


def in_domain(value: Any, domain: tuple[float, float, bool]) -> bool:
    low, high, integer = domain
    if isinstance(value, (bool, np.bool_)):
        return False
    if integer and not isinstance(value, (int, np.integer)):
        return False
    if not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return (isinstance(value, (int, np.integer)) or math.isfinite(value)) and low <= value <= high


# ---------------------------------------------------------------------------------------------- strategies
JUNK_NUMBERS = [math.nan, math.inf, -math.inf, 10**400, -(10**400), 2**63, 2**64, -(2**63) - 1, 1e308, -1e308,
                1e39, -1, -1.0, -1e-300, 5e-324, 0, 0.0, 1.5, np.float32("nan"), np.float64("inf"), np.int64(-1),
                np.float32(3.0e38), np.uint64(2**64 - 1)]
JUNK = st.one_of(
    st.sampled_from(JUNK_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
    st.complex_numbers(max_magnitude=2),
)


def valid_number(domain: tuple[float, float, bool]) -> st.SearchStrategy[Any]:
    low, high, integer = domain
    if integer:
        return st.integers(int(low), int(high))
    lo = math.nextafter(low, math.inf) if low == 0.0 else low  # some ends at 0 are open (head_fraction, cost_mean)
    hi = min(high, 0.999) if high == 1.0 else high  # and head_fraction + torso_fraction <= 1
    return st.one_of(st.floats(lo, hi), st.sampled_from([lo, hi]))


def any_value(domain: tuple[float, float, bool]) -> st.SearchStrategy[Any]:
    return st.one_of(valid_number(domain), JUNK)


# strategies built once (building them per draw dominates the generation time)
DOMAINS = {**ITEM_DOMAIN, **SEGMENT_DOMAIN, **WORLD_DOMAIN, **SHIFT_DOMAIN}
VALID = {k: valid_number(d) for k, d in DOMAINS.items()}
ANY = {k: any_value(d) for k, d in DOMAINS.items()}


def rng_number(rng: np.random.Generator, domain: tuple[float, float, bool]) -> Any:
    """A valid value: often a bound (or the next float inside an open one), else uniform (log-uniform for wide ranges)."""
    low, high, integer = domain
    lo = math.nextafter(low, math.inf) if low == 0.0 and not integer else low
    hi = 0.999 if high == 1.0 and not integer else high
    r = rng.random()
    if r < 0.15:
        return lo
    if r < 0.3:
        return hi
    if integer:
        return int(rng.integers(int(lo), int(min(hi, lo + 1000)) + 1))
    if hi > 100 and lo >= 0:
        return float(min(hi, max(lo, 10 ** rng.uniform(-3, math.log10(hi)))))
    return float(rng.uniform(lo, hi))


def rng_weights(rng: np.random.Generator, names: list[str]) -> dict[str, float]:
    chosen = [n for n in names if rng.random() < 0.7] or names[:1]
    out: dict[str, float] = {n: (float(rng.uniform(0, 10)) if rng.random() < 0.7 else int(rng.integers(0, 5))) for n in chosen}
    out[chosen[0]] = float(rng.uniform(0.1, 10.0))
    return out


def base_world(seed: int) -> tuple[dict[str, Any], list[str]]:
    """A valid world config as plain mappings (the values drawn from ``seed``), and its segment names."""
    rng = np.random.default_rng(seed)
    names = list(rng.permutation(SEGMENT_NAMES)[: rng.integers(1, 4)])
    cfg: dict[str, Any] = {
        "num_items": int(rng.integers(1, 500)),
        "num_users": int(rng.integers(1, 500)),
        "num_topics": int(rng.integers(1, 20)),
        "embedding_dim": int(rng.integers(1, 16)),
        "num_creators": int(rng.integers(1, 50)),
        "steps_per_day": int(rng.integers(1, 100)),
        "position_decay": rng_number(rng, WORLD_DOMAIN["position_decay"]),
        "new_user_segment": names[0],
        "graduate_after": int(rng.integers(0, 20)),
        "graduate_to": rng_weights(rng, names),
        "request_mix": rng_weights(rng, names),
    }
    head = float(rng.uniform(0.01, 0.5))
    items = {k: rng_number(rng, ITEM_DOMAIN[k]) for k in ITEM_DOMAIN if rng.random() < 0.3}
    items.update(head_fraction=head, torso_fraction=float(rng.uniform(0.0, 1.0 - head)))
    cfg["items"] = items
    cfg["segments"] = {
        n: SegmentConfig() if rng.random() < 0.3 else {k: rng_number(rng, d) for k, d in SEGMENT_DOMAIN.items() if rng.random() < 0.3}
        for n in names
    }
    shifts = []
    for _ in range(int(rng.integers(0, 4))):
        kind = str(rng.choice(SHIFT_KINDS))
        shift: dict[str, Any] = {"kind": kind, "day": int(rng.integers(0, 30)), "topic": int(rng.integers(0, cfg["num_topics"])),
                                 "strength": rng_number(rng, SHIFT_DOMAIN["strength"]),
                                 "fraction": rng_number(rng, SHIFT_DOMAIN["fraction"])}
        if kind == "segment_mix" or rng.random() < 0.5:
            shift["request_mix"] = rng_weights(rng, names)
        if kind == "taste":
            shift["param"] = str(rng.choice(TASTE_PARAMS))
            low = -50.0 if shift["param"] == "no_click_utility" else 0.0
            shift["value"] = rng_number(rng, (low, 50.0, False))
            shift["segment"] = str(rng.choice(["", *names]))
        if rng.random() < 0.3:
            shift["every"] = int(rng.integers(1, 10))
        shifts.append(shift)
    cfg["shifts"] = shifts
    return cfg, names


@st.composite
def weights(draw: Any, names: list[str]) -> dict[str, float]:
    return rng_weights(np.random.default_rng(draw(SEEDS)), names)


SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def world_configs(draw: Any) -> tuple[dict[str, Any], set[str]]:
    """A valid world config as plain mappings, then 0-3 of its parts replaced; returns it and the names touched."""
    cfg, names = base_world(draw(SEEDS))
    touched: set[str] = set()
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["world", "world", "items", "segment", "mix", "shift", "unknown", "container"]))
        if "replaced" in touched:
            where = "world"  # a container was replaced already: perturb scalars only
        if where == "world":
            key = draw(st.sampled_from(sorted(WORLD_DOMAIN)))
            cfg[key] = draw(ANY[key])
        elif where == "items":
            key = draw(st.sampled_from(sorted(ITEM_DOMAIN)))
            cfg["items"][key] = draw(ANY[key])
        elif where == "segment":
            name = draw(st.sampled_from(names))
            key = draw(st.sampled_from(sorted(SEGMENT_DOMAIN)))
            seg = cfg["segments"][name]
            cfg["segments"][name] = seg = dict(seg) if isinstance(seg, dict) else {}
            seg[key] = draw(ANY[key])
        elif where == "mix":
            key = draw(st.sampled_from(["request_mix", "graduate_to"]))
            mix = cfg[key] if isinstance(cfg[key], dict) else {}
            mix[draw(st.sampled_from([*names, "casul", "ghost"]))] = draw(st.one_of(st.floats(0.0, 2.0), JUNK))
            cfg[key] = mix
        elif where == "shift":
            if not cfg["shifts"] or not isinstance(cfg["shifts"], list) or not isinstance(cfg["shifts"][0], dict):
                continue
            shift = cfg["shifts"][draw(st.integers(0, len(cfg["shifts"]) - 1))]
            key = draw(st.sampled_from([*SHIFT_DOMAIN, "kind", "request_mix"]))
            if key == "kind":
                shift[key] = draw(st.one_of(JUNK, st.sampled_from(SHIFT_KINDS)))
            elif key == "request_mix":
                shift[key] = draw(st.one_of(JUNK, weights(names)))
            else:
                shift[key] = draw(ANY[key])
        elif where == "unknown":
            key = draw(st.sampled_from(["world", "items", "segment", "shift"]))
            target = {"world": cfg, "items": cfg["items"], "segment": cfg["segments"].get(names[0]),
                      "shift": cfg["shifts"][0] if cfg["shifts"] else None}[key]
            if not isinstance(target, dict):
                continue
            target[draw(st.sampled_from(["num_itemz", "patiense", "risk_men", "kindd", "", "x"]))] = 1.0
        else:  # a whole container replaced (a non-mapping where a mapping is expected, and so on)
            key = draw(st.sampled_from(["items", "segments", "request_mix", "graduate_to", "shifts", "segment",
                                        "shift", "new_user_segment"]))
            value = draw(JUNK)
            touched.add("replaced")
            if key == "segment":
                cfg["segments"][names[-1]] = value
            elif key == "shift":
                cfg["shifts"] = [value]
            else:
                cfg[key] = value
        touched.add(key)
    return cfg, touched


# ---------------------------------------------------------------------------------------------- (a) world configs
def names_a_touched_key(message: str, touched: set[str]) -> bool:
    quoted = re.match(r"^`([^`]+)`", message)
    if quoted is None:
        return False
    names = {"segments" if t == "segment" else "shifts" if t == "shift" else t for t in touched}
    names |= {c for t in touched for c in COUPLED.get(t, ())}
    if "segments" in names or "segment" in touched:
        names |= {"request_mix", "graduate_to", "new_user_segment", "segments"}
    return any(n in quoted.group(1) for n in names)


def check_world(cfg: WorldConfig) -> None:
    """Every number of an accepted world is finite and in its declared range; mixes are distributions."""
    assert isinstance(cfg, WorldConfig)
    for key, domain in WORLD_DOMAIN.items():
        assert in_domain(getattr(cfg, key), domain), (key, getattr(cfg, key))
    assert isinstance(cfg.items, ItemConfig)
    for key, domain in ITEM_DOMAIN.items():
        assert in_domain(getattr(cfg.items, key), domain), (key, getattr(cfg.items, key))
    assert cfg.items.head_fraction + cfg.items.torso_fraction <= 1.0
    assert cfg.segments and all(isinstance(n, str) for n in cfg.segments)
    for seg in cfg.segments.values():
        assert isinstance(seg, SegmentConfig)
        for key, domain in SEGMENT_DOMAIN.items():
            assert in_domain(getattr(seg, key), domain), (key, getattr(seg, key))
    assert cfg.new_user_segment in cfg.segments
    mixes = [cfg.request_mix] + ([cfg.graduate_to] if cfg.graduate_after > 0 else [])
    for shift in cfg.shifts:
        assert isinstance(shift, ShiftConfig) and shift.kind in SHIFT_KINDS
        for key, domain in SHIFT_DOMAIN.items():
            assert in_domain(getattr(shift, key), domain), (key, getattr(shift, key))
        if shift.kind == "topic_shock":
            assert shift.topic < cfg.num_topics
        if shift.request_mix is not None:
            mixes.append(shift.request_mix)
    for mix in mixes:
        assert set(mix) <= set(cfg.segments)
        assert all(math.isfinite(w) and 0.0 <= w <= 1.0 for w in mix.values())
        assert math.isclose(sum(mix.values()), 1.0, rel_tol=1e-9)
    if cfg.graduate_after == 0:
        assert all(math.isfinite(w) and w >= 0 for w in cfg.graduate_to.values())


@pytest.mark.slow
@settings(max_examples=3000, **SETTINGS)
@given(world_configs())
def test_world_config(generated: tuple[dict[str, Any], set[str]]) -> None:
    kwargs, touched = generated
    try:
        cfg = make_world_config(kwargs)
    except ConfigError as exc:
        assert touched, f"an untouched valid config was rejected: {exc}"
        assert names_a_touched_key(str(exc), touched), (str(exc), touched)
        return
    check_world(cfg)


# ---------------------------------------------------------------------------------------------- (a'') CLI overrides
# The property over `key=value` overrides of the experiment CLI lives beside the CLI's other tests, in
# tests/experiments/test_cli_errors.py (1,200 generated overrides of every leaf key, applied with Hydra's own
# override code and validated as a run validates them).


# ---------------------------------------------------------------------------------------------- (a') the bounds run
@st.composite
def extreme_worlds(draw: Any) -> WorldConfig:
    """A tiny world whose every parameter is at a bound of its range or inside it."""

    def pick(domain: tuple[float, float, bool]) -> Any:
        low, high, integer = domain
        lo = math.nextafter(low, math.inf) if low == 0.0 and not integer else low
        hi = 0.999 if high == 1.0 and not integer else high
        return draw(st.one_of(st.sampled_from([lo, hi]), valid_number(domain)))

    names = ["new", "casual"]
    items = {k: pick(d) for k, d in ITEM_DOMAIN.items() if k not in ("head_fraction", "torso_fraction")}
    segments = {n: {k: pick(d) for k, d in SEGMENT_DOMAIN.items()} for n in names}
    for seg in segments.values():
        seg["history_mean"] = min(seg["history_mean"], draw(st.sampled_from([0.0, 1e3, 1e6])))
    shifts = [{"kind": kind, "day": 1, "topic": 0, "strength": pick(SHIFT_DOMAIN["strength"]),
               "fraction": pick(SHIFT_DOMAIN["fraction"]), "request_mix": {"new": 1.0},
               **({"param": draw(st.sampled_from(TASTE_PARAMS)), "value": pick((0.0, 50.0, False)), "every": 1}
                  if kind == "taste" else {})} for kind in SHIFT_KINDS]
    return WorldConfig(
        num_items=30, num_users=40, num_topics=3, embedding_dim=4, num_creators=draw(st.sampled_from([1, 10])),
        steps_per_day=1, position_decay=pick(WORLD_DOMAIN["position_decay"]), graduate_after=draw(st.sampled_from([0, 1])),
        graduate_to={"casual": 1.0}, items=items, segments=segments, request_mix={"new": 0.5, "casual": 0.5},
        shifts=shifts,
    )


@pytest.mark.slow
@pytest.mark.filterwarnings("error::RuntimeWarning")  # no overflow, no nan on the way
@settings(max_examples=200, **SETTINGS)
@given(extreme_worlds(), st.integers(0, 2**32 - 1))
def test_valid_extreme_worlds_simulate(cfg: WorldConfig, seed: int) -> None:
    simulate(cfg, seed)


def simulate(cfg: WorldConfig, seed: int) -> None:
    env = envs.SlateEnv(world=cfg, num_candidates=5, slate_size=3)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(3):  # steps_per_day = 1: every step is a new day (expiry, then every shift fires on day 1)
        assert np.isfinite(obs["user"]).all() and np.isfinite(obs["candidates"]).all()
        obs, reward, terminated, _, info = env.step(rng.choice(5, 3, replace=False))
        assert math.isfinite(reward)
        assert np.isfinite(info["choice_prob"]).all() and np.isfinite(info["satisfaction"])
        assert np.isfinite(info["dwell"]).all()
        assert obs in env.observation_space
        if terminated:
            obs, _ = env.reset()


# ---------------------------------------------------------------------------------------------- (b) actions
TINY = {"num_items": 200, "num_users": 300, "num_topics": 4, "num_creators": 20, "embedding_dim": 8, "steps_per_day": 20}
NAMESPACE_IDS = sorted(i for i in gym.registry if i.startswith(f"{NAMESPACE}/"))
SLATE_IDS = [i for i in NAMESPACE_IDS if gym.spec(i).vector_entry_point is not None]
WINDOW_IDS = [i for i in NAMESPACE_IDS if i not in SLATE_IDS]


def tiny_world(env_id: str) -> dict[str, Any]:
    return {**gym.spec(env_id).kwargs.get("world", {}), **TINY}


def space_bounds(space: spaces.Space) -> tuple[list[Any], list[Any], bool]:
    """Per-entry inclusive bounds as Python numbers, and whether the space holds integers."""
    if isinstance(space, spaces.MultiDiscrete):
        low = np.asarray(space.start).reshape(-1)
        high = (low + np.asarray(space.nvec).reshape(-1) - 1)
        return low.tolist(), high.tolist(), True
    assert isinstance(space, spaces.Box), space
    integral = np.issubdtype(space.dtype, np.integer)
    return space.low.reshape(-1).tolist(), space.high.reshape(-1).tolist(), integral


def nest(flat: list[Any], shape: tuple[int, ...]) -> Any:
    if len(shape) <= 1:
        return list(flat) if shape else flat[0]
    step = len(flat) // shape[0]
    return [nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def bad_entries(low: Any, high: Any, integral: bool) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from([high + 1, low - 1, 2**63, 2**64, 10**400, -(2**63) - 1, math.nan, math.inf, -math.inf,
                         low + 0.5, True, False, None, "1", 1 + 0j, np.float32("nan"), np.bool_(True), high + 10**6]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(),
        st.integers(int(math.floor(low)), int(math.ceil(high))),  # in range after all
    )


@st.composite
def actions(draw: Any, space: spaces.Space) -> Any:
    """A valid action, or one with bad entries, a bad dtype or a bad shape; as an array (some dtype), list or tuple."""
    low, high, integral = space_bounds(space)
    shape = tuple(space.shape)
    n = len(low)
    rng = np.random.default_rng(draw(SEEDS))  # the valid entries come from a seed: one draw, not one per entry
    if integral:
        flat: list[Any] = [int(v) for v in rng.integers(np.asarray(low), np.asarray(high) + 1)]
        if draw(st.booleans()):
            flat = [float(v) for v in flat]  # integral floats are indices too
    else:
        u = rng.random(n)
        u[rng.random(n) < 0.2] = 0.0  # the bounds themselves, now and then
        u[rng.random(n) < 0.2] = 1.0
        flat = [float(np.float32(lo + x * (hi - lo))) for x, lo, hi in zip(u, low, high)]
    mode = draw(st.sampled_from(["valid", "valid", "entries", "entries", "entries", "dtype", "shape"]))
    if mode == "entries":
        for _ in range(draw(st.integers(1, min(3, n)))):
            i = draw(st.integers(0, n - 1))
            flat[i] = draw(bad_entries(low[i], high[i], integral))
    if mode == "shape":
        new_shape = draw(st.sampled_from([(1, *shape), (*shape, 1), (n + 1,), (max(n - 1, 0),), (), shape[::-1]]))
        size = int(np.prod(new_shape))
        flat = (flat * (size // max(n, 1) + 1))[:size] if size else []
        shape = new_shape
        if not size and shape:
            return np.zeros(shape)
    nested = nest(flat, shape) if shape else flat[0]
    container = draw(st.sampled_from(["array", "array", "typed", "list", "tuple", "object"]))
    if mode == "dtype":
        kind = draw(st.sampled_from(["bool", "complex", "str"]))
        return np.array(nested, dtype={"bool": bool, "complex": complex, "str": str}[kind])
    if container == "list" and isinstance(nested, list):
        return nested
    if container == "tuple" and isinstance(nested, list):
        return tuple(nested)
    if container == "object":
        return np.array(nested, dtype=object)
    if container == "typed":
        dtype = draw(st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64, np.float16,
                                      np.float32, np.float64]))
        try:
            with np.errstate(all="ignore"):  # a cast that overflows or wraps is caught by the exactness check below
                arr = np.array(nested, dtype=dtype)
        except (OverflowError, ValueError, TypeError):
            return np.array(nested, dtype=object)
        same = np.array(nested, dtype=object)
        exact = arr.shape == same.shape and all(
            (isinstance(b, (int, float)) and not isinstance(b, bool) and (a == b or (a != a and b != b)))
            for a, b in zip(arr.reshape(-1).tolist(), same.reshape(-1).tolist())
        )
        return arr if exact else same
    try:
        return np.asarray(nested)
    except (ValueError, TypeError, OverflowError):
        return np.array(nested, dtype=object)


def flatten(action: Any) -> tuple[tuple[int, ...], list[Any]] | None:
    """Shape and entries of an action as given, without numpy's conversions; None if it is ragged."""
    if isinstance(action, np.ndarray):
        return action.shape, [v.item() if isinstance(v, np.generic) else v for v in action.reshape(-1).tolist()]
    if isinstance(action, (list, tuple)):
        parts = [flatten(a) for a in action]
        if any(p is None for p in parts) or len({p[0] for p in parts}) > 1:  # type: ignore[index]
            return None
        inner = parts[0][0] if parts else ()  # type: ignore[index]
        return (len(action), *inner), [v for p in parts for v in p[1]]  # type: ignore[index]
    return (), [action.item() if isinstance(action, np.generic) else action]


def oracle(action: Any, space: spaces.Space) -> np.ndarray | None:
    """The action as a point of ``space`` if it is one exactly (no rounding, reshaping or wrapping), else None.

    Entries must be real numbers (not bools), finite, integral for integer spaces and within the bounds, compared
    as Python numbers; the safely converted array must then be in ``space`` by Gymnasium's own ``contains``.
    """
    if isinstance(action, np.ndarray) and action.dtype.kind not in "iufO":
        return None
    parsed = flatten(action)
    if parsed is None or parsed[0] != tuple(space.shape):
        return None
    low, high, integral = space_bounds(space)
    for v, lo, hi in zip(parsed[1], low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        if isinstance(v, float) and (not math.isfinite(v) or (integral and not v.is_integer())):
            return None
        if not lo <= v <= hi:
            return None
    arr = np.array(parsed[1], dtype=space.dtype).reshape(space.shape)
    return arr if space.contains(arr) else None


def expect(step: Callable[[Any], Any], action: Any, space: spaces.Space, key: str) -> Any:
    """Step with ``action``: success exactly when the oracle accepts it; otherwise the clear error, naming ``key``."""
    point = oracle(action, space)
    try:
        out = step(action)
    except ValueError as exc:
        assert isinstance(exc, ConfigError), repr(exc)
        assert point is None, f"a valid action was rejected: {exc}"
        assert str(exc).startswith(f"`{key}` must lie in "), str(exc)
        return None
    assert point is not None, f"an invalid action was accepted: {action!r}"
    return out


def finite_obs(obs: Any) -> bool:
    if isinstance(obs, dict):
        return all(finite_obs(v) for v in obs.values())
    return bool(np.isfinite(obs).all())


@pytest.fixture(scope="module")
def slate_envs() -> dict[str, gym.Env]:
    out = {}
    for env_id in SLATE_IDS:
        env = gym.make(env_id, world=tiny_world(env_id)).unwrapped
        env.reset(seed=0)
        out[env_id] = env
    return out


@pytest.fixture(scope="module")
def slate_vector_envs() -> dict[str, gym.vector.VectorEnv]:
    out = {}
    for env_id in SLATE_IDS:
        env = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point", world=tiny_world(env_id))
        env.reset(seed=0)
        out[env_id] = env
    return out


@pytest.fixture(scope="module")
def window_envs() -> dict[str, gym.Env]:
    torch.set_num_threads(1)
    out = {}
    for env_id in WINDOW_IDS:  # learn=False: the action path is the same, a step is 30x cheaper
        env = gym.make(env_id, world=TINY, window=20, concurrency=10, learn=False).unwrapped
        env.reset(seed=0)
        out[env_id] = env
    return out


def test_the_namespace_is_covered() -> None:
    assert set(SLATE_IDS) == set(envs.ENV_IDS) and set(WINDOW_IDS) == set(envs.EVOLUTION_ENV_IDS)


@pytest.mark.parametrize("env_id", SLATE_IDS)
@settings(max_examples=700, **SETTINGS)
@given(data=st.data())
def test_slate_env_actions(slate_envs: dict[str, gym.Env], env_id: str, data: st.DataObject) -> None:
    env = slate_envs[env_id]
    action = data.draw(actions(env.action_space))
    out = expect(env.step, action, env.action_space, "action")
    if out is not None:
        obs, reward, terminated, truncated, info = out
        assert finite_obs(obs) and math.isfinite(reward) and obs in env.observation_space
        assert np.isfinite(info["choice_prob"]).all()
        if terminated or truncated:
            env.reset()


@pytest.mark.parametrize("env_id", SLATE_IDS)
@settings(max_examples=300, **SETTINGS)
@given(data=st.data())
def test_slate_vector_env_actions(slate_vector_envs: dict[str, Any], env_id: str, data: st.DataObject) -> None:
    env = slate_vector_envs[env_id]
    action = data.draw(actions(env.action_space))
    out = expect(env.step, action, env.action_space, "actions")
    if out is not None:
        obs, reward, _, _, _ = out
        assert finite_obs(obs) and np.isfinite(reward).all() and obs in env.observation_space


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("env_id", WINDOW_IDS)
@settings(max_examples=200, **SETTINGS)
@given(data=st.data())
def test_window_env_actions(window_envs: dict[str, gym.Env], env_id: str, data: st.DataObject) -> None:
    env = window_envs[env_id]
    action = data.draw(actions(env.action_space))
    out = expect(env.step, action, env.action_space, "action")
    if out is not None:
        obs, reward, _, _, info = out
        assert finite_obs(obs) and math.isfinite(reward) and obs in env.observation_space
        config = env.to_config(env.composition) if hasattr(env, "composition") else info["config"]
        assert_config_in(env.target_params(), config)


# ---------------------------------------------------------------------------------------------- (c) codecs
def agent_classes() -> list[type]:
    found, todo = [], list(DecisionAgent.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.params.params and cls not in found:
            found.append(cls)
    return sorted(found, key=lambda c: c.__name__)


AGENTS = agent_classes()
assert functional and fusion and ranking and recall and rerank  # imported for their agents


def assert_config_in(params: ParamSpace, config: dict[str, Any]) -> None:
    for p in params.params:
        value = config[p.name]
        if isinstance(p, Range):
            assert isinstance(value, float) and math.isfinite(value) and p.low <= value <= p.high, (p, value)
        else:
            assert any(value is o or (type(value) is type(o) and value == o) for o in p.options), (p, value)


def test_every_agent_space_is_covered() -> None:
    # FeatureRanker: TorchRanker's space over a feature set; PreRanker: TorchRanker's plus the cascade's keep
    assert len(AGENTS) == 12, [c.__name__ for c in AGENTS]


@pytest.mark.parametrize("kind", CODECS)
@pytest.mark.parametrize("agent", AGENTS, ids=lambda c: c.__name__)
@settings(max_examples=120, **SETTINGS)
@given(data=st.data())
def test_codec_decode(agent: type, kind: str, data: st.DataObject) -> None:
    codec = SpaceCodec(agent.params, kind, bins=5)
    action = data.draw(actions(codec.space))
    config = expect(codec.decode, action, codec.space, "action")
    if config is not None:
        assert_config_in(agent.params, config)
        assert agent.params.validate(config) == config


@st.composite
def agent_configs(draw: Any) -> tuple[ParamSpace, Any, str]:
    agent = draw(st.sampled_from(AGENTS))
    params: ParamSpace = agent.params
    if draw(st.integers(0, 9)) == 0:
        return params, draw(JUNK), "agent config"
    config: dict[Any, Any] = {}
    for p in params.params:
        if draw(st.booleans()):
            continue
        valid = st.sampled_from(p.options) if isinstance(p, Choice) else st.floats(p.low, p.high)
        config[p.name] = draw(st.one_of(valid, valid, JUNK))
    if draw(st.integers(0, 9)) == 0:
        config[draw(st.sampled_from(["kk", "mmr_lamda", 3]))] = 1
    return params, config, "agent"


@pytest.mark.slow
@settings(max_examples=1400, **SETTINGS)
@given(agent_configs())
def test_param_space_validate(generated: tuple[ParamSpace, Any, str]) -> None:
    params, config, _ = generated
    try:
        out = params.validate(config, agent="agent")
    except ConfigError as exc:
        assert str(exc).startswith("`agent"), str(exc)
        return
    assert_config_in(params, out)
