"""Speed of an evolution run: PPO on the evolution env, windows of 10,000 requests through the full pipeline.

Times ``--windows`` windows of PPO learning (n_steps = 10) on the default world (10k items), and splits
the wall time between the env (serving the window and every agent's learning) and the controller (PPO's
rollouts and updates). Prints each window's env time (serving it and every agent's learning). Last line: one JSON
object with ``windows_per_s``, ``env_share``, ``controller_share``, ``projected_200_windows_s`` (200 windows at the
measured rate) and ``last_first_ratio``: the mean env time of the last 5 windows over that of the first 5 after the
first (which includes warm-up); about 1 when windows cost the same all run long, well above 1 when they slow down
(as they did when the ranker's weights decayed into float32 subnormals, tests/agents/test_ranking_numerics.py).
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
    """Accumulates the seconds spent inside the wrapped env's ``step`` and ``reset``; ``steps`` holds each step's."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.seconds = 0.0
        self.steps: list[float] = []

    def step(self, action):
        t = time.perf_counter()
        out = self.env.step(action)
        dt = time.perf_counter() - t
        self.seconds += dt
        self.steps.append(dt)
        print(f"window {len(self.steps)}: {dt:.2f} s", flush=True)
        return out

    def reset(self, **kwargs):
        t = time.perf_counter()
        out = self.env.reset(**kwargs)
        self.seconds += time.perf_counter() - t
        return out


def last_first_ratio(seconds: list[float], n: int = 5) -> float | None:
    """Mean of the last ``n`` windows' times over the mean of the first ``n`` after the first (warm-up); None when
    there are fewer than ``n + 1`` windows (the two groups overlap when fewer than ``2 n + 1``)."""
    rest = seconds[1:]
    if len(rest) < n:
        return None
    return round(sum(rest[-n:]) / max(sum(rest[:n]), 1e-12), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=20)
    ap.add_argument("--window", type=int, default=10_000)
    ap.add_argument("--agent", default="baseline/rerank/mmr")
    # one thread: the ranker's ops are small (batches of ~1k rows, 64 wide), and on a shared 2-core machine a second
    # intra-op thread that is not scheduled stalls every parallel op (measured 25x slower windows under load)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
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
        "last_first_ratio": last_first_ratio(env.steps), "window_s": [round(s, 3) for s in env.steps],
    }))


if __name__ == "__main__":
    main()
