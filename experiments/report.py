"""The claim-by-claim report of a (multi)run: effects across seeds with 95% t-intervals, verdicts and figures.

``python -m experiments.report <run or multirun dir> --out report.md`` reads every run's ``metrics.parquet``
(or ``metrics.csv``) and the claims of its ``config.yaml`` (declared in ``conf/experiment/*.yaml``, see
:class:`~experiments.config.ClaimConfig`). Per claim: the metric is averaged per seed over windows
of the claim's ``stage`` (the evolution's, the exploit ones after it, or all), ``>= from_step``, ending on or after day
``from_day``, and over each group's arms; the effect ``a - b`` gets a 95% t-interval across seeds,
paired by seed when both groups ran the same seeds (else Welch's interval). The verdict is ``held`` when
the interval lies beyond ``min_effect`` in the claimed direction, ``contradicted`` when it lies wholly on
the other side of 0, ``inconclusive`` otherwise, and ``untestable`` when an arm, the metric or a second
seed is missing. The figures of :mod:`experiments.plot` are written next to the report and embedded.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from experiments.config import ClaimConfig
from experiments.plot import load_metrics, load_shifts, make_figures, run_dirs, save_figures, use_agg
from rewards.stats import mean_ci, welch_interval

__all__ = ["ClaimResult", "evaluate_claim", "load_claims", "main", "render_report", "scope_of", "write_report"]

log = logging.getLogger(__name__)

VERDICTS = ("held", "contradicted", "inconclusive", "untestable")


# --------------------------------------------------------------------------- claims


@dataclass
class ClaimResult:
    """A claim's effect ``a - b`` across seeds, its 95% interval and the verdict."""

    claim: ClaimConfig
    verdict: str
    effect: float = math.nan
    low: float = math.nan
    high: float = math.nan
    a_mean: float = math.nan
    b_mean: float = math.nan
    n: int = 0
    paired: bool = False
    seeds: list[int] = field(default_factory=list)
    note: str = ""

    def line(self) -> str:
        """One Markdown line stating the claim and whether it held."""
        c = self.claim
        a, b = " + ".join(c.a), " + ".join(c.b)
        sign = ">" if c.direction == "greater" else "<"
        bound = f"{c.min_effect if c.direction == 'greater' or c.min_effect == 0 else -c.min_effect:g}"
        scope = scope_of(c)
        head = (f"**{c.name}: {self.verdict.upper()}**: {c.metric} of {a} {sign} {b} (effect a - b {sign} {bound})"
                + (f" over {scope}" if scope else ""))
        if self.verdict == "untestable":
            return f"{head}; {self.note}"
        test = "paired by seed" if self.paired else "Welch, unpaired"
        return (f"{head}; effect {self.effect:+.4g}, 95% CI [{self.low:+.4g}, {self.high:+.4g}] "
                f"({a} {self.a_mean:.4g} vs {b} {self.b_mean:.4g}; {test}, n={self.n} seeds)")


def scope_of(claim: ClaimConfig) -> str:
    """Which windows a claim averages, in words ('' for all of them)."""
    stage = {"all": [], "evolution": ["the evolution's windows"], "exploit": ["the exploit windows"]}[claim.stage]
    parts = stage + ([f"windows >= {claim.from_step}"] if claim.from_step else []) + (
        [f"windows ending on or after day {claim.from_day:g}"] if claim.from_day else [])
    return " and ".join(parts)


def _group_means(frame: pd.DataFrame, arms: list[str], metric: str, from_step: int, from_day: float = 0.0,
                 stage: str = "all") -> pd.Series:
    """Per seed: the metric averaged over the ``stage``'s windows ``>= from_step`` ending on or after day ``from_day``,
    then over the group's arms (seeds with all arms)."""
    keep = frame["arm"].isin(arms) & (frame["step"] >= from_step)
    if from_day > 0:
        keep &= frame["day"] >= from_day
    if stage != "all":
        exploit = frame["phase"] == "exploit" if "phase" in frame else pd.Series(False, index=frame.index)
        keep &= exploit if stage == "exploit" else ~exploit
    sub = frame[keep]
    per_run = sub.groupby(["arm", "seed"])[metric].mean().unstack("arm")
    return per_run.dropna().mean(axis=1) if set(arms) <= set(per_run.columns) else pd.Series(dtype=float)


def evaluate_claim(frame: pd.DataFrame, claim: ClaimConfig) -> ClaimResult:
    """The claim's effect and verdict on a metrics table with ``arm``, ``seed``, ``step`` and the metric."""
    present = set(frame["arm"].unique()) if "arm" in frame else set()
    missing = [arm for arm in [*claim.a, *claim.b] if arm not in present]
    if missing:
        return ClaimResult(claim, "untestable", note=f"no runs of arm(s) {missing} (arms present: {sorted(present)})")
    if claim.metric not in frame:
        return ClaimResult(claim, "untestable", note=f"the metrics have no column {claim.metric!r}")
    a = _group_means(frame, claim.a, claim.metric, claim.from_step, claim.from_day, claim.stage)
    b = _group_means(frame, claim.b, claim.metric, claim.from_step, claim.from_day, claim.stage)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return ClaimResult(claim, "untestable", a_mean=float(a.mean()) if len(a) else math.nan,
                           b_mean=float(b.mean()) if len(b) else math.nan,
                           note=f"needs at least 2 seeds per group (got {len(a)} and {len(b)})")
    paired = set(a.index) == set(b.index)
    if paired:
        seeds = sorted(a.index)
        effect, low, high = mean_ci((a[seeds] - b[seeds]).to_numpy())
        if math.isnan(low):  # identical differences: the interval is the point
            low = high = effect
        n = len(seeds)
    else:
        seeds = sorted(set(a.index) | set(b.index))
        effect, low, high, _, _ = welch_interval(a.to_numpy(), b.to_numpy())  # a - b
        n = min(len(a), len(b))
    sign = 1.0 if claim.direction == "greater" else -1.0
    lo, hi = sorted((sign * low, sign * high))
    verdict = "held" if lo > claim.min_effect else "contradicted" if hi < 0 else "inconclusive"
    return ClaimResult(claim, verdict, effect, low, high, float(a.mean()), float(b.mean()), n, paired,
                       [int(s) for s in seeds])


# --------------------------------------------------------------------------- loading and rendering


def _configs(run_dir: Path) -> list[dict]:
    """The resolved configs (``config.yaml``) of the runs under ``run_dir``."""
    return [yaml.safe_load((d / "config.yaml").read_text()) or {} for d in run_dirs(run_dir) if (d / "config.yaml").exists()]


def load_claims(run_dir: str | os.PathLike[str]) -> list[ClaimConfig]:
    """The claims declared in the runs' ``config.yaml`` (they must agree across runs)."""
    declared = [c.get("claims") or [] for c in _configs(Path(run_dir))]
    if not declared:
        return []
    if any(d != declared[0] for d in declared[1:]):
        log.warning("runs under %s declare different claims; using the first run's", run_dir)
    return [ClaimConfig(**c) for c in declared[0]]


def _fmt_ci(values: Sequence[float]) -> str:
    m, lo, hi = mean_ci(values)
    if math.isnan(m):
        return "n/a"
    return f"{m:.4g}" if math.isnan(lo) else f"{m:.4g} [{lo:.4g}, {hi:.4g}]"


SUMMARY_METRICS = ("reward", "outer/engagement/clicks_per_request", "outer/risk/violations_per_request",
                   "outer/long_term/return_rate")


def load_gates(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Every A/B-gated decision the runs under ``run_dir`` committed to their knowledge stores (the LLM designer's
    proposals, the alternation's gates): arm, seed, step, agent, what was tested, decision, effect and its 95% CI.
    A designer's proposal is described by its stored rationale's first part (the edit it made)."""
    from agents.infra.store import KnowledgeStore

    rows = []
    for run in run_dirs(run_dir):
        if not (run / "store.db").exists():
            continue
        summary = yaml.safe_load((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
        with KnowledgeStore(run / "store.db") as store:
            rollouts = store.rollouts()
            if not rollouts:
                continue
            designs = {(d.experiment_id, json.dumps(d.document, sort_keys=True)): d for d in store.designs(valid=True)}
        for r in rollouts:  # a designer's rollout tests the document it stored as a design
            design = designs.get((r.experiment_id, json.dumps(r.candidate_config, sort_keys=True)))
            what = design.rationale.split(":")[0] if design is not None and design.rationale else (
                ", ".join(f"{k}={v}" for k, v in r.candidate_config.items()) if isinstance(r.candidate_config, dict)
                and "pipelines" not in r.candidate_config else "a new design")
            rows.append({"arm": summary.get("arm", run.name), "seed": summary.get("seed"), "step": r.step,
                         "agent": r.agent, "what": what[:120], "decision": r.decision, "effect": r.effect,
                         "ci_low": r.ci_low, "ci_high": r.ci_high})
    return pd.DataFrame(rows, columns=["arm", "seed", "step", "agent", "what", "decision", "effect", "ci_low", "ci_high"])


def render_gates(gates: pd.DataFrame) -> list[str]:
    """Markdown lines: per arm, how many gated candidates were accepted; then every accepted one."""
    if gates.empty:
        return []
    lines = ["## A/B-gated changes", "", "| arm | tested | accepted |", "|---|---|---|"]
    for arm, g in gates.groupby("arm", sort=False):
        lines.append(f"| {arm} | {len(g)} | {int((g['decision'] == 'accepted').sum())} |")
    accepted = gates[gates["decision"] == "accepted"]
    if len(accepted):
        lines += ["", "Accepted (effect on the gate's metric, candidate - incumbent, with its 95% interval):", "",
                  "| arm | seed | step | change | effect | 95% CI |", "|---|---|---|---|---|---|"]
        for _, r in accepted.iterrows():
            lines.append(f"| {r['arm']} | {r['seed']} | {r['step']} | {r['what']} | {r['effect']:+.4f} | "
                         f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] |")
    return lines + [""]


def render_report(frame: pd.DataFrame, results: list[ClaimResult], figures: dict[str, Path], out: Path,
                  title: str = "Experiment report", source: str = "", gates: pd.DataFrame | None = None) -> str:
    """The Markdown report: the claims (one line each, then a table), a per-arm summary (the usual metrics and
    every claim's), the A/B-gated changes (``gates``, from :func:`load_gates`) and the figures."""
    arms = list(dict.fromkeys(frame["arm"])) if len(frame) else []
    seeds = sorted(int(s) for s in frame["seed"].unique()) if len(frame) else []
    lines = [f"# {title}", ""]
    if source:
        lines.append(f"Runs under `{source}`: {frame.groupby(['arm', 'seed']).ngroups if len(frame) else 0} "
                     f"(arms {', '.join(arms)}; seeds {', '.join(map(str, seeds))}); "
                     f"{int(frame['step'].max()) + 1 if len(frame) else 0} windows each.")
        lines.append("")
    lines += ["## Claims", ""]
    if not results:
        lines += ["No claims declared (add `claims:` to the experiment config).", ""]
    for r in results:
        lines.append(f"- {r.line()}" + (f"  \n  _{r.claim.description}_" if r.claim.description else ""))
    if results:
        lines += ["", "| claim | metric | a | b | effect (a - b) | 95% CI | n | test | verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in results:
            ci = "" if math.isnan(r.low) else f"[{r.low:+.4g}, {r.high:+.4g}]"
            eff = "" if math.isnan(r.effect) else f"{r.effect:+.4g}"
            test = "" if r.verdict == "untestable" else ("paired" if r.paired else "Welch")
            lines.append(f"| {r.claim.name} | {r.claim.metric} | {' + '.join(r.claim.a)} | {' + '.join(r.claim.b)} "
                         f"| {eff} | {ci} | {r.n} | {test} | {r.verdict} |")
    lines += ["", "## Arms", "", "Mean over windows per run, then mean and 95% CI across seeds.", ""]
    cols = [m for m in dict.fromkeys([*SUMMARY_METRICS, *(r.claim.metric for r in results)]) if m in frame]
    if cols:
        lines += ["| arm | seeds | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        per_run = frame.groupby(["arm", "seed"])[cols].mean()
        for arm in arms:
            runs = per_run.loc[arm]
            lines.append(f"| {arm} | {len(runs)} | " + " | ".join(_fmt_ci(runs[c].to_numpy()) for c in cols) + " |")
    if gates is not None and not gates.empty:
        lines += ["", *render_gates(gates)]
    if figures:
        lines += ["", "## Figures", ""]
        for name, path in figures.items():
            lines += [f"![{name}]({os.path.relpath(path, out.parent)})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                 claims: list[ClaimConfig] | None = None, figures: bool = True) -> tuple[Path, list[ClaimResult]]:
    """Evaluate the claims of the runs under ``run_dir``, draw the figures and write the report (default
    ``<run_dir>/report.md``)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.md"
    frame = load_metrics(run_dir)
    claims = load_claims(run_dir) if claims is None else claims
    results = [evaluate_claim(frame, c) for c in claims]
    paths: dict[str, Path] = {}
    if figures:
        metrics = list(dict.fromkeys(c.metric for c in claims))
        paths = save_figures(make_figures(frame, load_shifts(run_dir), claim_metrics=metrics), out.parent / "figures")
    names = {c.get("name") for c in _configs(run_dir)} - {None}
    title = f"Report: {', '.join(sorted(names))}" if names else "Experiment report"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(frame, results, paths, out, title, str(run_dir), load_gates(run_dir)))
    return out, results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run or multirun directory (searched recursively for metrics)")
    parser.add_argument("--out", default=None, help="the report's path (default <run_dir>/report.md)")
    parser.add_argument("--no-figures", action="store_true", help="leave the figures out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    use_agg()
    path, results = write_report(args.run_dir, args.out, figures=not args.no_figures)
    for r in results:
        print(r.line())
    print(f"report: {path}")


if __name__ == "__main__":
    main()
