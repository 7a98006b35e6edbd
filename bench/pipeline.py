"""Serving throughput of the full decision pipeline vs a bare numpy/torch roofline of the same scoring shapes.

Pipeline: 10,000 items, 5 recall routes, 500 fused candidates, the MLP multi-task ranker, MMR re-rank,
slates of 10; batches of concurrent requests, after one learning window. The roofline does, for the same
batch: draw 500 candidate ids per request, run the same MLP forward on the same pair shapes and
take a top-10 (torch.topk), with the input layer factorised as the ranker does.
Last line: one JSON object with ``requests_per_s`` and ``roofline_ratio``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import envs
from agents.decision.configs import static_baseline
from agents.decision.context import CatalogView, RequestBatch
from agents.decision.system import Simulation


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mmr", type=float, default=0.2)
    a = ap.parse_args()
    torch.set_num_threads(2)
    cfg = envs.WorldConfig()
    world = envs.World(cfg, seed=0)
    system = static_baseline(cfg, seed=0)
    pipe = system.pipelines[0]
    pipe.reranker.configure({"mmr_lambda": a.mmr})
    sim = Simulation(world, system, concurrency=a.batch, seed=0)
    sim.window(10_000)  # learn once: routes have statistics, the ranker is trained
    users = sim.sessions.users
    batch = RequestBatch.of(world, users, np.arange(len(users)))
    catalog = CatalogView.of(world)
    rng = np.random.default_rng(0)

    stages: dict[str, float] = {}

    def serve() -> None:
        pipe.serve(batch, catalog, rng, 10)

    t_pipe = timed(serve, a.repeats)
    # per-stage split of one call
    t0 = time.perf_counter()
    routes = [r.act(batch, catalog, rng) for r in pipe.recalls]
    t1 = time.perf_counter()
    cands = pipe.fusion.act(routes)
    t2 = time.perf_counter()
    heads = pipe.ranker.act(batch, cands, catalog)
    t3 = time.perf_counter()
    pipe.reranker.act(pipe.scorer.act(heads), cands, catalog, 10)
    t4 = time.perf_counter()
    stages = {"recall": t1 - t0, "fusion": t2 - t1, "ranking": t3 - t2, "rerank": t4 - t3}

    # roofline: the same scoring shapes, bare torch: candidate ids, the factorised input layer (item part
    # once per catalog item, per pair the embedding x per-request matrix product), the MLP, a top-10
    n_items, c = cfg.num_items, 500
    h = pipe.ranker.hidden
    d = cfg.embedding_dim
    feats = torch.from_numpy(catalog.features)
    emb = feats[:, :d]
    w_item = torch.randn(h, feats.shape[1])
    per_request = torch.randn(len(users), h, d + 1)  # [W_cross * profile | W_user u + b], per request
    rest = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(h, h // 2), torch.nn.ReLU(), torch.nn.Linear(h // 2, 3)).eval()

    @torch.no_grad()
    def roofline() -> None:
        item_part = feats @ w_item.T
        for lo in range(0, len(users), 32):
            m = min(32, len(users) - lo)
            ids = torch.from_numpy(rng.integers(0, n_items, (m, c))).reshape(-1)
            x = torch.cat([emb[ids].view(m, c, d), torch.ones(m, c, 1)], dim=2)
            pre = torch.baddbmm(item_part[ids].view(m, c, h), x, per_request[lo : lo + m].transpose(1, 2))
            out = rest(pre.view(-1, h))
            torch.topk(out[:, 0].view(m, c), 10, dim=1)

    t_roof = timed(roofline, a.repeats)
    rps, roof_rps = a.batch / t_pipe, a.batch / t_roof
    print(f"pipeline : {rps:10,.0f} requests/s  (batch {a.batch}, 500 candidates, MMR lambda {a.mmr})")
    print(f"roofline : {roof_rps:10,.0f} requests/s  (candidate ids + factorised MLP scoring + topk, bare torch)")
    print("stages   : " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in stages.items()))
    print(json.dumps({
        "requests_per_s": round(rps), "roofline_requests_per_s": round(roof_rps), "roofline_ratio": round(rps / roof_rps, 3),
        "batch": a.batch, "candidates": 500, "routes": len(pipe.recalls), "slate_size": 10, "num_items": n_items,
        "stage_ms": {k: round(v * 1e3, 1) for k, v in stages.items()},
    }))


if __name__ == "__main__":
    main()
