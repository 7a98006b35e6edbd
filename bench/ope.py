"""Off-policy estimators' throughput on a fixed simulated log, against a bare-numpy roofline, and their RMSE on a run of
the benchmark (``experiments/ope.py``).

The fixed log: the benchmark's logging policy on the stationary tiny world, seed 0, 8,000 requests (10 candidates,
slates of 3), and the target ``pl_t0.5``; its propensities, marginals and reward model are prepared once
(``prep_rounds_per_s``: logged rounds per second of that preparation: the slate probabilities of both policies, their
exact marginals, the reward model's fit and its values). Then each estimator of ``rewards.ope`` on those arrays,
``--repeats`` times (median): ``rounds_per_s_<name>``, and ``log_rounds_per_s``, the rounds per second of all five
together; the roofline is the same IPS as one line of numpy on the same arrays (``roofline_rounds_per_s``,
``roofline_over_estimators`` = its rate / the five estimators' rate: what the validation, the standard errors and the
other four estimators cost). Then ``run_benchmark`` with ``--seeds`` seeds (the default settings otherwise: both
regimes, logs of 500, 2,000 and 8,000, four targets): ``rmse_<name>``, the RMSE pooled over targets and regimes at the
largest log (root mean square of the per-target RMSEs). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from collections.abc import Callable

import numpy as np

from envs.sessions import ObservationLayout
from experiments.ope import TARGETS, OPESettings, features, fit_reward_model, run_benchmark, run_policy, summarise, world_config
from rewards.ope import ESTIMATORS, ips, slate_dm, slate_dr, slate_pbm, snips


def timed(fn: Callable[[], object], repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log-size", type=int, default=8000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=10, help="seeds of the benchmark run (the experiment's default is 20)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = OPESettings(seeds=a.seeds)
    cfg = world_config(settings, "stationary")
    layout = ObservationLayout.of(cfg)
    logging_policy, scorer = TARGETS["logging"](settings)
    target, target_scorer = TARGETS["pl_t0.5"](settings)
    logged = run_policy(cfg, 0, logging_policy, scorer, settings.slots(a.log_size), settings.steps, settings,
                        np.random.default_rng(0))
    n, k = logged.n, settings.slate_size
    rng = np.random.default_rng(1)

    def prepare() -> dict[str, np.ndarray]:
        log_scores = scorer(logged.user, logged.candidates, layout)
        t_scores = target_scorer(logged.user, logged.candidates, layout)
        phi = features(logged.user, logged.candidates, layout)
        marg_t = target.marginals(t_scores, k, rng).prob
        return {"reward": logged.reward, "click": logged.click, "slate": logged.slate,
                "pscore": np.exp(logging_policy.log_prob(log_scores, logged.slate)),
                "target_prob": np.exp(target.log_prob(t_scores, logged.slate)),
                "pscore_k": logging_policy.marginals(log_scores, k, rng).of(logged.slate),
                "target_k": np.take_along_axis(marg_t, logged.slate[..., None], axis=2)[..., 0], "marg_t": marg_t,
                "q_k": fit_reward_model(phi, logged.slate, logged.click, settings.ridge).q(phi)}

    prep_s = timed(prepare, 3)
    d = prepare()
    calls: dict[str, Callable[[], object]] = {
        "ips": lambda: ips(d["reward"], d["pscore"], d["target_prob"]),
        "snips": lambda: snips(d["reward"], d["pscore"], d["target_prob"]),
        "dm": lambda: slate_dm(d["q_k"], d["marg_t"]),
        "dr": lambda: slate_dr(d["reward"], d["slate"], d["pscore"], d["target_prob"], d["q_k"], d["marg_t"]),
        "slate_pbm": lambda: slate_pbm(d["click"], d["pscore_k"], d["target_k"]),
    }
    per = {name: timed(calls[name], a.repeats) for name in ESTIMATORS}
    together = timed(lambda: [calls[name]() for name in ESTIMATORS], a.repeats)
    r, p, t = d["reward"], d["pscore"], d["target_prob"]
    roofline = timed(lambda: (t / p * r).mean(), a.repeats * 5)
    print(f"{n} logged rounds: all five estimators {together * 1e3:.2f} ms, bare-numpy IPS {roofline * 1e3:.3f} ms, "
          f"preparation {prep_s:.2f} s; " + ", ".join(f"{k_} {v * 1e3:.2f} ms" for k_, v in per.items()))
    t0 = time.perf_counter()
    frame = run_benchmark(settings)
    bench_s = time.perf_counter() - t0
    _, pooled = summarise(frame)
    largest = pooled[pooled["log_size"] == max(settings.log_sizes)]
    rmse = {f"rmse_{e}": round(math.sqrt(float((largest[largest["estimator"] == e]["rmse"] ** 2).mean())), 5)
            for e in ESTIMATORS}
    for _, row in pooled.iterrows():
        print(f"{row['regime']:>10} n={row['n']:>5} {row['estimator']:>9}: |bias| {row['abs_bias']:.4f} "
              f"sd {row['sd']:.4f} rmse {row['rmse']:.4f}")
    print(json.dumps({
        "log_rounds_per_s": round(n / together), **{f"rounds_per_s_{e}": round(n / per[e]) for e in ESTIMATORS},
        "roofline_rounds_per_s": round(n / roofline), "roofline_over_estimators": round(together / roofline, 1),
        "prep_rounds_per_s": round(n / prep_s), **rmse, "rmse_at_log_size": max(settings.log_sizes), "seeds": a.seeds,
        "benchmark_s": round(bench_s, 1), "log_size": n,
    }))


if __name__ == "__main__":
    main()
