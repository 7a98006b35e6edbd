"""A/A replicates: the same arm with the system's own randomness re-seeded, on the same world and traffic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.evolution.composition import CompositionEnv
from agents.evolution.deployment import replicate_seed
from agents.evolution.env import EvolutionEnv
from envs.validation import ConfigError

TINY = {"num_items": 600, "num_users": 1200, "num_topics": 5, "num_creators": 30, "steps_per_day": 20}


def test_replicate_seed_is_the_seed_for_replicate_zero_and_independent_otherwise():
    assert replicate_seed(7, 0) == 7
    seeds = {replicate_seed(7, r) for r in range(1, 6)} | {replicate_seed(8, 1)}
    assert len(seeds) == 6 and 7 not in seeds and replicate_seed(7, 1) == replicate_seed(7, 1)
    with pytest.raises(ConfigError, match="replicate"):
        replicate_seed(7, -1)


def _first_window(env: EvolutionEnv) -> tuple[set[tuple[int, int]], float, torch.Tensor]:
    env.reset(seed=3)
    ranker = env.service.system.pipelines[0].ranker
    first_layer = next(ranker.model.parameters()).detach().clone()
    log = env.service.serve(1, learn=True)
    clicks = float(log.requests["clicks_exp"].mean())
    return set(zip(log.requests["user"].tolist(), log.requests["step"].tolist())), clicks, first_layer


def test_a_replicate_shares_world_and_traffic_but_not_the_systems_randomness():
    kw = {"world": TINY, "window": 200, "concurrency": 100, "warmup": 0}
    base, again, rep = (EvolutionEnv(**kw), EvolutionEnv(**kw), EvolutionEnv(**kw, replicate=1))
    users0, clicks0, w0 = _first_window(base)
    users1, clicks1, w1 = _first_window(again)
    users_r, clicks_r, w_r = _first_window(rep)
    assert users1 == users0 and clicks1 == clicks0 and torch.equal(w1, w0)  # replicate 0 is the run itself
    np.testing.assert_array_equal(rep.service.embedding, base.service.embedding)  # the same world
    assert not torch.equal(w_r, w0)  # the system's own initial weights are re-seeded
    assert clicks_r != clicks0  # so it serves other slates
    # the same users arrive at the same steps while sessions last alike (synchronised streams): most requests shared
    assert len(users_r & users0) > 0.8 * len(users0)


def test_a_composition_replicate_reseeds_its_pooled_rankers():
    kw = {"world": TINY, "window": 200, "concurrency": 100, "warmup": 0}
    a, b = CompositionEnv(**kw), CompositionEnv(**kw, replicate=2)
    a.reset(seed=1), b.reset(seed=1)
    wa = [p.detach().clone() for p in a.service.system.pipelines[0].ranker.model.parameters()]
    wb = [p.detach().clone() for p in b.service.system.pipelines[0].ranker.model.parameters()]
    assert not all(torch.equal(x, y) for x, y in zip(wa, wb))
    np.testing.assert_array_equal(a.service.embedding, b.service.embedding)
    with pytest.raises(ConfigError, match="replicate"):
        CompositionEnv(**kw, replicate=-1)
