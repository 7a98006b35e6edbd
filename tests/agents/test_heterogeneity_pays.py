"""Heterogeneity pays: routing cold-start users to a specialist pipeline beats one model for everyone.

One model for everyone here is the static baseline with a linear (logistic) multi-task ranker: its
weights are shared by all segments, so the heavy and casual users who make most of the traffic set
them. The specialist pipeline (popularity-led recall, its own ranker trained on new users' traffic)
serves the "new" segment; everyone else keeps the baseline.

Measured on this small world, clicks per request over windows 3-7 (seeds 1, 2):
new users 0.137 / 0.162 with one model vs 0.502 / 0.379 routed; heavy users 0.432 / 0.451 vs
0.404 / 0.461 (no systematic change).
Against an MLP one-model baseline (which sees the segment among its features) the gain was not
significant in exploratory runs (new users 0.498 / 0.431 one model vs 0.443 / 0.546 routed): a
finding for the C1 ablation, not a test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from agents.decision.configs import segment_routed, static_baseline
from agents.decision.system import Simulation

CFG = envs.WorldConfig(num_items=3000, num_users=6000)
NEW, HEAVY = 0, 2


def clicks_by_segment(routed: bool, seed: int) -> np.ndarray:
    torch.set_num_threads(1)
    system = segment_routed(CFG, arch="linear") if routed else static_baseline(CFG, arch="linear")
    sim = Simulation(envs.World(CFG, seed=seed), system, concurrency=500, seed=0)
    logs = [sim.window(5000) for _ in range(8)]
    seg = np.concatenate([log.requests["segment"] for log in logs[3:]])
    clicks = np.concatenate([log.requests["clicks"] for log in logs[3:]])
    return np.array([clicks[seg == s].mean() for s in range(len(CFG.segments))])


@pytest.mark.slow
def test_cold_start_specialist_beats_one_linear_model():
    seeds = (1, 2)
    one = np.mean([clicks_by_segment(False, s) for s in seeds], axis=0)
    routed = np.mean([clicks_by_segment(True, s) for s in seeds], axis=0)
    # new users: measured two-seed means 0.15 -> 0.44 clicks per request
    assert routed[NEW] - one[NEW] >= 0.12, (one, routed)
    # heavy users served by the same baseline pipeline: within a tolerance of 0.05 (measured 0.442 -> 0.433)
    assert routed[HEAVY] >= one[HEAVY] - 0.05, (one, routed)
