"""Stable Baselines3 PPO builds on the small slate env, learns a few updates, and acts in the action space."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO


@pytest.mark.slow
def test_ppo_learns_and_predicts_on_slate_small() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        env = gym.make("agentic-rs/SlateSmall-v0")
        model = PPO("MultiInputPolicy", env, n_steps=256, batch_size=64, seed=0, device="cpu", verbose=0)
        model.learn(total_timesteps=2048)
    finally:
        torch.set_num_threads(threads)
    assert model.num_timesteps >= 2048

    fresh = gym.make("agentic-rs/SlateSmall-v0")
    obs, _ = fresh.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert action in fresh.action_space
    _, reward, _, _, _ = fresh.step(action)  # the env accepts it
    assert np.isfinite(reward)
