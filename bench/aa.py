"""The A/A arm's false-alarm rate: how often the report's paired test calls two runs of the same arm different.

``python bench/aa.py`` runs ``--pairs`` disjoint pairs of A/A replicates (``controller.replicate`` 2k+1 and 2k+2: the
same arm, its system's own randomness re-seeded, the world and the traffic of each seed shared) of one arm of an
experiment preset, on ``--seeds`` seeds each, and tests each pair as the report tests a claim: the per-seed
difference of the metric averaged over the run's windows, a two-sided t-test across seeds at the 5% level (the
claims' 95% intervals). Under the null every pair is an A/A comparison, so the share of pairs whose interval
excludes 0 is the test's false-alarm rate: it should be near 5% (a much higher rate says the claims' paired
intervals are too narrow, e.g. the seeds are not independent; a much lower one, too wide).

Also measured: the spread of the A/A paired difference (``aa_sd``, replicates of one seed: the noise a claim's
paired effect must clear) against the spread of the arm's per-seed mean across seeds (``seed_sd``: what an
unpaired comparison would face); ``pairing_variance_ratio`` = ``2 seed_sd^2 / aa_sd^2``.

Last line: one JSON object (``false_alarm_rate`` with its Wilson 95% interval, per metric).

    .venv/bin/python bench/aa.py [--preset c2_individual] [--arm static] [--pairs 20] [--seeds 5] [--windows 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

import experiments.arms  # noqa: F401  (registers the arms)
from experiments.config import load_config
from experiments.run import build_env
from rewards.stats import mean_test, wilson

CONF = Path(__file__).resolve().parents[1] / "conf"
METRICS = ("clicks_exp", "clicks")  # per request, averaged over the run's windows: expected and realised


def run_means(cfg, seed: int, windows: int) -> dict[str, float]:
    """One run of the arm (its config held: the static arm's windows): the metrics over its windows."""
    env = build_env(cfg)
    env.reset(seed=seed)
    service = env.unwrapped.service
    sums = dict.fromkeys(METRICS, 0.0)
    n = 0
    for _ in range(windows):
        log = service.serve(1, learn=cfg.evolution.learn)
        for m in METRICS:
            sums[m] += float(log.requests[m].sum())
        n += len(log.requests["clicks"])
    return {m: s / n for m, s in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="c2_individual")
    ap.add_argument("--arm", default="static", help="the controller option of the arm replicated")
    ap.add_argument("--pairs", type=int, default=20, help="disjoint A/A pairs (tests)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per test (as the preset's claims)")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--window", type=int, default=300)
    a = ap.parse_args()
    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose(config_name="config", overrides=[f"experiment={a.preset}", f"controller={a.arm}",
                                                         f"evolution.window={a.window}"])
    started = time.perf_counter()
    # means[r][seed][metric]: replicate r = 1 .. 2 * pairs
    means: dict[int, dict[int, dict[str, float]]] = {}
    for r in range(1, 2 * a.pairs + 1):
        base.controller.replicate = r
        means[r] = {}
        for s in range(a.seeds):
            base.seed = s  # the run's seed: the env's reset and the system's (its models' initial weights)
            means[r][s] = run_means(load_config(base), s, a.windows)
    seconds = time.perf_counter() - started
    out: dict[str, object] = {"preset": a.preset, "arm": a.arm, "pairs": a.pairs, "seeds": a.seeds,
                              "windows": a.windows, "window": a.window, "runs": 2 * a.pairs * a.seeds,
                              "seconds": round(seconds, 1), "machine": platform.machine()}
    for m in METRICS:
        alarms, aa_diffs, seed_sds = 0, [], []
        for k in range(a.pairs):
            x, y = means[2 * k + 1], means[2 * k + 2]
            diffs = [x[s][m] - y[s][m] for s in range(a.seeds)]
            t = mean_test(diffs)
            alarms += int(t.low > 0 or t.high < 0)
            aa_diffs += diffs
            seed_sds.append(float(np.std([x[s][m] for s in range(a.seeds)], ddof=1)))
        low, high = wilson(alarms, a.pairs)
        aa_sd, seed_sd = float(np.std(aa_diffs, ddof=1)), float(np.sqrt(np.mean(np.square(seed_sds))))
        out[m] = {"false_alarm_rate": alarms / a.pairs, "false_alarms": alarms, "wilson95": [round(low, 4), round(high, 4)],
                  "aa_sd": aa_sd, "seed_sd": seed_sd, "pairing_variance_ratio": 2 * seed_sd**2 / aa_sd**2}
        print(f"{m}: {alarms} false alarms in {a.pairs} A/A tests ({alarms / a.pairs:.0%}, Wilson 95% [{low:.0%}, "
              f"{high:.0%}]); A/A paired sd {aa_sd:.4g} vs seed sd {seed_sd:.4g} "
              f"(pairing divides the variance by {2 * seed_sd**2 / aa_sd**2:.1f})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
