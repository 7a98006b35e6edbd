"""Throughput of the slate envs against a bare-numpy roofline doing a subset of the same work, timed interleaved.

``python bench/throughput.py`` prints a few lines and, last, one JSON object. Rates are user-steps per second
(``num_envs`` users served per vector step), medians over ``--repeats`` rounds; each round times, back to back, a
block of ``--iters`` steps of the dense vector env, of the roofline and of the ids vector env, and one large copy,
so a change of load on a shared host hits every series alike.

* ``user_steps_per_s``: the native vector env (``obs_mode="dense"``), uniformly random slates of distinct
  candidates drawn before timing.
* ``roofline_user_steps_per_s``: bare numpy doing, per step and without any bookkeeping, only work the env must also
  do, the cheapest way found: (1) the env's candidate scheme: one permutation of the catalog per step, its feature
  rows gathered once into a ring, each user's candidates a contiguous window of it at a random offset, ids and
  ``(B, C, F)`` features copied in blocks by the same stride trick as ``World.candidates`` into a new array (an
  observation handed out must stay valid, as the env's does); (2) the ``(B, U)`` user observation written;
  (3) the shown slate's ids taken from the candidates and their ``(B, K, F)`` feature rows gathered from the
  catalog; (4) scoring of the shown slate only: one fused einsum of the rows with a per-user weight vector
  (interest | scalar-feature weights), plus position bias; (5) the choice: a softmax over the slate and a no-click
  option, sampled by the inverse CDF from a plain generator; (6) the user state the env updates: satisfaction
  EMA, session steps and clicks, fatigue decay (B, T), and for clickers interest drift toward the clicked item
  (renormalised) and fatigue growth on its topic; (7) session ends: an exit draw from ``sigmoid(patience + 2 s)``
  and, for leavers, session state reset in place. It leaves out everything else the env does: keyed (hashed) random
  streams, dwell, likes, violations, expected outcomes, fatigue in the utility, action validation, ``info``,
  drawing new users and their return/churn. Per-slot state is contiguous (the env gathers it by user id). So
  ``roofline_ratio`` = env / roofline is <= 1 by construction (up to timing noise).
* ``ids_user_steps_per_s``: the same vector env with ``obs_mode="ids"`` (observations carry candidate ids; a policy
  gathers features from ``catalog_features``), with ``ids_breakdown_ms`` the time per step spent in the world's
  calls (``World.respond``, ``World.candidates``, ...) measured inside real steps, and ``feature_window_copy_ms``
  the bare cost of the ``(B, C, F)`` window copy that ``World.candidates`` always makes;
  ``ids_roofline_user_steps_per_s``: the roofline above without the feature-row ring and window copy (ids only).
* ``bytes_per_user_step``: bytes the dense env reads plus writes per user-step on its data path, from shapes and
  dtypes: the per-step ring (permutation, ids and feature rows, amortised over the batch), the candidate windows
  (ids and features, read and written), the user observation, the slate's ids and its gathered feature rows.
  ``copy_bandwidth_gb_s``: bytes read plus written per second by ``np.copyto`` of a 256 MiB array, in the same
  rounds; ``bandwidth_fraction``: ``bytes_per_user_step * user_steps_per_s`` over it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from numpy.lib.stride_tricks import as_strided

import envs
from envs.choice import position_log_weights
from envs.items import ITEM_FEATURES, unit_rows

COPY_BYTES = 256 * 2**20  # the bandwidth probe: well beyond any last-level cache
INT64, FLOAT32 = 8, 4


def make_vector(obs_mode: str, num_envs: int, num_candidates: int, slate_size: int) -> tuple[Any, Callable[[], Any]]:
    """A reset native vector env and a step function cycling over 16 pre-drawn slates of distinct candidates."""
    env = gym.make_vec(
        "agentic-rs/Slate-v0", num_envs=num_envs, num_candidates=num_candidates, slate_size=slate_size,
        vectorization_mode="vector_entry_point", obs_mode=obs_mode,
    )
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = [np.argsort(rng.random((num_envs, num_candidates)), axis=1)[:, :slate_size] for _ in range(16)]
    count = iter(range(10**12))

    def step() -> Any:
        return env.step(actions[next(count) % 16])

    return env, step


def make_roofline(cfg: envs.WorldConfig, num_envs: int, num_candidates: int, slate_size: int,
                  obs_mode: str = "dense") -> Callable[[], Any]:
    """One step of the roofline described in the module docstring, on the catalog of a world of ``cfg``; with
    ``obs_mode="ids"`` the candidates' feature rows are not copied (the observation is their ids)."""
    b, c, k = num_envs, num_candidates, slate_size
    world = envs.World(cfg, seed=0)
    table = world.catalog.features.copy()  # (N, F): embedding | quality | freshness | popularity | risk
    topic = world.catalog.topic.copy()
    n, f = table.shape
    d = cfg.embedding_dim
    rng = np.random.default_rng(0)
    weights = np.empty((b, f), np.float32)  # per-user scoring weights: interest (D) | scalar-feature weights (4)
    weights[:, :d] = unit_rows(rng.standard_normal((b, d)))
    weights[:, d:] = rng.standard_normal((b, f - d)).astype(np.float32) * 0.5
    user_state = rng.standard_normal((b, len(cfg.segments) + d + 3)).astype(np.float32)  # the observed user row
    satisfaction = np.zeros(b, np.float32)
    steps = np.zeros(b, np.int32)
    clicks = np.zeros(b, np.int32)
    fatigue = np.zeros((b, cfg.num_topics), np.float32)
    seg = next(iter(cfg.segments.values()))
    position = position_log_weights(k, cfg.position_decay)
    actions = [np.argsort(rng.random((b, c)), axis=1)[:, :k] for _ in range(16)]
    rows = np.arange(b)
    flat_rows = rows[:, None] * c
    count = iter(range(10**12))

    def step() -> tuple[dict[str, np.ndarray], np.ndarray]:
        # (1) candidates: windows of one permutation per step, copied in blocks
        perm = rng.permutation(n)
        ring = np.concatenate([perm, perm[: c - 1]])
        ring_f = np.take(table, ring, axis=0) if obs_mode == "dense" else table  # np.take: faster than table[ring]
        start = rng.integers(0, n, b)
        fs = ring_f.strides
        ids = as_strided(ring, shape=(n, c), strides=(INT64, INT64), writeable=False)[start]
        # (2) the observation: the user row, and the candidates' feature rows (dense) or their ids
        obs = {"user": user_state.copy(), "candidate_ids": ids}
        if obs_mode == "dense":
            obs = {"user": obs["user"], "candidates": as_strided(
                ring_f, shape=(n, c, f), strides=(fs[0], fs[0], fs[1]), writeable=False)[start]}
        # (3) the shown slate and its feature rows
        slate = np.take(ids, flat_rows + actions[next(count) % 16])  # flat take: cheaper than take_along_axis
        rows_f = np.take(table, slate, axis=0)  # (B, K, F)
        # (4) scores of the shown slate; (5) the choice among it and no click
        logits = np.empty((b, k + 1), np.float32)
        logits[:, 0] = seg.no_click_utility
        logits[:, 1:] = np.einsum("bkf,bf->bk", rows_f, weights) + position
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        cum = np.cumsum(logits, axis=1)
        choice = np.minimum((cum <= rng.random(b, np.float32)[:, None] * cum[:, -1:]).sum(axis=1), k)
        clicked = choice > 0
        pos = np.maximum(choice - 1, 0)
        # (6) user state
        quality = rows_f[rows, pos, d]
        experience = np.where(clicked, 0.5 + quality, -0.3).astype(np.float32)
        satisfaction[:] = 0.7 * satisfaction + 0.3 * experience
        steps[:] += 1
        clicks[:] += clicked
        fatigue[:] *= seg.fatigue_decay
        who = np.flatnonzero(clicked)
        item = slate[who, pos[who]]
        weights[who, :d] = unit_rows((1.0 - seg.drift_rate) * weights[who, :d] + seg.drift_rate * rows_f[who, pos[who], :d])
        fatigue[who, topic[item]] += seg.fatigue_increment
        # (7) session ends
        stay = 1.0 / (1.0 + np.exp(-(seg.patience + 2.0 * satisfaction)))
        leave = rng.random(b, np.float32) >= stay
        satisfaction[leave] = 0.0
        steps[leave] = 0
        clicks[leave] = 0
        return obs, leave

    return step


def dense_bytes_per_user_step(num_items: int, num_envs: int, c: int, k: int, f: int, u: int) -> dict[str, float]:
    """Bytes read + written per user-step by the dense env's data path (see the module docstring), by part."""
    ring = (num_items * INT64 + 2 * (num_items + c - 1) * INT64 + 2 * (num_items + c - 1) * f * FLOAT32) / num_envs
    return {
        "ring": ring,  # permutation, ring of ids, its feature rows gathered (read + write), per step / users
        "candidate_windows": 2 * c * (f * FLOAT32 + INT64),  # ids and features read from the ring, written out
        "user_observation": 2 * u * FLOAT32,
        "slate": 2 * k * (INT64 + f * FLOAT32),  # slate ids taken, their feature rows gathered
    }


def copy_probe() -> Callable[[], None]:
    src = np.ones(COPY_BYTES // 8)
    dst = np.zeros_like(src)
    return lambda: np.copyto(dst, src)


def ids_breakdown(env: Any, step: Callable[[], Any], iters: int) -> dict[str, float]:
    """ms per ids-env step (``step``) and spent in the world's calls within it, measured inside real steps by
    instance-level wrappers (``World.utility`` is part of ``World.respond``)."""
    world = env.unwrapped.world
    spent: dict[str, float] = {}
    names = [(world, "respond"), (world, "utility"), (world, "candidates"), (world, "close_sessions"),
             (world, "new_requests"), (world.users, "observation")]
    for obj, name in names:
        fn = getattr(obj, name)
        key = f"{type(obj).__name__}.{name}"
        spent[key] = 0.0

        def timed(*args: Any, _fn: Callable[..., Any] = fn, _key: str = key, **kw: Any) -> Any:
            t = time.perf_counter()
            out = _fn(*args, **kw)
            spent[_key] += time.perf_counter() - t
            return out

        setattr(obj, name, timed)
    t = time.perf_counter()
    for _ in range(iters):
        step()
    total = time.perf_counter() - t
    for obj, name in names:
        delattr(obj, name)
    out = {"step": total}
    out.update(spent)
    return {key: round(value / iters * 1e3, 3) for key, value in out.items()}


def window_copy_ms(num_items: int, num_envs: int, c: int, f: int, iters: int) -> float:
    """Median ms of the bare ``(B, C, F)`` window copy ``World.candidates`` makes (stride trick, fresh array)."""
    rng = np.random.default_rng(0)
    ring_f = rng.random((num_items + c - 1, f), np.float32)
    fs = ring_f.strides
    win = as_strided(ring_f, shape=(num_items, c, f), strides=(fs[0], fs[0], fs[1]), writeable=False)
    times = []
    for _ in range(iters):
        start = rng.integers(0, num_items, num_envs)
        t = time.perf_counter()
        win[start]
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


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


def interleaved(blocks: dict[str, tuple[Callable[[], Any], float, int]], repeats: int) -> dict[str, float]:
    """Median rate per block name: each round times every block once, in turn. A block is (fn, work per call, calls)."""
    for fn, _, _ in blocks.values():
        fn()  # warm up
    rates: dict[str, list[float]] = {name: [] for name in blocks}
    for _ in range(repeats):
        for name, (fn, work, iters) in blocks.items():
            t = time.perf_counter()
            for _ in range(iters):
                fn()
            rates[name].append(work * iters / (time.perf_counter() - t))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-envs", type=int, default=4096)
    ap.add_argument("--num-candidates", type=int, default=100)
    ap.add_argument("--slate-size", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--single-steps", type=int, default=3000)
    a = ap.parse_args()
    cfg = envs.WorldConfig()
    b, c, k = a.num_envs, a.num_candidates, a.slate_size
    f = cfg.embedding_dim + len(ITEM_FEATURES)
    u = len(cfg.segments) + cfg.embedding_dim + 3
    (dense_env, dense), (ids_env, ids) = make_vector("dense", b, c, k), make_vector("ids", b, c, k)
    rates = interleaved(
        {
            "dense": (dense, b, a.iters),
            "roofline": (make_roofline(cfg, b, c, k), b, a.iters),
            "ids": (ids, b, a.iters),
            "ids_roofline": (make_roofline(cfg, b, c, k, "ids"), b, a.iters),
            "copy": (copy_probe(), 2 * COPY_BYTES / 1e9, 2),
        },
        a.repeats,
    )
    breakdown = ids_breakdown(ids_env, ids, a.iters)
    dense_env.close()
    ids_env.close()
    window_ms = window_copy_ms(cfg.num_items, b, c, f, a.iters)
    single = bench_single(c, k, a.single_steps)
    parts = dense_bytes_per_user_step(cfg.num_items, b, c, k, f, u)
    per_step = sum(parts.values())
    vec, roof, ids_rate, bandwidth = rates["dense"], rates["roofline"], rates["ids"], rates["copy"]
    ids_roof = rates["ids_roofline"]
    print(f"vector env : {vec:12,.0f} user-steps/s  ({b} envs, {c} candidates, slate {k}, obs_mode=dense)")
    print(f"roofline   : {roof:12,.0f} user-steps/s  (bare numpy, a subset of the env's work; ratio {vec / roof:.3f})")
    print(f"ids env    : {ids_rate:12,.0f} user-steps/s  (obs_mode=ids; 2,000,000 needs {b / 2e6 * 1e3:.2f} ms/step)")
    print(f"ids roof   : {ids_roof:12,.0f} user-steps/s  (the roofline without the feature-row copy)")
    print(f"ids step   : {breakdown}  (ms per step; window copy alone {window_ms:.2f} ms)")
    print(f"memory     : {per_step:,.0f} B/user-step x {vec:,.0f}/s = {per_step * vec / 1e9:.2f} GB/s "
          f"of {bandwidth:.1f} GB/s measured copy bandwidth (read + write)")
    print(f"single env : {single:12,.0f} steps/s")
    result = {
        "user_steps_per_s": round(vec),
        "roofline_user_steps_per_s": round(roof),
        "roofline_ratio": round(vec / roof, 3),
        "ids_user_steps_per_s": round(ids_rate),
        "ids_roofline_user_steps_per_s": round(ids_roof),
        "ids_roofline_ratio": round(ids_rate / ids_roof, 3),
        "ids_breakdown_ms": breakdown,
        "feature_window_copy_ms": round(window_ms, 3),
        "bytes_per_user_step": round(per_step),
        "bytes_per_user_step_parts": {key: round(value) for key, value in parts.items()},
        "copy_bandwidth_gb_s": round(bandwidth, 2),
        "bandwidth_fraction": round(per_step * vec / 1e9 / bandwidth, 3),
        "single_env_steps_per_s": round(single),
        "num_envs": b,
        "num_candidates": c,
        "slate_size": k,
        "num_items": cfg.num_items,
        "embedding_dim": cfg.embedding_dim,
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
