"""How decisive a comparison inside the simulator is: A/A identity, common random numbers, expected outcomes, interleaving.

``python bench/sensitivity.py`` measures, on one machine in one run (a benchmark, not a test):

* ``aa_max_abs_diff``: the same config served twice from one seed (two deployments): the largest absolute
  difference over every column of the two logs (0: bit-identical);
* ``crn_variance_ratio``: a pair of re-ranker configs that differ in one parameter (``mmr_lambda`` 0 vs 0.3),
  compared from one learned state (a deployment after ``--warmup`` windows) on ``--seeds`` replicates of the
  traffic; per replicate, the difference of clicks per request over ``--windows`` windows, with both arms on the
  same traffic seed (synchronised streams, ``envs.streams``) or with the challenger on another traffic seed
  (independent streams); the ratio of the variances of the per-replicate differences, independent / synchronised, on
  realised clicks (``crn_variance_ratio``) and on expected clicks (``crn_variance_ratio_expected``);
  ``expected_and_crn_variance_ratio``: independent realised / synchronised expected (both tools against neither);
  learning off in the measured windows (``learning_on``: the same with the arms learning, whose rankers then
  diverge and leave common random numbers less to share);
* ``expected_variance_ratio``: per request, the variance of realised clicks over the variance of expected clicks
  (``1 - P(no click)``): how much of a request's outcome is the choice's noise rather than the slate's value;
  ``paired_sd``: the spread of the per-seed difference for each estimator (what an A/B claim's interval is made of);
* ``fork_s``, ``fork_mb``: the time and the size (pickled) of one fork of a learned deployment at the default world
  sizes (what a twin costs);
* the interleaving figures of ``bench/sensitivity_interleaving.py`` (A/B requests needed / interleaving requests
  needed for the same config pair, and the share of pairs whose sign agrees with the twins' truth).

Last line: one JSON object with those figures.

    .venv/bin/python bench/sensitivity.py [--seeds 8] [--windows 2] [--window 2000] [--no-interleaving]
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import time

import numpy as np
import torch
from sensitivity_interleaving import interleaving_summary

import envs
from agents.decision.configs import static_baseline
from agents.evolution.deployment import Deployment

AGENT = "baseline/rerank/mmr"
CONTROL, CHALLENGER = {"mmr_lambda": 0.0}, {"mmr_lambda": 0.3}
INDEPENDENT = 1_000_003  # offset of the challenger's traffic seed in the independent-streams design


def _deployment(world: envs.WorldConfig, world_seed: int, sim_seed: int, config: dict, window: int) -> Deployment:
    d = Deployment.start(world, static_baseline(world), world_seed=world_seed, sim_seed=sim_seed, concurrency=400,
                         window=window)
    d.deploy_config(AGENT, config)
    return d


def _clicks(d: Deployment, warmup: int, windows: int, learn: bool = True) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Serve the warm-up, then ``windows`` windows: (clicks per request, expected clicks per request, per-request
    realised clicks, per-request expected clicks) of the measured windows."""
    if warmup:
        d.serve(warmup)
    logs = [d.serve(learn=learn) for _ in range(windows)]
    real = np.concatenate([lg.requests["clicks"] for lg in logs]).astype(np.float64)
    exp = np.concatenate([lg.requests["clicks_exp"] for lg in logs]).astype(np.float64)
    return float(real.mean()), float(exp.mean()), real, exp


def aa_max_abs_diff(world: envs.WorldConfig, window: int, windows: int) -> float:
    logs = []
    for _ in range(2):
        d = _deployment(world, 7, 8, CONTROL, window)
        logs.append([d.serve() for _ in range(windows)])
    worst = 0.0
    for a, b in zip(*logs):
        for table in ("impressions", "requests", "candidates"):
            ta, tb = getattr(a, table), getattr(b, table)
            for col in ta:
                if ta[col].shape != tb[col].shape:
                    return float("inf")
                if len(ta[col]):
                    worst = max(worst, float(np.max(np.abs(ta[col].astype(np.float64) - tb[col].astype(np.float64)))))
    return worst


def crn(world: envs.WorldConfig, seeds: int, warmup: int, windows: int, window: int, learn: bool) -> dict:
    """One deployment of the control config learns for ``warmup`` windows; from that state, per replicate ``r``,
    twins serve ``windows`` windows with each config (``learn``: the arms keep learning), on traffic seed ``r``.
    Synchronised: both arms on traffic seed ``r``; independent: the challenger on another traffic seed
    (``Deployment.fork(traffic_seed=...)``). The spread over replicates is the comparison's noise alone."""
    diffs: dict[str, list[float]] = {"sync": [], "indep": [], "sync_exp": [], "indep_exp": []}
    per_request_ratio = []
    base = _deployment(world, 7, 8, CONTROL, window)
    if warmup:
        base.serve(warmup)
    for s in range(seeds):
        ts = int(np.random.SeedSequence(s).generate_state(1)[0])
        arms = {}
        for name, cfg, traffic in (("ctl", CONTROL, ts), ("sync", CHALLENGER, ts), ("indep", CHALLENGER, ts + INDEPENDENT)):
            twin = base.fork(traffic_seed=traffic)
            twin.deploy_config(AGENT, cfg)
            arms[name] = _clicks(twin, 0, windows, learn)
        ctl = arms["ctl"]
        for k in ("sync", "indep"):
            diffs[k].append(arms[k][0] - ctl[0])
            diffs[k + "_exp"].append(arms[k][1] - ctl[1])
        per_request_ratio.append(ctl[2].var() / ctl[3].var())
        print(f"seed {s} (learn={learn}): effect sync {diffs['sync'][-1]:+.4f} (exp {diffs['sync_exp'][-1]:+.4f}), "
              f"indep {diffs['indep'][-1]:+.4f} (exp {diffs['indep_exp'][-1]:+.4f}); "
              f"per-request var realised/expected {per_request_ratio[-1]:.1f}", flush=True)
    var = {k: float(np.var(v, ddof=1)) for k, v in diffs.items()}
    ratio = lambda a, b: a / b if b > 0 else float("inf")  # noqa: E731
    return {
        "crn_variance_ratio": ratio(var["indep"], var["sync"]),
        "crn_variance_ratio_expected": ratio(var["indep_exp"], var["sync_exp"]),
        "expected_and_crn_variance_ratio": ratio(var["indep"], var["sync_exp"]),  # both tools vs neither
        "expected_variance_ratio": float(np.mean(per_request_ratio)),
        "paired_sd": {k: round(float(np.sqrt(v)), 5) for k, v in var.items()},
        "effect_mean": {k: round(float(np.mean(v)), 5) for k, v in diffs.items()},
    }


def fork_cost(window: int) -> dict:
    """Time and size of a fork (a twin) of a learned deployment at the default world sizes (10k items, 20k users)."""
    world = envs.WorldConfig()
    d = Deployment.start(world, static_baseline(world), seed=0, concurrency=400, window=window)
    d.serve(2)
    t = time.perf_counter()
    reps = 5
    for _ in range(reps):
        d.fork()
    seconds = (time.perf_counter() - t) / reps
    size = len(pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL))
    return {"fork_s": round(seconds, 4), "fork_mb": round(size / 2**20, 1), "fork_world": "default (10k items, 20k users)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--windows", type=int, default=2)
    ap.add_argument("--window", type=int, default=2000)
    ap.add_argument("--no-interleaving", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    world = envs.WorldConfig(num_items=1000, num_users=3000, num_topics=8, num_creators=50)
    t0 = time.perf_counter()
    out: dict = {"aa_max_abs_diff": aa_max_abs_diff(world, a.window, 2)}
    print(f"A/A: max abs difference of two logs of one seed and config: {out['aa_max_abs_diff']}")
    out |= fork_cost(a.window)
    print(f"fork: {out['fork_s']:.3f} s, {out['fork_mb']} MB at the default world sizes", flush=True)
    out |= crn(world, a.seeds, a.warmup, a.windows, a.window, learn=False)
    learning = crn(world, a.seeds, a.warmup, a.windows, a.window, learn=True)
    out["learning_on"] = {k: learning[k] for k in ("crn_variance_ratio", "crn_variance_ratio_expected",
                                                    "expected_and_crn_variance_ratio", "paired_sd")}
    if not a.no_interleaving:
        il = interleaving_summary(windows=3, window=1200, warmup=3, seed=0)
        out |= {"interleaving_sensitivity_ratio": il["interleaving_sensitivity_ratio"],
                "interleaving_sign_agreement": il["interleaving_sign_agreement"], "interleaving": il["summary"]}
    out |= {"window": a.window, "windows": a.windows, "seconds": round(time.perf_counter() - t0, 1),
            "machine": f"{platform.machine()} x{__import__('os').cpu_count()}", "numpy": np.__version__}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
