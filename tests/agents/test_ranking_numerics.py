"""The ranker computes with no subnormal float32 values (0 < |x| < float32 tiny).

Subnormal arithmetic runs in CPU microcode: a few dozen subnormal weights made every linear layer of the ranker
~10x slower, and an evolution run's windows slower and slower (bench/evolution.py's ``last_first_ratio``). They came
from Adam's L2 weight decay driving the weights of ReLU units that stopped firing geometrically toward 0, and from
Adam's first moment of those weights decaying by ``beta1`` per step; a Beta-drawn item risk can also be ~1e-41.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from agents.decision.configs import build_system, static_baseline_config
from agents.decision.context import CatalogView, RequestBatch
from agents.decision.ranking import _InputParts, pair_features
from agents.decision.system import Simulation
from envs.config import WorldConfig, world_size
from envs.world import World

TINY = torch.finfo(torch.float32).tiny


def subnormal(a) -> int:
    t = torch.as_tensor(a).detach()
    if not t.is_floating_point():
        return 0
    return int(((t.abs() < TINY) & (t != 0)).sum())


@pytest.fixture(scope="module")
def served():
    """A small world served for a dozen windows of 2,000 requests by the static baseline (fast ranker); every
    optimizer step's parameters are checked, not only those between windows."""
    cfg = WorldConfig(**world_size("small"))
    world = World(cfg, seed=0)
    system = build_system(static_baseline_config(fast=True), cfg)
    sim = Simulation(world, system, concurrency=400, seed=0)
    ranker = system.pipelines[0].ranker
    during = {"steps": 0, "subnormal": 0}

    def check(opt, *_):
        during["steps"] += 1
        during["subnormal"] += sum(subnormal(p) for p in ranker.model.parameters())

    ranker._opt.register_step_post_hook(check)
    for _ in range(12):
        sim.window(2000)
    return world, sim, ranker, during


def test_parameters_never_subnormal_during_training(served):
    _, _, ranker, during = served
    assert during["steps"] >= 1000
    assert during["subnormal"] == 0, f"{during['subnormal']} subnormal parameter values summed over {during['steps']} steps"


def test_parameters_and_optimizer_state_hold_no_subnormals(served):
    _, _, ranker, _ = served
    bad = {n: subnormal(p) for n, p in ranker.model.named_parameters() if subnormal(p)}
    names = {id(p): n for n, p in ranker.model.named_parameters()}
    for p, state in ranker._opt.state.items():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and v.dim() and subnormal(v):
                bad[f"{names[id(p)]}.{k}"] = subnormal(v)
    assert not bad, f"subnormal values (count per tensor): {bad}"


def test_inputs_and_cached_parts_hold_no_subnormals(served):
    world, sim, ranker, _ = served
    assert subnormal(ranker._buf_x) == 0
    catalog = CatalogView.of(world)
    catalog = dataclasses.replace(catalog, features=catalog.features.copy())
    catalog.features[0, -1] = 1e-41  # a Beta-drawn risk can be that small
    users = np.arange(64)
    batch = RequestBatch.of(world, users, users)
    items = np.tile(np.arange(10), (64, 1))
    route = np.zeros_like(items)
    assert subnormal(pair_features(batch, items, route, catalog, ranker.num_routes, np.zeros_like(items))) == 0
    parts = _InputParts(ranker.model.input_layer, catalog, batch.user_features.shape[1], ranker.num_routes)
    assert subnormal(parts.item_part) == 0 and subnormal(parts.embedding) == 0
    assert subnormal(parts.pre_activation(batch, items, route)) == 0
