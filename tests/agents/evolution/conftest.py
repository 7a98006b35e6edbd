"""Fixtures shared by the evolution tests."""

from __future__ import annotations

import pytest
import torch

import envs
from agents.decision.configs import static_baseline
from agents.evolution.deployment import Deployment

SMALL = envs.WorldConfig(num_items=2000, num_users=4000, num_topics=10, num_creators=100)


@pytest.fixture(scope="module")
def logged_small():
    """A small deployment after 2 warm-up windows, and the 4 windows it then served, recorded (one per module: the
    tests may serve it further)."""
    torch.set_num_threads(1)
    svc = Deployment.start(SMALL, static_baseline(SMALL, seed=0), seed=1, window=1000, concurrency=400)
    svc.serve(2)
    svc.start_recording()
    svc.serve(4)
    return svc, svc.stop_recording()
