"""The ranking architectures beyond linear and MLP: built from a design, served and trained online like the others."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from agents.decision.configs import ROUTES, feature_dim, static_baseline
from agents.decision.models import MODEL_ARCHITECTURES, ModelDesign, build_model
from agents.decision.ranking import TorchRanker
from agents.decision.system import Simulation
from envs.validation import ConfigError

SMALL = envs.WorldConfig(num_items=2000, num_users=4000, num_topics=10, num_creators=100)


@pytest.mark.parametrize("arch", ["wide_deep", "dcn", "fm", "mmoe"])
def test_each_architecture_serves_and_learns_inside_a_running_system(arch):
    torch.set_num_threads(1)
    world = envs.World(SMALL, seed=3)
    system = static_baseline(SMALL, seed=0)
    pipe = system.pipelines[0]
    design = ModelDesign(arch=arch, hidden=32, deep=True)
    pipe.ranker = TorchRanker(feature_dim(SMALL, len(ROUTES)), len(SMALL.segments), len(ROUTES), arch=arch, hidden=32,
                              config={"min_updates": 100, "batch_size": 256}, seed=0, design=design)
    sim = Simulation(world, system, concurrency=200, seed=0)
    before = [p.detach().clone() for p in pipe.ranker.model.parameters()]
    log = sim.window(400)
    scores = log.impressions["score"]
    assert len(scores) == 400 * 10 and np.isfinite(scores).all() and ((scores > 0) & (scores < 1)).all()
    assert pipe.ranker.updates >= 100  # observe() trained it on the window
    assert any(not torch.equal(a, b) for a, b in zip(before, pipe.ranker.model.parameters()))
    assert pipe.ranker.model.input_layer is None  # served from materialised pair features


def test_build_model_shapes_and_refusals():
    x = torch.randn(7, 12)
    for arch in MODEL_ARCHITECTURES[2:]:
        assert build_model(ModelDesign(arch=arch), 12)(x, torch.zeros(7, dtype=torch.int64)).shape == (7, 3)
    with pytest.raises(ConfigError, match=r"`model.arch` must be one of .* for build_model \(got 'mlp'\)"):
        build_model(ModelDesign(arch="mlp"), 12)
    with pytest.raises(ConfigError, match=r"per-segment towers are offered for \['linear', 'mlp'\] only \(got arch 'fm'\)"):
        TorchRanker(12, 3, 5, arch="fm", per_segment=True)
    with pytest.raises(ConfigError, match=r"`design.arch` must match the ranker's arch \(got 'dcn' vs 'fm'\)"):
        TorchRanker(12, 3, 5, arch="fm", design=ModelDesign(arch="dcn"))
    with pytest.raises(ConfigError, match=r"`loss_weights` must map \['dwell', 'like'\] to numbers in \[0, 10\]"):
        TorchRanker(12, 3, 5, loss_weights={"click": 1.0})
