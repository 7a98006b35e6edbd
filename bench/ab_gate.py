"""The A/B gate's false-accept rate and power in the simulator: per-request (Welch) vs user-clustered intervals.

The gate (:class:`agents.decision.functional.ExperimentDesigner`, ``method="ab"``) splits *users* in halves by a salted
hash and accepts a candidate when the lower end of the two-sided 95% interval of (candidate - incumbent) expected
clicks per request lies above 0: a one-sided test at 2.5%. A user's requests are correlated (their taste, their
session), so an interval that treats requests as independent is too narrow. This measures by how much, on the
world and windows the ablations' gates use (tiny world, 100 concurrent sessions, windows of 500 requests, a test
of 2 windows, as the LLM designer's and the AutoModel gates; ``--share 0.2 --windows 1 --window 2000
--concurrency 400``: C2's continuous deployment, one window's test of a candidate on 20% of the users):

* a deployment of the hand-tuned system learns for ``--warmup`` windows; then, per path, an independent replicate
  from that state (:meth:`Deployment.fork` with its own traffic seed) serves ``--windows`` windows split
  ``--share`` / the rest (50/50 by default)
  with a fresh salt between two *identical* systems (A/A: every acceptance is a false accept), and the same for a
  candidate with a known, clearly better re-ranker config (power: every rejection is a miss);
* each path's per-request outcomes are judged twice from the same windows: Welch's per-request interval (the gate
  before 2026-12-01) and the user-clustered one (:func:`rewards.stats.clustered_difference_interval`, the gate now).

The last line is a JSON object: ``false_accept_welch`` / ``false_accept_clustered`` (share of A/A paths accepted;
nominal 0.025) with their Wilson 95% intervals, their ratio to the nominal level, ``power_welch`` /
``power_clustered`` on the better config, and ``mde80_welch`` / ``mde80_clustered`` (median over the A/A paths of
the effect one test sees with 80% power: what the per-request interval claims and what the test can really see) and
``width_ratio`` (clustered / per-request: ~the square root of the design effect).

    .venv/bin/python bench/ab_gate.py [--paths 200] [--windows 2] [--window 500] [--warmup 4] [--share 0.5]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from agents.decision.configs import static_baseline
from agents.evolution.deployment import Deployment
from envs.config import WORLD_SIZES, WorldConfig
from rewards.stats import WelchInterval, clustered_difference_interval, t_quantile, welch_interval, wilson

__all__ = ["gate_rates", "main"]

AGENT = "baseline/rerank/mmr"
# the known-better candidate: the incumbent shows a pure-diversity MMR list (lambda 1 over a pool of 200), the
# candidate plain ranking (lambda 0): +0.08 to +0.10 clicks per request on twins (tests/agents/evolution/test_rollout.py)
WORSE, BETTER = {"mmr_lambda": 1.0, "mmr_pool": 200}, {"mmr_lambda": 0.0}
NOMINAL = 0.025  # the lower end of a two-sided 95% interval above 0


def _mde80(interval: WelchInterval) -> float:
    """The effect the test would see with 80% power at its level: ``(z_.975 + z_.8) * se``, se from the interval."""
    return (1.959964 + 0.841621) * (interval.high - interval.low) / (2 * t_quantile(0.975, interval.df))


def _judge(service: Deployment, incumbent: dict, challenger: dict, windows: int,
           share: float = 0.5) -> tuple[bool, bool, float, float]:
    """Serve ``windows`` split windows (a fresh salt); whether Welch's and the clustered interval accept, and each
    one's MDE80 (the clustered one's / the per-request one's: ~the square root of the design effect)."""
    service.deploy_config(AGENT, incumbent)
    rival = copy.deepcopy(service.system)
    r = rival.pipelines[0].reranker
    r.configure(r.params.validate({**r.config, **challenger}))
    salt = service.new_salt()
    splits = [service.serve_split(rival, share, salt=salt, learn=False) for _ in range(windows)]
    x, u = [], []
    for arm in (False, True):
        x.append(np.concatenate([w.log.requests["clicks_exp"][w.candidate == arm] for w in splits]).astype(np.float64))
        u.append(np.concatenate([w.log.requests["user"][w.candidate == arm] for w in splits]))
    welch = welch_interval(x[1], x[0])
    clustered = clustered_difference_interval(x[1], u[1], x[0], u[0])
    return welch.low > 0, clustered.low > 0, _mde80(welch), _mde80(clustered)


def gate_rates(paths: int = 200, windows: int = 2, window: int = 500, warmup: int = 4, concurrency: int = 100,
               seed: int = 0, share: float = 0.5) -> dict:
    """Measure both intervals' accept rates over ``paths`` A/A paths and ``paths`` paths with the better candidate."""
    torch.set_num_threads(1)
    world = WorldConfig(**WORLD_SIZES["tiny"])  # the ablations' world
    t0 = time.perf_counter()
    base = Deployment.start(world, static_baseline(world), seed=seed, concurrency=concurrency, window=window)
    base.serve(warmup)
    aa, better = [], []
    for k in range(paths):
        aa.append(_judge(base.fork(traffic_seed=10_000 + k), {}, {}, windows, share))
        better.append(_judge(base.fork(traffic_seed=20_000 + k), WORSE, BETTER, windows, share))
    aa_arr, better_arr = np.array(aa, float), np.array(better, float)
    out = {
        "false_accept_welch": float(aa_arr[:, 0].mean()), "false_accept_clustered": float(aa_arr[:, 1].mean()),
        "false_accept_welch_wilson95": [round(x, 4) for x in wilson(int(aa_arr[:, 0].sum()), paths)],
        "false_accept_clustered_wilson95": [round(x, 4) for x in wilson(int(aa_arr[:, 1].sum()), paths)],
        "nominal": NOMINAL,
        "false_accept_ratio_welch": float(aa_arr[:, 0].mean() / NOMINAL),
        "false_accept_ratio_clustered": float(aa_arr[:, 1].mean() / NOMINAL),
        "power_welch": float(better_arr[:, 0].mean()), "power_clustered": float(better_arr[:, 1].mean()),
        "mde80_welch": float(np.nanmedian(aa_arr[:, 2])), "mde80_clustered": float(np.nanmedian(aa_arr[:, 3])),
        "width_ratio": float(np.nanmedian(aa_arr[:, 3] / aa_arr[:, 2])),
        "paths": paths, "windows": windows, "window": window, "warmup": warmup, "concurrency": concurrency,
        "share": share, "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=200)
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--share", type=float, default=0.5, help="the candidate's share of the users")
    a = ap.parse_args()
    r = gate_rates(a.paths, a.windows, a.window, a.warmup, a.concurrency, a.seed, a.share)
    print(f"A/A false accepts: per request {r['false_accept_welch']:.3f}, clustered {r['false_accept_clustered']:.3f} "
          f"(nominal {NOMINAL}); power on the better config: {r['power_welch']:.3f} vs {r['power_clustered']:.3f}; "
          f"MDE80 of one test {r['mde80_welch']:.4f} per request vs {r['mde80_clustered']:.4f} clustered (clicks per request)")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
