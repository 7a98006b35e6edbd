"""``obs_mode="ids"``: candidate item ids plus a read-only view of the live catalog feature table, equivalent to the
dense observation (both env checkers pass in this mode too: tests/envs/test_checkers.py), and rejected with a
ConfigError when misspelt."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.registration import SMALL_WORLD
from envs.sb3_vec import SB3VecEnv

NUM_ENVS = 8
# a small world whose days are 3 steps long, with half the catalog replaced on day 1
FAST_DAYS = {**SMALL_WORLD, "steps_per_day": 3, "shifts": [{"kind": "catalog_refresh", "day": 1, "fraction": 0.5}]}


def test_ids_observation_space() -> None:
    env = gym.make("agentic-rs/SlateSmall-v0", obs_mode="ids")
    space = env.observation_space
    assert set(space.spaces) == {"user", "candidate_ids"}
    ids = space["candidate_ids"]
    assert ids.dtype == np.int64 and ids.shape == (20,)
    assert ids.low.min() == 0 and ids.high.max() == SMALL_WORLD["num_items"] - 1
    dense = gym.make("agentic-rs/SlateSmall-v0").observation_space
    assert space["user"] == dense["user"]
    vec = gym.make_vec("agentic-rs/SlateSmall-v0", num_envs=NUM_ENVS, vectorization_mode="vector_entry_point", obs_mode="ids")
    assert vec.single_observation_space == space
    assert vec.observation_space["candidate_ids"].shape == (NUM_ENVS, 20)


def test_single_env_ids_gather_equals_dense() -> None:
    dense = gym.make("agentic-rs/SlateSmall-v0", world=FAST_DAYS)
    ids = gym.make("agentic-rs/SlateSmall-v0", world=FAST_DAYS, obs_mode="ids")
    od, _ = dense.reset(seed=3)
    oi, _ = ids.reset(seed=3)
    ids.action_space.seed(3)
    for _ in range(40):  # several sessions and day boundaries (catalog refresh on day 1)
        table = ids.get_wrapper_attr("catalog_features")
        np.testing.assert_array_equal(table[oi["candidate_ids"]], od["candidates"])
        np.testing.assert_array_equal(oi["user"], od["user"])
        action = ids.action_space.sample()
        od, rd, td, ud, _ = dense.step(action)
        oi, ri, ti, ui, _ = ids.step(action)
        assert (rd, td, ud) == (ri, ti, ui)
        if td or ud:
            od, _ = dense.reset()
            oi, _ = ids.reset()
    assert ids.unwrapped.world.day >= 2


def test_vector_env_ids_gather_equals_dense() -> None:
    kw = {"num_envs": NUM_ENVS, "vectorization_mode": "vector_entry_point", "world": FAST_DAYS}
    dense = gym.make_vec("agentic-rs/SlateSmall-v0", **kw)
    ids = gym.make_vec("agentic-rs/SlateSmall-v0", obs_mode="ids", **kw)
    od, _ = dense.reset(seed=5)
    oi, _ = ids.reset(seed=5)
    ids.action_space.seed(5)
    for _ in range(20):
        assert oi in ids.observation_space
        np.testing.assert_array_equal(ids.unwrapped.catalog_features[oi["candidate_ids"]], od["candidates"])
        np.testing.assert_array_equal(oi["user"], od["user"])
        action = ids.action_space.sample()
        od, rd, td, ud, _ = dense.step(action)
        oi, ri, ti, ui, _ = ids.step(action)
        np.testing.assert_array_equal(rd, ri)
        np.testing.assert_array_equal(td | ud, ti | ui)
    # a partial reset draws new ids for the masked slots only and leaves the arrays handed out before untouched
    before = oi["candidate_ids"].copy()
    mask = np.zeros(NUM_ENVS, bool)
    mask[::2] = True
    new, _ = ids.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(oi["candidate_ids"], before)
    np.testing.assert_array_equal(new["candidate_ids"][~mask], before[~mask])
    new_dense, _ = dense.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(ids.unwrapped.catalog_features[new["candidate_ids"]], new_dense["candidates"])


def test_catalog_features_read_only_and_live() -> None:
    env = gym.make("agentic-rs/SlateSmall-v0", world=FAST_DAYS, obs_mode="ids")
    env.reset(seed=0)
    world = env.unwrapped.world
    table = env.get_wrapper_attr("catalog_features")
    assert not table.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        table[0, 0] = 1.0
    assert np.shares_memory(table, world.catalog.features)  # a view, not a copy
    start = table.copy()
    env.action_space.seed(0)
    day = world.day
    while world.day < day + 2:  # past two day boundaries: freshness decays, day 1 replaces half the catalog
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    np.testing.assert_array_equal(table, world.catalog.features)  # the view held since reset shows the new values
    assert not np.array_equal(table, start)
    fresh = env.unwrapped._batch.candidate_ids[0]
    np.testing.assert_array_equal(env.get_wrapper_attr("catalog_features")[fresh], world.catalog.features[fresh])
    # a seeded reset builds a new world: the attribute serves the new world's table
    env.reset(seed=1)
    assert np.shares_memory(env.get_wrapper_attr("catalog_features"), env.unwrapped.world.catalog.features)
    assert not np.shares_memory(env.get_wrapper_attr("catalog_features"), table)


def test_sb3_vec_env_over_ids_mode() -> None:
    venv = SB3VecEnv(
        gym.make_vec("agentic-rs/SlateSmall-v0", num_envs=NUM_ENVS, vectorization_mode="vector_entry_point", obs_mode="ids")
    )
    venv.seed(0)
    obs = venv.reset()
    assert obs["candidate_ids"].shape == (NUM_ENVS, 20) and obs["candidate_ids"].dtype == np.int64
    table = venv.get_attr("catalog_features")[0]
    assert not table.flags.writeable
    rng = np.random.default_rng(0)
    for _ in range(30):
        obs, _, dones, infos = venv.step(rng.integers(0, 20, (NUM_ENVS, 5)))
        for i in np.flatnonzero(dones):
            assert set(infos[i]["terminal_observation"]) == {"user", "candidate_ids"}
        assert table[obs["candidate_ids"]].shape == (NUM_ENVS, 20, table.shape[1])


@pytest.mark.parametrize("bad", ["sparse", "IDS ", None, 1])
def test_bad_obs_mode(bad: object) -> None:
    for make in (
        lambda: envs.SlateEnv(obs_mode=bad),
        lambda: envs.SlateVectorEnv(num_envs=2, obs_mode=bad),
        lambda: gym.make("agentic-rs/SlateSmall-v0", obs_mode=bad),
    ):
        with pytest.raises(envs.ConfigError) as err:
            make()
        msg = str(err.value)
        assert "`obs_mode`" in msg and "'dense'" in msg and "'ids'" in msg
        assert repr(bad) in msg


def test_ids_observation_is_the_callers_own() -> None:
    env = gym.make_vec("agentic-rs/SlateSmall-v0", num_envs=NUM_ENVS, vectorization_mode="vector_entry_point", obs_mode="ids")
    obs, _ = env.reset(seed=0)
    served = env.unwrapped._batch.candidate_ids.copy()
    obs["candidate_ids"][:] = 0  # a caller writing into its observation does not change what the env serves
    np.testing.assert_array_equal(env.unwrapped._batch.candidate_ids, served)
