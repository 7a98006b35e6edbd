"""How many seeds (and windows) a claim needs: power analysis from a pilot multirun.

``python -m experiments.power <pilot multirun dir> [--mde X] [--metric M] [--power 0.8] [--alpha 0.05]`` reads the
pilot's runs and claims as :mod:`experiments.report` does (:func:`~experiments.plot.load_metrics`,
:func:`~experiments.report.load_claims`), and per claim estimates the spread of the per-seed difference ``a - b``
(paired by seed on the seeds both groups ran; the root mean square of the groups' spreads when fewer than 2 are
common) and proposes:

- ``seeds``: the number of seeds whose minimum detectable effect at ``--power`` (two-sided level ``--alpha``
  t-test, :func:`rewards.stats.n_for_mde`) is the target: ``--mde``, or by default each claim's ``min_effect``;
- ``windows``: paired claims only, the number of windows per run that reaches the target with the pilot's seeds.
  The variance of a per-seed difference is split into a seed component and a window component,
  ``var(d) = var_seed + var_window / W`` (``var_window``: the variance of ``a - b`` across a run's ``W`` windows,
  pooled over seeds); more windows shrink only the second. ``-`` when no number of windows is enough (the seed
  component alone is above the target at these seeds). Windows that trend (learning, shifts) inflate
  ``var_window``: the estimate is conservative there.

It prints a table, then one JSON line (``{"power": ...}``) with every number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.config import ClaimConfig
from experiments.plot import json_safe, load_metrics
from experiments.report import ALPHA, POWER, claim_samples, load_claims, paired_seeds, window_table
from rewards.stats import mde, n_for_mde, power_at, t_quantile

__all__ = ["main", "plan_claim", "plan_claims", "render_plan"]

MAX_N = 100_000  # seeds or windows: beyond this the plan says "more than"


def _window_components(frame: pd.DataFrame, claim: ClaimConfig) -> tuple[float, float, int]:
    """``(var_seed, var_window, W)`` of the paired per-seed difference over the claim's windows (nan without
    at least 2 seeds with 2 common windows)."""
    ta, tb = window_table(frame, claim.a, claim), window_table(frame, claim.b, claim)
    if ta.empty or tb.empty:
        return math.nan, math.nan, 0
    seeds, steps = ta.index.intersection(tb.index), ta.columns.intersection(tb.columns)
    d = (ta.loc[seeds, steps] - tb.loc[seeds, steps]).dropna(axis=1, how="any")
    if len(d) < 2 or d.shape[1] < 2:
        return math.nan, math.nan, int(d.shape[1])
    w = d.shape[1]
    var_window = float(d.var(axis=1, ddof=1).mean())
    var_d = float(d.mean(axis=1).var(ddof=1))
    return max(0.0, var_d - var_window / w), var_window, w


def plan_claim(frame: pd.DataFrame, claim: ClaimConfig, target: float | None = None, alpha: float = ALPHA,
               power: float = POWER) -> dict[str, Any]:
    """One claim's plan from a pilot's metrics table: its pilot ``n`` and spread ``sd``, the MDE and the power at
    ``target`` (default the claim's ``min_effect``) now, the ``seeds`` needed for that MDE, and (paired claims) the
    seed and window variance components and the ``windows`` per run needed at the pilot's seeds (None: none is
    enough). ``note`` says why a claim cannot be planned."""
    target = claim.min_effect if target is None else target
    out: dict[str, Any] = {"claim": claim.name, "metric": claim.metric, "target": target, "alpha": alpha, "power": power,
                           "n": 0, "paired": False, "sd": math.nan, "mde_now": math.nan, "power_now": math.nan,
                           "seeds": None, "windows_now": 0, "seed_sd": math.nan, "window_sd": math.nan, "windows": None,
                           "note": ""}
    a, b, why = claim_samples(frame, claim)
    if why:
        return {**out, "note": why}
    common = paired_seeds(a, b)
    paired = len(common) >= 2  # as the report pairs
    if paired:
        seeds = common
        d = (a[seeds] - b[seeds]).to_numpy()
        n, sd = len(d), float(np.std(d, ddof=1))
    else:
        n, sd = min(len(a), len(b)), math.sqrt((float(a.var(ddof=1)) + float(b.var(ddof=1))) / 2)
    out.update(n=n, paired=paired, sd=sd, mde_now=mde(sd, n, alpha, power, paired),
               power_now=power_at(target, sd, n, alpha, paired),
               seeds=n_for_mde(sd, target, alpha, power, paired, max_n=MAX_N))
    if not paired:
        return {**out, "note": "unpaired (the groups ran different seeds): seeds per group; no window plan"}
    var_seed, var_window, w = _window_components(frame, claim)
    out["windows_now"] = w
    if math.isnan(var_window):
        return {**out, "note": "fewer than 2 windows per run: no window plan"}
    out.update(seed_sd=math.sqrt(var_seed), window_sd=math.sqrt(var_window))
    # (t_{1-alpha/2, n-1} + t_{power, n-1}) * sqrt((var_seed + var_window / W') / n) <= target
    k = t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)
    room = (target / k) ** 2 * n - var_seed
    if room > 0:
        windows = max(1, math.ceil(var_window / room)) if var_window > 0 else 1
        out["windows"] = windows if windows <= MAX_N else MAX_N + 1
    return out


def plan_claims(run_dir: str | os.PathLike[str], target: float | None = None, metric: str | None = None,
                alpha: float = ALPHA, power: float = POWER) -> list[dict[str, Any]]:
    """:func:`plan_claim` for every claim of the pilot multirun under ``run_dir`` (only those on ``metric`` if given)."""
    claims = load_claims(run_dir, min_effect=target)
    if not claims:
        raise ValueError(f"the runs under {run_dir} declare no claims (their config.yaml has no `claims:`)")
    if metric is not None:
        chosen = [c for c in claims if c.metric == metric]
        if not chosen:
            raise ValueError(f"`--metric` must be one of the claims' metrics {sorted({c.metric for c in claims})} "
                             f"(got {metric!r})")
        claims = chosen
    frame = load_metrics(run_dir)
    return [plan_claim(frame, c, target, alpha, power) for c in claims]


def _g(x: float | int | None, fmt: str = ".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return ""
    return format(x, fmt)


def _more(x: int | None) -> str:
    return "-" if x is None else f"> {MAX_N}" if x > MAX_N else str(x)


def render_plan(plans: list[dict[str, Any]]) -> str:
    """A Markdown table of the plans."""
    lines = ["| claim | metric | pilot seeds | sd of a - b | MDE80 now | target | power now | seeds needed "
             "| windows | window sd | seed sd | windows needed (pilot seeds) | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in plans:
        lines.append(f"| {p['claim']} | {p['metric']} | {p['n']} | {_g(p['sd'])} | {_g(p['mde_now'])} | {p['target']:g} "
                     f"| {_g(p['power_now'], '.2f')} | {_more(p['seeds'])} | {p['windows_now']} | {_g(p['window_sd'])} "
                     f"| {_g(p['seed_sd'])} | {_more(p['windows'])} | {p['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a pilot (multi)run directory (searched recursively for metrics)")
    parser.add_argument("--mde", type=float, default=None,
                        help="the minimum detectable effect wanted, in the metric's units (default: each claim's min_effect)")
    parser.add_argument("--metric", default=None, help="plan only the claims on this metric")
    parser.add_argument("--power", type=float, default=POWER, help="the power wanted at the target (default 0.8)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="two-sided test level (default 0.05)")
    args = parser.parse_args(argv)
    if args.mde is not None and not args.mde > 0:
        parser.error(f"--mde must be > 0 (got {args.mde})")
    if not 0 < args.power < 1 or not 0 < args.alpha < 1:
        parser.error(f"--power and --alpha must be in (0, 1) (got {args.power} and {args.alpha})")
    if not Path(args.run_dir).exists():
        parser.error(f"no such directory: {args.run_dir}")
    try:
        plans = plan_claims(args.run_dir, args.mde, args.metric, args.alpha, args.power)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"Power plan from the pilot under {args.run_dir}: two-sided t-test at level {args.alpha:g}, "
          f"power {args.power:g}, target MDE {'each claim' + chr(39) + 's min_effect' if args.mde is None else args.mde}.")
    print(render_plan(plans))
    sys.stdout.write(json.dumps({"power": json_safe({"run_dir": str(args.run_dir), "alpha": args.alpha,
                                                       "power": args.power, "claims": plans})}) + "\n")


if __name__ == "__main__":
    main()
