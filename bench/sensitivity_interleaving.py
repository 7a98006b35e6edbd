"""Sensitivity of interleaving vs A/B: requests each needs to see a re-ranker config difference (not a test).

For pairs of re-ranker configs (``baseline/rerank/mmr``; the incumbent is the default, the challenger differs in one
parameter) on a deployment whose ranker has learned for a few windows:

* truth: twins (:meth:`Deployment.fork`) of the same state serve the same traffic for ``windows`` windows, one
  with each config (learning off); the effect is the difference of expected clicks per request (``clicks_exp``
  where the log has it, realised clicks otherwise);
* A/B: a fork serves a 50/50 user split (:meth:`Deployment.serve_split`) for ``windows`` windows; the variance is
  the user-clustered variance of each arm's mean; requests needed for 80% power at alpha 0.05 (two-sided) to see
  the true effect: ``n = (z_.975 + z_.8)^2 * n_seen * (se_0^2 + se_1^2) / effect^2`` (both arms together; with
  unclustered variances this is ``2 * ((z_.975 + z_.8) sd / effect)^2`` per arm);
* interleaving: a fork serves interleaved windows (:meth:`Deployment.serve_interleaved`, team draft); the
  statistic is the per-request credit difference; requests needed: ``(z_.975 + z_.8)^2 * n_seen * se^2 / effect^2``
  with its own observed effect and user-clustered se; ``adj``: the same after removing the part of each request's
  difference explained by which team the coins put first in each round (a randomised design variable).

Every quantity is measured on expected clicks (``exp``: ``clicks_exp`` / ``click_exp``, realised clicks where the log
has none) and on realised clicks (``clk``), from the same windows. Prints a table, then a last line of JSON:
``interleaving_sensitivity_ratio`` (the median, over pairs whose true effect is clear (> 3 twin s.e.), of A/B
requests needed (both arms) / interleaving requests needed with the first-pick adjustment the A/B gate uses, on
expected clicks when logged; ``..._unadjusted`` without it) and
``interleaving_sign_agreement`` (the share of those pairs whose interleaving effect has the truth's sign), a summary
per metric and the per-pair numbers.

    .venv/bin/python bench/sensitivity_interleaving.py [--windows 3] [--window 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import numpy as np
import torch

import envs
from agents.decision.configs import static_baseline
from agents.evolution.deployment import Deployment
from rewards.stats import clustered_mean_interval, clustered_se

__all__ = ["PAIRS", "interleaving_summary", "main", "measure_pair"]

AGENT = "baseline/rerank/mmr"
Z = 1.959964 + 0.841621  # z_.975 + z_.8
# challenger configs, each one parameter away from the default re-ranker (mmr_lambda 0, no boost, no cap)
PAIRS: dict[str, dict] = {
    "mmr_lambda=0.3": {"mmr_lambda": 0.3},
    "mmr_lambda=1.0": {"mmr_lambda": 1.0},
    "freshness_boost=0.5": {"freshness_boost": 0.5},
    "risk_threshold=0.3": {"risk_threshold": 0.3},
    "exposure_cap=100": {"exposure_cap": 100},
    "mmr_pool=20@lambda0.5": {"mmr_lambda": 0.5, "mmr_pool": 20},  # vs lambda 0.5 with pool 200: see main
}


def _outcome(log, expected: bool = True) -> np.ndarray:
    req = log.requests
    return (req["clicks_exp"] if expected and "clicks_exp" in req else req["clicks"]).astype(np.float64)


def _se(values: np.ndarray, clusters: np.ndarray | None = None) -> float:
    """The user-clustered standard error of the mean of ``values`` (``rewards.stats.clustered_se``)."""
    return clustered_se(values, clusters)[1]


def _challenger(service: Deployment, config: dict):
    system = copy.deepcopy(service.system)
    r = system.pipelines[0].reranker
    r.configure(r.params.validate({**r.config, **config}))
    return system


def _needed(effect: float, se: float, n_seen: int) -> float:
    """Requests for 80% power at alpha 0.05 (two-sided): ``(z_.975 + z_.8)^2 * n_seen * se^2 / effect^2``."""
    return Z**2 * n_seen * se**2 / effect**2 if effect else math.inf


def _position_adjusted(d: np.ndarray, team: np.ndarray) -> np.ndarray:
    """``d`` less its regression on each round's first pick (team of positions 0, 2, ...; centred at its design mean
    1/2): the share of the credit difference due to which team the coins put first (a randomised design variable,
    so the mean is unchanged in expectation and the variance falls)."""
    x = team[:, ::2].astype(np.float64) - 0.5
    beta, *_ = np.linalg.lstsq(np.column_stack([np.ones(len(d)), x]), d, rcond=None)
    return d - x @ beta[1:]


def measure_pair(base: Deployment, incumbent: dict, challenger: dict, windows: int, method: str = "team_draft") -> dict:
    """Truth, A/B and interleaving on forks of ``base`` (see the module docstring) for one pair of configs, on
    expected clicks (``exp_*``, realised clicks where the log has no expected ones) and on realised clicks (``clk_*``)."""
    twin_logs = []
    for cfg in (incumbent, challenger):
        fork = base.fork()
        fork.deploy_config(AGENT, cfg)
        twin_logs.append([fork.serve(learn=False) for _ in range(windows)])
    ab = base.fork()
    ab.deploy_config(AGENT, incumbent)
    rival = _challenger(ab, challenger)
    salt = ab.new_salt()
    splits = [ab.serve_split(rival, 0.5, salt=salt, learn=False) for _ in range(windows)]
    il = base.fork()
    il.deploy_config(AGENT, incumbent)
    rival = _challenger(il, challenger)
    mixed = [il.serve_interleaved(rival, method) for _ in range(windows)]
    out: dict = {"expected": bool("click_exp" in mixed[0].log.impressions)}
    for key, expected, metric in (("exp", True, "expected_clicks"), ("clk", False, "clicks")):
        twins = [np.concatenate([_outcome(lg, expected) for lg in logs]) for logs in twin_logs]
        truth = float(twins[1].mean() - twins[0].mean())
        x = [np.concatenate([_outcome(w.log, expected)[m] for w in splits for m in [(~w.candidate, w.candidate)[a]]])
             for a in (0, 1)]
        u = [np.concatenate([w.log.requests["user"][(~w.candidate, w.candidate)[a]] for w in splits]) for a in (0, 1)]
        ab_se = math.sqrt(_se(x[0], u[0]) ** 2 + _se(x[1], u[1]) ** 2)
        ab_effect = float(x[1].mean() - x[0].mean())
        credits = [w.credit(metric) for w in mixed]
        d = np.concatenate([c[:, 1] - c[:, 0] for _, _, c in credits])
        du = np.concatenate([us for _, us, _ in credits])
        team = np.concatenate([w.team.reshape(-1, w.log.impressions["position"].max() + 1) for w in mixed])
        adj = _position_adjusted(d, team) if method == "team_draft" else d
        res = clustered_mean_interval(d, du)
        ab_needed = _needed(truth, ab_se, len(x[0]) + len(x[1]))
        il_needed = _needed(float(d.mean()), _se(d, du), len(d))
        adj_needed = _needed(float(adj.mean()), _se(adj, du), len(d))
        out |= {
            f"{key}_truth": truth, f"{key}_truth_se": _se(twins[1] - twins[0]), f"{key}_ab_effect": ab_effect,
            f"{key}_ab_needed": ab_needed, f"{key}_il_effect": float(d.mean()), f"{key}_il_p": float(res.p),
            f"{key}_il_needed": il_needed, f"{key}_il_adj_needed": adj_needed,
            f"{key}_ratio": ab_needed / il_needed, f"{key}_ratio_adj": ab_needed / adj_needed,
            f"{key}_il_sign_ok": bool(np.sign(d.mean()) == np.sign(truth)),
            f"{key}_ab_sign_ok": bool(np.sign(ab_effect) == np.sign(truth)),
        }
    return out


def interleaving_summary(windows: int = 3, window: int = 2000, warmup: int = 3, seed: int = 0, method: str = "team_draft",
                         pairs: tuple[str, ...] = tuple(PAIRS)) -> dict:
    """Measure every pair (see the module docstring); prints a table and returns the summary (the JSON of main)."""
    torch.set_num_threads(1)
    world = envs.WorldConfig(num_items=1000, num_users=3000, num_topics=8, num_creators=50)
    t0 = time.perf_counter()
    base = Deployment.start(world, static_baseline(world), seed=seed, concurrency=400, window=window)
    base.serve(warmup)
    rows = {}
    print(f"{'pair':24s} {'metric':6s} {'truth':>8s} {'+-se':>7s} {'ab_eff':>8s} {'ab_need':>8s} {'il_eff':>8s} "
          f"{'il_p':>7s} {'il_need':>8s} {'adj_need':>8s} {'ratio':>6s} {'r_adj':>6s} sign(il,ab)")
    for name in pairs:
        challenger = PAIRS[name]
        incumbent = {"mmr_lambda": 0.5, "mmr_pool": 200} if "mmr_pool" in challenger else {}
        r = rows[name] = measure_pair(base, incumbent, challenger, windows, method)
        for k in ("exp", "clk"):
            print(f"{name:24s} {k:6s} {r[k + '_truth']:+8.4f} {r[k + '_truth_se']:7.4f} {r[k + '_ab_effect']:+8.4f} "
                  f"{min(r[k + '_ab_needed'], 1e8):8.0f} {r[k + '_il_effect']:+8.4f} {r[k + '_il_p']:7.4f} "
                  f"{min(r[k + '_il_needed'], 1e8):8.0f} {min(r[k + '_il_adj_needed'], 1e8):8.0f} "
                  f"{min(r[k + '_ratio'], 1e4):6.1f} {min(r[k + '_ratio_adj'], 1e4):6.1f} "
                  f"{int(r[k + '_il_sign_ok'])},{int(r[k + '_ab_sign_ok'])}", flush=True)

    def summary(k: str) -> dict:
        clear = {n: r for n, r in rows.items() if abs(r[f"{k}_truth"]) > 3 * r[f"{k}_truth_se"]}  # a clear truth
        med = lambda m: float(np.median([r[m] for r in clear.values()])) if clear else None  # noqa: E731
        share = lambda m: float(np.mean([r[m] for r in clear.values()])) if clear else None  # noqa: E731
        return {"ratio": med(f"{k}_ratio"), "ratio_position_adjusted": med(f"{k}_ratio_adj"),
                "il_sign_agreement": share(f"{k}_il_sign_ok"), "ab_sign_agreement": share(f"{k}_ab_sign_ok"),
                "clear_pairs": list(clear)}

    main_key = "exp" if any(r["expected"] for r in rows.values()) else "clk"
    sums = {"expected_clicks": summary("exp"), "clicks": summary("clk")}
    head = sums["expected_clicks" if main_key == "exp" else "clicks"]
    return {  # the gate's test adjusts for the coins' first picks (agents.evolution.interleaving.adjust_for_design)
        "interleaving_sensitivity_ratio": head["ratio_position_adjusted"], "interleaving_sensitivity_ratio_unadjusted":
        head["ratio"], "interleaving_sign_agreement": head["il_sign_agreement"],
        "metric": "expected_clicks" if main_key == "exp" else "clicks", "summary": sums, "method": method,
        "seed": seed, "windows": windows, "window": window, "seconds": round(time.perf_counter() - t0, 1),
        "pairs": {n: {m: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v if not isinstance(v, float)
                          else None) for m, v in r.items()} for n, r in rows.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--window", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="team_draft")
    ap.add_argument("--pairs", default=",".join(PAIRS))
    a = ap.parse_args()
    print(json.dumps(interleaving_summary(a.windows, a.window, a.warmup, a.seed, a.method, tuple(a.pairs.split(",")))))


if __name__ == "__main__":
    main()
