"""Cost of a stationary replay (common random numbers) against a live window, on the same world, system and sizes.

A stationary env's step restores a snapshot and serves one window without the agents' learning (they learn only
after a window, and the next step restores the snapshot anyway: the reward is the same, tested in
``tests/agents/evolution/test_evolution_env.py``). What PPO's pre-training on simulated runs and the known-optimum
tests pay per step. Times ``--steps`` replays and ``--steps`` live windows (the ranker training after each) with the
same actions, and as a roofline the same replays served with learning on (what a replay cost before). Last line: one
JSON object with ``replay_s``, ``live_s``, ``replay_with_learning_s`` (median seconds per step) and the ratios
``live_over_replay`` and ``learning_over_replay``, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from agents.evolution.env import EvolutionEnv


def timed_steps(env: EvolutionEnv, actions: list[np.ndarray]) -> list[float]:
    out = []
    for a in actions:
        t = time.perf_counter()
        env.step(a)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--world", default="small", help="a size of envs.config.WORLD_SIZES")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from envs.config import world_size

    world = world_size(a.world)
    rng = np.random.default_rng(0)

    def make(stationary: bool) -> EvolutionEnv:
        return EvolutionEnv(world=world, window=a.window, warmup=2, stationary=stationary)

    replay, live = make(True), make(False)
    replay.reset(seed=0)
    live.reset(seed=0)
    actions = [rng.uniform(-1, 1, replay.action_space.shape).astype(np.float32) for _ in range(a.steps)]
    t_replay = timed_steps(replay, actions)
    t_live = timed_steps(live, actions)
    learning = make(True)
    learning.reset(seed=0)
    learning._serve_window = lambda: learning.service.serve(learn=True)  # the replay as it was: learning, then restored
    t_learning = timed_steps(learning, actions)
    r, lv, lr = (statistics.median(t) for t in (t_replay, t_live, t_learning))
    print(f"{a.steps} steps of {a.window} requests ({a.world} world): replay {r:.3f} s, live {lv:.3f} s, "
          f"replay with learning {lr:.3f} s (median per step)")
    print(json.dumps({"replay_s": round(r, 4), "live_s": round(lv, 4), "replay_with_learning_s": round(lr, 4),
                      "live_over_replay": round(lv / r, 2), "learning_over_replay": round(lr / r, 2),
                      "window": a.window, "world": a.world, "steps": a.steps}))


if __name__ == "__main__":
    main()
