"""Throughput of the slate envs vs a bare-numpy roofline of the same shapes, timed in one run.

``python bench/throughput.py`` prints a few lines and, last, one JSON object:
``user_steps_per_s`` (native vector env, uniformly random slates of distinct candidates),
``roofline_user_steps_per_s`` (bare numpy:
draw candidate ids, score user x candidate by a gathered dot product, sample a click among the slate
and a no-click option) and ``roofline_ratio`` = the first over the second. Medians over repeats.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import gymnasium as gym
import numpy as np

import envs


def median_rate(fn, work: int, repeats: int, iters: int) -> float:
    """Median of ``work * iters / seconds`` over ``repeats`` timed blocks of ``iters`` calls."""
    fn()  # warm up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        rates.append(work * iters / (time.perf_counter() - t))
    return statistics.median(rates)


def bench_vector(num_envs: int, num_candidates: int, slate_size: int, repeats: int, iters: int) -> float:
    env = gym.make_vec(
        "agentic-rs/Slate-v0", num_envs=num_envs, num_candidates=num_candidates, slate_size=slate_size,
        vectorization_mode="vector_entry_point",
    )
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    # uniformly random slates of distinct candidates (a slate never repeats an item), drawn before timing
    actions = [np.argsort(rng.random((num_envs, num_candidates)), axis=1)[:, :slate_size] for _ in range(16)]
    i = iter(range(10**9))
    rate = median_rate(lambda: env.step(actions[next(i) % 16]), num_envs, repeats, iters)
    env.close()
    return rate


def bench_single(num_candidates: int, slate_size: int, steps: int) -> float:
    env = gym.make("agentic-rs/Slate-v0", num_candidates=num_candidates, slate_size=slate_size)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, num_candidates, (steps, slate_size))
    t = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t)


def bench_roofline(num_envs: int, num_items: int, dim: int, num_candidates: int, slate_size: int, repeats: int,
                   iters: int) -> float:
    """Bare numpy of the same shapes: candidate ids, user x candidate scores, one sampled choice per user."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((num_items, dim), dtype=np.float32)
    users = rng.standard_normal((num_envs, dim), dtype=np.float32)
    pos = -np.log1p(np.arange(slate_size, dtype=np.float32))

    def step() -> np.ndarray:
        cand = rng.integers(0, num_items, (num_envs, num_candidates))
        scores = np.einsum("bcd,bd->bc", emb[cand], users)  # user x candidate scoring
        logits = np.empty((num_envs, slate_size + 1), np.float32)
        logits[:, 0] = 0.0  # no click
        logits[:, 1:] = scores[:, :slate_size] + pos  # the shown slate, with position bias
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        cum = np.cumsum(p, axis=1)
        r = rng.random(num_envs, dtype=np.float32)[:, None] * cum[:, -1:]
        return (cum <= r).sum(axis=1)

    return median_rate(step, num_envs, repeats, iters)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-envs", type=int, default=4096)
    ap.add_argument("--num-candidates", type=int, default=100)
    ap.add_argument("--slate-size", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    cfg = envs.WorldConfig()
    vec = bench_vector(a.num_envs, a.num_candidates, a.slate_size, a.repeats, a.iters)
    roof = bench_roofline(a.num_envs, cfg.num_items, cfg.embedding_dim, a.num_candidates, a.slate_size, a.repeats, a.iters)
    single = bench_single(a.num_candidates, a.slate_size, 3000)
    print(f"vector env : {vec:12,.0f} user-steps/s  ({a.num_envs} envs, {a.num_candidates} candidates, slate {a.slate_size})")
    print(f"roofline   : {roof:12,.0f} user-steps/s  (bare numpy, same shapes)")
    print(f"single env : {single:12,.0f} steps/s")
    result = {
        "user_steps_per_s": round(vec),
        "roofline_user_steps_per_s": round(roof),
        "roofline_ratio": round(vec / roof, 3),
        "single_env_steps_per_s": round(single),
        "num_envs": a.num_envs,
        "num_candidates": a.num_candidates,
        "slate_size": a.slate_size,
        "num_items": cfg.num_items,
        "embedding_dim": cfg.embedding_dim,
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
