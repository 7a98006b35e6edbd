"""The torch rankers' online training steps against a bare-torch roofline of the same shapes, timed interleaved.

``python bench/ranker_train.py`` prints a table and, last, one JSON object. Each case is a ranker as the experiment
app builds it (:func:`~agents.decision.configs.baseline_config` with ``fast=True``: batch 1024, one epoch and at least
100 gradient steps per window over the last 50k impressions, AdamW at lr 3e-3) on the input of the tiny world the
experiments run (64 features, 3 segments, 5 routes): ``linear`` and ``mlp`` (64 -> 64 -> 32 -> 3 heads), each also
with per-segment towers (``*_towers``). Its memory is filled with synthetic impressions (their values do not change
the work; clicks ~15%, likes on ~30% of clicks, log-dwell of a click) and trained on once; then each round trains on
one more window of ``--window`` impressions through :meth:`TorchRanker.learn_from` (the training
:meth:`TorchRanker.observe` runs) and, back to back, the roofline takes as many steps.

* ``<case>_ms_per_step``: process CPU milliseconds (every torch thread; a busy shared host inflates them less than
  wall time, ``<case>_wall_ms_per_step``) of one window's training over the gradient steps it took: buffer
  bookkeeping, shuffling, batch gathering, loss gradient, backward, optimizer, the once-per-window subnormal flush.
* ``<case>_roofline_ms_per_step``: a minimal hand-written loop on the same shapes: the parameters as bare leaf
  tensors, one preallocated batch reused every step (no shuffling, no gathering), forward by functional calls (the
  towers' heads as one matmul whose segment's columns are gathered), :func:`multitask_loss` and its ``backward``
  (autograd through the loss), ``grad = None`` and a fused AdamW step.
* ``<case>_roofline_ratio``: ours / roofline. Ours may beat the roofline: it back-propagates the loss's gradient in
  closed form (:func:`~agents.decision.ranking.multitask_loss_grad`) where the roofline runs autograd through it.
* with ``--baseline FILE`` (another ``ranking.py``, e.g. ``git show HEAD:agents/decision/ranking.py > /tmp/r.py``):
  ``<case>_baseline_ms_per_step``, its ranker trained on the same windows, and ``<case>_speedup`` = baseline / ours.

Medians over ``--repeats`` rounds; a round times ours, the baseline and the roofline back to back, so a change of
load on a shared host hits all alike. ``--threads``: torch's intra-op threads (default 1, as the other benches; 0
leaves torch's default, one per core, as the experiment app does).

    .venv/bin/python bench/ranker_train.py [--repeats 7] [--threads 1] [--baseline FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from agents.decision.configs import ROUTES, baseline_config
from agents.decision.ranking import LOSS_WEIGHTS, TorchRanker, multitask_loss
from agents.decision.system import feature_dim
from envs.config import WorldConfig, world_size

CASES = (("linear", "linear", False), ("mlp", "mlp", False), ("linear_towers", "linear", True),
         ("mlp_towers", "mlp", True))


def impressions(rng: np.random.Generator, n: int, in_dim: int, segments: int) -> tuple[np.ndarray, ...]:
    """``n`` synthetic impressions: features (n, in_dim), targets (n, 3) (click, like, log-dwell), segments (n,)."""
    x = rng.normal(0.0, 0.5, (n, in_dim)).astype(np.float32)
    click = rng.random(n) < 0.15
    like = click & (rng.random(n) < 0.3)
    dwell = np.where(click, np.log1p(rng.exponential(30.0, n)), 0.0)
    return x, np.stack([click, like, dwell], axis=1).astype(np.float32), rng.integers(0, segments, n)


def make_roofline(ranker: TorchRanker, batch: int, seed: int) -> Callable[[int], int]:
    """``steps`` -> ``steps`` taken: the bare loop described in the module docstring, on the shapes of ``ranker``'s model."""
    torch.manual_seed(seed)
    arch, hidden, towers = ranker.arch, ranker.hidden, ranker.num_segments if ranker.per_segment else 1
    sizes = [ranker.in_dim] if arch == "linear" else [ranker.in_dim, hidden, hidden // 2]
    layers = [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])] + [nn.Linear(sizes[-1], 3 * towers)]
    params = [p for layer in layers for p in (layer.weight, layer.bias)]
    opt = torch.optim.AdamW(params, lr=ranker.config["lr"], weight_decay=ranker.config["weight_decay"], fused=True)
    x, y, s = (torch.from_numpy(a) for a in impressions(np.random.default_rng(seed), batch, ranker.in_dim, towers))
    pick = s.view(-1, 1, 1).expand(-1, 1, 3)
    w_like, w_dwell = LOSS_WEIGHTS["like"], LOSS_WEIGHTS["dwell"]

    def steps(k: int) -> int:
        for _ in range(k):
            h = x
            for i in range(0, len(params) - 2, 2):
                h = F.linear(h, params[i], params[i + 1]).relu_()
            out = F.linear(h, params[-2], params[-1])
            if towers > 1:
                out = out.view(-1, towers, 3).gather(1, pick).squeeze(1)
            loss = multitask_loss(out, y, w_like, w_dwell)
            for p in params:
                p.grad = None
            loss.backward()
            opt.step()
        return k

    return steps


def load_baseline(path: str) -> type[TorchRanker]:
    """The ``TorchRanker`` class of another copy of ``agents/decision/ranking.py`` (e.g. the last commit's), imported
    under its own module name beside the current one."""
    spec = importlib.util.spec_from_file_location("ranking_baseline", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--baseline must be a Python file (got {path!r})")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TorchRanker


def train_window(ranker: TorchRanker, window: tuple[np.ndarray, ...]) -> int:
    """Train ``ranker`` on one more window of impressions; returns the gradient steps it took."""
    before = ranker.updates
    ranker.learn_from(window)
    return ranker.updates - before


def timed(fn: Callable[[], int]) -> tuple[float, float, int]:
    """(CPU ms per step, wall ms per step, steps) of ``fn``, which returns the steps it took; CPU time is the whole
    process's (every torch thread), which a busy shared host inflates less than wall time."""
    cpu, wall = time.process_time(), time.perf_counter()
    steps = fn()
    return 1e3 * (time.process_time() - cpu) / steps, 1e3 * (time.perf_counter() - wall) / steps, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed windows per case (medians)")
    parser.add_argument("--window", type=int, default=5000, help="impressions per window (500 requests x 10 shown)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--cases", nargs="*", default=[c[0] for c in CASES], choices=[c[0] for c in CASES])
    parser.add_argument("--baseline", help="another ranking.py whose TorchRanker is timed alongside (before/after)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    world = WorldConfig(**world_size("tiny"))
    in_dim, segments = feature_dim(world, len(ROUTES)), len(world.segments)
    classes = {"ours": TorchRanker, **({"baseline": load_baseline(args.baseline)} if args.baseline else {})}
    figures: dict[str, float | int | str] = {}
    print(f"CPU ms per gradient step (wall ms in the JSON), medians of {args.repeats} windows, "
          f"{torch.get_num_threads()} torch thread(s)")
    print(f"{'case':<15}{'steps/window':>13}" + "".join(f"{k:>10}" for k in classes) + f"{'roofline':>10}{'ratio':>8}"
          + (f"{'speed-up':>10}" if args.baseline else ""))
    for name, arch, towers in CASES:
        if name not in args.cases:
            continue
        params = dict(baseline_config(arch, fast=True).ranker.params)
        rng = np.random.default_rng(0)
        rankers = {k: cls(in_dim, segments, len(ROUTES), arch=arch, per_segment=towers, name=name, config=params)
                   for k, cls in classes.items()}
        memory = impressions(rng, int(rankers["ours"].config["memory"]), in_dim, segments)
        for ranker in rankers.values():
            ranker.learn_from(memory)  # a full memory, untimed
        roofline = make_roofline(rankers["ours"], int(rankers["ours"].config["batch_size"]), seed=1)
        roofline(20)
        cpu: dict[str, list[float]] = {k: [] for k in [*rankers, "roofline"]}
        wall: dict[str, list[float]] = {k: [] for k in cpu}
        steps = 0
        for _ in range(args.repeats):
            window = impressions(rng, args.window, in_dim, segments)
            for k, ranker in rankers.items():
                c, w, steps = timed(partial(train_window, ranker, window))
                cpu[k].append(c), wall[k].append(w)
            c, w, _ = timed(partial(roofline, steps))
            cpu["roofline"].append(c), wall["roofline"].append(w)
        med = {k: statistics.median(v) for k, v in cpu.items()}
        ratio = med["ours"] / med["roofline"]
        print(f"{name:<15}{steps:>13}" + "".join(f"{med[k]:>10.3f}" for k in cpu) + f"{ratio:>8.2f}"
              + (f"{med['baseline'] / med['ours']:>10.2f}" if args.baseline else ""))
        figures[f"{name}_steps_per_window"] = steps
        for k in cpu:
            key = f"{name}_ms_per_step" if k == "ours" else f"{name}_{k}_ms_per_step"
            figures[key] = round(med[k], 4)
            figures[key.replace("_ms_per_step", "_wall_ms_per_step")] = round(statistics.median(wall[k]), 4)
        figures[f"{name}_roofline_ratio"] = round(ratio, 3)
        if args.baseline:
            figures[f"{name}_speedup"] = round(med["baseline"] / med["ours"], 3)
    print(json.dumps({**figures, "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "machine": platform.machine()}))


if __name__ == "__main__":
    main()
