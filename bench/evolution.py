"""Speed of an evolution run: PPO on the evolution env, windows of 10,000 requests through the full pipeline.

Times ``--windows`` windows of PPO learning (n_steps = 10) on the default world (10k items), and splits
the wall time between the env (serving the window and every agent's learning) and the controller (PPO's
rollouts and updates). Last line: one JSON object with ``windows_per_s``, ``env_share``,
``controller_share`` and ``projected_200_windows_s`` (200 windows at the measured rate).
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import torch
from stable_baselines3 import PPO

from agents.evolution.env import EvolutionEnv


class Timed(gym.Wrapper):
    """Accumulates the seconds spent inside the wrapped env's ``step`` and ``reset``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.seconds = 0.0

    def step(self, action):
        t = time.perf_counter()
        out = self.env.step(action)
        self.seconds += time.perf_counter() - t
        return out

    def reset(self, **kwargs):
        t = time.perf_counter()
        out = self.env.reset(**kwargs)
        self.seconds += time.perf_counter() - t
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=20)
    ap.add_argument("--window", type=int, default=10_000)
    ap.add_argument("--agent", default="baseline/rerank/mmr")
    a = ap.parse_args()
    torch.set_num_threads(2)
    env = Timed(EvolutionEnv(world={}, window=a.window, concurrency=1000, agent=a.agent))
    model = PPO("MlpPolicy", env, n_steps=10, batch_size=10, seed=0, device="cpu")
    t = time.perf_counter()
    model.learn(total_timesteps=a.windows)
    total = time.perf_counter() - t
    windows = model.num_timesteps
    rate = windows / total
    print(f"{windows} windows of {a.window} requests in {total:.1f} s: {rate:.3f} windows/s "
          f"(env {env.seconds / total:.0%}, controller {1 - env.seconds / total:.0%})")
    print(json.dumps({
        "windows_per_s": round(rate, 4), "window_requests": a.window, "windows": windows,
        "env_share": round(env.seconds / total, 3), "controller_share": round(1 - env.seconds / total, 3),
        "projected_200_windows_s": round(200 / rate, 1), "agent": a.agent,
    }))


if __name__ == "__main__":
    main()
