"""The system's learning does not depend on the caller's autograd mode (SB3's ARS and evaluation loops step
envs under ``torch.no_grad()``; others use ``torch.inference_mode()``).

Stepping under either mode gives the same trajectory, bit for bit on one machine, as stepping with
gradients on: the rankers train inside the env whatever mode the caller is in.
"""

from __future__ import annotations

import contextlib

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers the ids)

TINY = {"num_items": 600, "num_users": 1200, "num_topics": 5, "num_creators": 30, "steps_per_day": 20}
MODES = {"grad": contextlib.nullcontext, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


def rollout(env_id: str, mode: str, steps: int = 3) -> list[tuple[np.ndarray, float]]:
    torch.set_num_threads(1)
    env = gym.make(env_id, world=TINY, window=200, concurrency=100)
    env.action_space.seed(0)
    out = []
    with MODES[mode]():
        obs, _ = env.reset(seed=0)  # the system (and its torch models) is built inside the mode too
        for _ in range(steps):
            obs, reward, *_ = env.step(env.action_space.sample())
            out.append((obs, float(reward)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["agentic-rs/Evolution-v0", "agentic-rs/Composition-v0"])
def test_envs_step_and_learn_under_no_grad_and_inference_mode(env_id):
    reference = rollout(env_id, "grad")
    for mode in ("no_grad", "inference_mode"):
        got = rollout(env_id, mode)
        for (obs_a, r_a), (obs_b, r_b) in zip(reference, got):
            np.testing.assert_array_equal(obs_a, obs_b, err_msg=mode)
            assert r_a == r_b, (mode, r_a, r_b)


def test_ranker_takes_gradient_steps_under_inference_mode():
    from agents.decision.ranking import TorchRanker

    with torch.inference_mode():
        ranker = TorchRanker(in_dim=6, num_segments=2, num_routes=1, arch="linear", config={"min_updates": 100})
        before = [p.detach().clone() for p in ranker.model.parameters()]
        x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
        click = (x[:, 0] > 0).astype(np.float32)
        ranker.remember(x, np.zeros(64, np.int64), click, np.zeros(64, np.float32), np.zeros(64, np.float32))
        ranker.observe(None)  # type: ignore[arg-type]
    assert ranker.updates >= 100
    assert any(not torch.equal(a, b) for a, b in zip(before, ranker.model.parameters()))
