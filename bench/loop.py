"""Speed of the serve-and-learn loop: windows of traffic through the full system, every agent learning.

A :class:`~agents.evolution.deployment.Deployment` of the static baseline system (its fast ranker, as the experiment
app and the evolution envs run it; ``--ranker default`` for TorchRanker's own training budget) on the default world
serves ``--windows`` windows of ``--window`` requests with learning on: per window, recall -> fusion -> ranking ->
score fusion -> re-ranking for every request, the users' responses, the interaction log, then every agent learns
from it. Its speed is ``requests_per_s``.

The "roofline" is the same shapes of work in bare torch, with none of the system around it: per window, for every
request, as many candidates as the fusion stage passes on are scored by a network of the ranker's widths, its input
layer by parts as the ranker computes it (a gathered per-item part plus one batched matmul of the per-pair
embedding | 1 | route columns with a per-request matrix), the top ``slate`` kept; then as many gradient steps (Adam,
same batch size, same network) as the ranker took in that window. Real windows and roofline windows alternate (interleaved
blocks, so a noisy shared machine slows both alike). ``roofline_ratio`` = ``requests_per_s`` /
``roofline_requests_per_s``: the share of the bare-compute speed the loop reaches.

``--fusion-size`` and ``--min-updates`` change the two shapes that bound the loop (candidates scored by the MLP per
request; gradient steps per window) to measure what a cheaper pipeline (e.g. a cascade that passes fewer candidates
to the ranker) would gain.

A separate cProfile pass (``--profile-windows``) splits a window's time into serving stages, the environment's
response, logging and each agent kind's learning (``shares``; cumulative times, so profiler overhead inflates Python-
heavy parts). Last line: one JSON object with ``requests_per_s``, ``window_requests``, ``roofline_requests_per_s``,
``roofline_ratio``, ``shares`` and the per-window times.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from typing import Any

import torch

from agents.decision.configs import static_baseline_config
from agents.decision.context import RequestBatch
from agents.decision.functional import SegmentRouter
from agents.decision.fusion import MultiTaskFusion, QuotaFusion
from agents.decision.ranking import TorchRanker, pair_features
from agents.decision.recall import RECALL_ROUTES
from agents.decision.rerank import Reranker
from agents.decision.system import Pipeline, Simulation, System
from agents.evolution.deployment import Deployment
from envs.config import WorldConfig
from envs.log import InteractionLog
from envs.sessions import SessionBatch
from envs.world import World


def start(world: WorldConfig, ranker: str, window: int, concurrency: int, seed: int, fusion_size: int | None = None,
          min_updates: int | None = None) -> Deployment:
    cfg = static_baseline_config(fast=ranker == "fast", seed=seed)
    pipe = cfg.pipelines[0]
    if fusion_size is not None:  # candidates the ranker scores per request
        pipe.fusion_size = fusion_size
    if min_updates is not None:  # gradient steps the ranker takes at least per window
        pipe.ranker.params["min_updates"] = min_updates
    return Deployment.start(world, cfg, seed=seed, window=window, concurrency=concurrency)


class Roofline:
    """One window's work in bare torch: score ``candidates`` per request with a net of the ranker's widths, keep the
    top ``slate``, then ``steps`` Adam steps of batch ``batch`` on the same net."""

    def __init__(self, ranker: TorchRanker, num_items: int, embedding_dim: int, candidates: int, slate: int,
                 seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = torch.randn(num_items, ranker.in_dim, generator=g)
        self.candidates, self.slate = candidates, slate
        h = ranker.hidden if ranker.arch == "mlp" else 3
        self.pair_width = embedding_dim + 1 + ranker.num_routes
        self.item_part = torch.randn(num_items, h, generator=g)
        self.pair_cols = torch.randn(num_items, self.pair_width, generator=g)
        self.request_matrix = torch.randn(1, self.pair_width, h, generator=g)
        layers = [torch.nn.Linear(ranker.in_dim, 3)] if ranker.arch == "linear" else [
            torch.nn.Linear(ranker.in_dim, h), torch.nn.ReLU(), torch.nn.Linear(h, h // 2), torch.nn.ReLU(),
            torch.nn.Linear(h // 2, 3)]
        self.net = torch.nn.Sequential(*layers)
        self.rest = torch.nn.Sequential(*layers[1:])
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.gen = g

    def window(self, requests: int, chunk: int, steps: int, batch: int) -> None:
        with torch.no_grad():
            for lo in range(0, requests, chunk):
                b = min(chunk, requests - lo)
                idx = torch.randint(0, len(self.items), (b * self.candidates,), generator=self.gen)
                x = torch.index_select(self.pair_cols, 0, idx).view(b, self.candidates, -1)
                h = torch.baddbmm(torch.index_select(self.item_part, 0, idx).view(b, self.candidates, -1), x,
                                  self.request_matrix.expand(b, -1, -1))
                score = self.rest(h.view(b * self.candidates, -1))[:, 0].view(b, self.candidates)
                torch.topk(score, self.slate, dim=1)
        x = self.items[:batch]
        y = torch.rand(batch, 3, generator=self.gen)
        for _ in range(steps):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(self.net(x), y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()


def _key(fn: Any) -> tuple[str, int, str]:
    code = fn.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def shares(profile: cProfile.Profile) -> dict[str, float]:
    """Cumulative time of the loop's parts, as shares of the windows' total (``Deployment.serve``)."""
    stats = pstats.Stats(profile).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    parts: dict[str, list[Any]] = {
        "serve/router": [SegmentRouter.act],
        "serve/recall": [cls.act for cls in RECALL_ROUTES.values()],
        "serve/fusion": [QuotaFusion.act],
        "serve/ranker": [TorchRanker.act],
        "serve/scorer": [MultiTaskFusion.act],
        "serve/rerank": [Reranker.act],
        "serve/slate_features": [pair_features],
        "serve/pipeline_total": [Pipeline.serve],
        "env/requests": [RequestBatch.of],
        "env/response": [SessionBatch.serve_items],
        "env/tick": [World.tick],
        "log/remember": [TorchRanker.remember],
        "log/build": [InteractionLog.__init__],
        "learn/total": [System.observe],
        "learn/router": [SegmentRouter.observe],
        "learn/ranker": [TorchRanker.observe],
        "learn/fusion": [QuotaFusion.observe],
        "learn/scorer": [MultiTaskFusion.observe],
        "learn/rerank": [Reranker.observe],
        **{f"learn/recall/{name}": [cls.observe] for name, cls in RECALL_ROUTES.items()},
        "window_total": [Simulation.window],
    }
    total = sum(v[3] for k, v in stats.items() if k == _key(Deployment.serve))
    out = {}
    for name, fns in parts.items():
        keys = {_key(f) for f in fns}
        out[name] = round(sum(v[3] for k, v in stats.items() if k in keys) / max(total, 1e-12), 4)
    accounted = ["serve/pipeline_total", "env/requests", "env/response", "env/tick", "log/remember", "log/build",
                 "learn/total"]
    out["log/other_window"] = round(out["window_total"] - sum(out[k] for k in accounted), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=6, help="timed windows (after one warm-up window)")
    ap.add_argument("--window", type=int, default=2000, help="requests per window")
    ap.add_argument("--concurrency", type=int, default=400)
    ap.add_argument("--ranker", choices=("fast", "default"), default="fast")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--profile-windows", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fusion-size", type=int, default=None,
                    help="candidates the ranker scores per request (default: the baseline's 500)")
    ap.add_argument("--min-updates", type=int, default=None,
                    help="the ranker's minimum gradient steps per window (default: the fast ranker's 100)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    world = WorldConfig()
    dep = start(world, a.ranker, a.window, a.concurrency, a.seed, a.fusion_size, a.min_updates)
    pipe = dep.system.pipelines[0]
    ranker = pipe.ranker
    dep.serve(1)  # warm-up: first-call costs, the first training
    roof = Roofline(ranker, world.num_items, world.embedding_dim, int(pipe.fusion.config["size"]), 10)
    real, bare = [], []
    for _ in range(a.windows):  # interleaved: a real window, then the roofline of the same shapes
        steps = ranker.updates
        t = time.perf_counter()
        dep.serve(1)
        real.append(time.perf_counter() - t)
        steps = ranker.updates - steps
        t = time.perf_counter()
        roof.window(a.window, a.concurrency, steps, int(ranker.config["batch_size"]))
        bare.append(time.perf_counter() - t)
    prof = cProfile.Profile()
    prof.enable()
    dep.serve(max(a.profile_windows, 1))
    prof.disable()
    rate = a.window * len(real) / sum(real)
    roof_rate = a.window * len(bare) / sum(bare)
    split = shares(prof)
    print(f"{len(real)} windows of {a.window} requests: {rate:,.0f} requests/s (roofline {roof_rate:,.0f}/s, "
          f"{rate / roof_rate:.1%} of it); windows {[round(s, 2) for s in real]} s, roofline {[round(s, 2) for s in bare]} s")
    for k, v in split.items():
        print(f"  {k:24s} {v:6.1%}")
    print(json.dumps({
        "requests_per_s": round(rate, 1), "window_requests": a.window, "windows": len(real),
        "roofline_requests_per_s": round(roof_rate, 1), "roofline_ratio": round(rate / roof_rate, 4),
        "shares": split, "window_s": [round(s, 3) for s in real], "roofline_window_s": [round(s, 3) for s in bare],
        "ranker": a.ranker, "threads": a.threads, "concurrency": a.concurrency,
        "fusion_size": int(pipe.fusion.config["size"]), "min_updates": int(ranker.config["min_updates"]),
    }))


if __name__ == "__main__":
    main()
