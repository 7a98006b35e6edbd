"""The ablation suite: one experiment preset per claim of the paradigm, each a Hydra multirun, then one report.

``python -m experiments.ablations [--smoke] [--out DIR]`` runs, for every ablation in :data:`ABLATIONS`,
``python -m experiments.run -m experiment=<preset>`` (arms x seeds on the joblib launcher, tables only: no
wandb, TensorBoard or per-run plots), then evaluates the claims the preset declares (``conf/experiment/<preset>.yaml``)
and writes ``<out>/report.md``: a table of every claim's effect, 95% CI, p-value and verdict (also after Holm's and
Benjamini-Hochberg's adjustment over the whole suite), a table of each claim's power (MDE80, power at its
``min_effect``, bootstrap interval, A/A noise floor), then per ablation the claim lines, the per-arm summary and
the figures (curves with CI bands per arm, shifts marked), with the runtime of each multirun. ``<out>/<preset>/``
keeps the runs (``runs/``), that ablation's own ``report.md``, its figures and the multirun's log;
``<out>/summary.json`` has every claim's numbers and verdicts (:func:`suite_summary`) and the timings.

C9 (off-policy evaluation) is not a multirun of the experiment app: it runs ``python -m experiments.ope --suite``
(100 seeds, or ``n`` given as ``seed=range(n)``, as the power planner does; ``--smoke``: 2), which writes one run folder
per (estimator, seed) in the same layout, so its claims (``experiments.ope.C9_CLAIMS``) are judged by the same report;
other overrides (a world) do not apply to it.

``--smoke`` runs a reduced suite (2 seeds, 3 warm-up + 3 + 1 windows of 100 requests, 50 sessions, rankers without minimum
updates; the nine multiruns at once, one job each: about four minutes on 2 cores, 2026-12-03) that checks the
machinery end to end; its claims are evaluated over every window (``from_step`` and ``from_day`` dropped), so its verdicts say
nothing about the paradigm. ``--only c1_heterogeneity,c5_reward`` runs a subset;
``--report-only`` re-evaluates runs already under ``--out``; extra ``key=value`` arguments go to every multirun.
To add seeds to a pilot, run it again into the same ``--out`` with the seeds it lacks (``--only C3
'seed=range(12,30)'``): the new runs go beside the pilot's, the report covers all of them and the runtime adds up.

``--seeds-from <pilot summary.json> ... [--max-seeds 30] [--plan-only]`` chooses each ablation's seeds with the power
helper (:func:`plan_seeds`): the most any of its testable claims needs for an MDE80 at most its ``min_effect`` at the
suite's Holm level, from the spread the pilot measured; it prints the plan (seeds, projected runtime, the claims
still underpowered at the cap) and runs it.

**Reference arms on fewer seeds.** A preset's arms that only measure headroom (:func:`reference_arms`: named in a
claim's ``headroom_arms`` and compared by no claim, e.g. C4's ``hindsight_composition``, 8 whole runs per seed) run on the
first ``--headroom-seeds`` seeds (default 10; ``all``: every seed) when the suite's seeds are ``seed=range(...)``
beyond them: the headroom gate reads the reference's mean gap over the seeds it ran, a property of the world, not of
the arms a claim compares. A reference that a claim judged as shares of the headroom (``scale: headroom``) divides by
seed by seed runs on every seed. The plan's projection counts each arm's runs at its own seeds when the pilot's
summary has per-arm runtimes (``arms``), and scales the pilot's whole runtime by seeds otherwise.

**Other worlds.** The suite on a world of your own is the same command with world overrides, which every preset's
multirun takes on top of its own world (e.g. ``world.num_topics=10``, ``'world.request_mix={new: 0.1, casual: 0.3,
heavy: 0.6}'``); ``--compare default=<summary.json> topics=<summary.json> ...`` then prints every claim's effect and
verdict per world and which verdicts are robust, flip, differ or stay undecided (:func:`compare_suites`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from experiments.config import ClaimConfig
from experiments.plot import (
    curves_figure,
    json_safe,
    load_curves,
    load_metrics,
    load_shifts,
    make_figures,
    save_figures,
    use_agg,
)
from experiments.report import (
    VERDICT_RULE,
    ClaimResult,
    adjust,
    claims_table,
    evaluate_claim,
    load_claims,
    load_gates,
    load_warmups,
    power_table,
    render_report,
)

__all__ = ["ABLATIONS", "SMOKE_OVERRIDES", "Ablation", "AblationResult", "SeedPlan", "budget_seeds", "compare_suites",
           "evaluate_ablation", "ope_seeds",
           "main", "plan_seeds", "render_plan", "render_suite", "run_ablation", "run_suite", "suite_status", "suite_summary"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ablation:
    """A claim of the paradigm and the experiment preset (``conf/experiment/<preset>.yaml``) that tests it."""

    key: str  # C1, C2, ...
    preset: str
    title: str
    question: str
    # what runs it: the experiment app's multirun of ``conf/experiment/<preset>.yaml``, or the OPE benchmark
    # (``experiments.ope --suite``: C9's estimators are its "arms" and its claims are ``experiments.ope.C9_CLAIMS``)
    module: str = "experiments.run"


ABLATIONS: tuple[Ablation, ...] = (
    Ablation("C1", "c1_heterogeneity", "Heterogeneity",
             "Do pipelines specialised by user segment serve a heterogeneous population better than one model for all?"),
    Ablation("C2", "c2_individual", "Individual evolution",
             "Do agents whose configuration is evolved online (RL, black-box search) beat static configurations "
             "under shifting distributions, and recover after a shift?"),
    Ablation("C3", "c3_structural", "Structural evolution",
             "Does an LLM designer that changes a pipeline's structure (recall routes, ranker architecture), each change "
             "gated by an A/B test, beat search confined to the parametric space?"),
    Ablation("C4", "c4_composition", "Compositional evolution",
             "Does evolving how agents are wired (routes, rankers, segment routing), alone or alternating with "
             "individual evolution, beat evolving one agent?"),
    Ablation("C5", "c5_reward", "Reward design",
             "Does the layered reward (inner + outer, with Lagrangian constraints) keep both the business metric and "
             "the agent's local competence, within the risk bound?"),
    Ablation("C6", "c6_automodel", "Model and feature evolution",
             "Do AutoModel agents that evolve the ranker's features and model (offline screening on logged windows, "
             "an A/B gate online) beat re-rank-only evolution and the static linear ranker?"),
    Ablation("C7", "c7_knowledge", "Knowledge reuse",
             "When regimes recur, does a search warm-started from the knowledge store's trials of the nearest regime "
             "have lower regret than one restarted cold?"),
    Ablation("C8", "c8_system", "The coordinated AutoModel system",
             "Do AutoTrain, AutoPerf and re-rank evolution running at once under a coordinator (serialised tests within "
             "a traffic budget, global degradation and FLOPs bounds) end with a better engagement/cost trade-off than "
             "the same agents shipping on their own, and beat the static system?"),
    Ablation("C9", "c9_ope", "Off-policy evaluation",
             "Which off-policy estimator (IPS, SNIPS, DM, DR, the position-based slate estimator) comes closest to a "
             "slate policy's true value, measured on twins, at small and large logs, and across a shift?",
             module="experiments.ope"),
)
# the reduced suite: 2 seeds, 3 windows of 100 requests (and 1 exploit window), 50 concurrent sessions, the main
# ranker without a minimum of gradient steps per window
SMOKE_OVERRIDES = ("seed=0,1", "evolution.warmup=3", "evolution.windows=3", "evolution.exploit=1", "evolution.window=100",
                   "evolution.concurrency=50", "system.pipelines.0.ranker.params.min_updates=0",
                   "evolution.leaders=2", "evolution.retest=2")  # a re-test (select=retest) fits in 3 windows
QUIET = ("logger=csv", "logger.plots=false", "logger.progress=false")
OPE_SMOKE = ("--quick", "--seeds", "2")  # C9's reduced benchmark: 2 seeds, logs of 300 and 1,200 requests
# C9's seeds: squared errors are heavy-tailed (20 seeds gave MDE80 2-4x its min_effects); 100 seeds take ~5 minutes
OPE_SEEDS = 100
# headroom-only reference arms run on at most this many seeds (the first ones) when the suite runs more (--headroom-seeds)
HEADROOM_SEEDS = 10
EXPERIMENT_CONF = Path(__file__).resolve().parents[1] / "conf" / "experiment"
JOBLIB_LAUNCHER = "parallel"  # conf/hydra/launcher/parallel.yaml, the app's default: the one --jobs sets (n_jobs)
ARM_SWEEPS = ("controller", "variant")  # the override a preset's multirun sweeps its arms with
_SEED_RANGE = re.compile(r"seed=range\((\d+)(?:,(\d+))?\)")


@dataclass
class AblationResult:
    """One ablation's runs, claim results and runtime."""

    ablation: Ablation
    run_dir: Path
    results: list[ClaimResult]
    seconds: float
    runs: int
    report: Path
    section: str
    seeds: int = 0  # distinct seeds among the runs (a claim's n counts only the seeds where both its arms ran)
    arms: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # arm -> its runs and their seconds


def _smoke_claims(claims: list[ClaimConfig]) -> list[ClaimConfig]:
    """Smoke runs are a few windows long: evaluate every claim over all of them, without a headroom gate (a gap over
    a few windows of 100 requests says nothing; the figure is still reported). A claim judged on shares of the
    headroom (``scale: headroom``) keeps a gate of 1e-9: it needs a positive gap to divide by."""
    return [dataclasses.replace(c, from_step=0, from_day=0.0, headroom=0.0 if c.scale == "none" else 1e-9)
            for c in claims]


@dataclass
class _Launched:
    """A multirun in flight."""

    ablation: Ablation
    base: Path
    proc: subprocess.Popen
    logfile: object
    started: float
    earlier: float = 0.0  # seconds the folder's runs already took (a multirun that adds seeds to a pilot)

    def stop(self) -> None:
        """Stop the multirun and every process it started. It runs in a session of its own (:func:`_launch`), so
        its joblib workers share its process group: terminating the Hydra process alone left them running, still
        writing into the run folders. SIGTERM to the group, SIGKILL to whatever is left after 10 s."""
        if hasattr(os, "killpg"):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except (ProcessLookupError, PermissionError):  # the group is gone
                    break
                if sig == signal.SIGTERM:
                    try:
                        self.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass
                    time.sleep(0.2)  # the workers' own exit, after their leader's
        elif self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        self.logfile.close()


def _command(ablation: Ablation, base: Path, smoke: bool, jobs: int, extra: Sequence[str]) -> list[str]:
    """The command line of one ablation's runs: the experiment app's multirun of its preset with ``extra`` overrides,
    or (C9) the OPE benchmark, which takes only the seeds of ``extra`` (``seed=range(n)``, as the power planner
    writes them: ``n`` seeds) and ignores the rest (world overrides are the experiment app's, not its own)."""
    if ablation.module == "experiments.ope":
        seeds = ope_seeds(extra)
        ignored = [e for e in extra if not _is_seed(e)]
        if ignored:
            log.info("%s runs the OPE benchmark on its own worlds: the overrides %s do not apply to it", ablation.key,
                     " ".join(ignored))
        return [sys.executable, "-m", "experiments.ope", "--suite", "--out", str(base),
                *(OPE_SMOKE if smoke else ("--seeds", str(seeds or OPE_SEEDS)))]
    # `jobs` is the joblib launcher's n_jobs: another launcher (hydra/launcher=slurm, ray_cluster, subprocesses) has
    # no such key and would refuse every multirun; its parallelism is its own (e.g. hydra.launcher.array_parallelism)
    n_jobs = ([f"hydra.launcher.n_jobs={jobs}"] if _launcher(extra) == JOBLIB_LAUNCHER
              and not any(_override_key(e) == "hydra.launcher.n_jobs" for e in extra) else [])
    return [sys.executable, "-m", "experiments.run", "-m", f"experiment={ablation.preset}",
            f"hydra.sweep.dir={base / 'runs'}", *n_jobs, *QUIET, *(SMOKE_OVERRIDES if smoke else ()), *extra]


def _launcher(extra: Sequence[str]) -> str:
    """The Hydra launcher the suite's multiruns use: the last ``hydra/launcher=<name>`` of ``extra``, else the
    app's default (``conf/config.yaml``: :data:`JOBLIB_LAUNCHER`, local parallel jobs)."""
    named = [e.split("=", 1)[1] for e in extra if _override_key(e) == "hydra/launcher" and "=" in e]
    return named[-1] if named else JOBLIB_LAUNCHER


def _override_key(override: str) -> str:
    """The key a Hydra override sets (``+``/``~`` prefixes dropped): ``seed`` for ``seed=range(5)``."""
    return override.split("=", 1)[0].lstrip("+~")


def _is_seed(override: str) -> bool:
    return _override_key(override) == "seed"


def ope_seeds(extra: Sequence[str]) -> int | None:
    """The number of seeds C9 (the OPE benchmark) takes from the suite's overrides: ``seed=range(n)`` runs seeds
    0..n-1 (None: no seed override, its default). The benchmark rewrites its runs, so a range that does not start at
    0 (``seed=range(a,b)``, how the experiment app's presets are extended) or a seed list would silently run other
    seeds than asked: a ValueError, before anything runs."""
    seeds = [e for e in extra if _is_seed(e)]
    found = [re.fullmatch(r"seed=range\((\d+)\)", e) for e in seeds]
    if not all(found):
        raise ValueError(f"C9 (the OPE benchmark) takes its seeds as `seed=range(n)` (seeds 0..n-1; it rewrites its "
                         f"runs, so seeds cannot be added to them: run it again with the total) (got {seeds}); leave "
                         f"C9 out with --only, or pass seed=range(n)")
    return int(found[-1].group(1)) if found else None


def _preset(ablation: Ablation) -> dict:
    """The preset's YAML as written (``conf/experiment/<preset>.yaml``); {} for the OPE benchmark."""
    if ablation.module == "experiments.ope":
        return {}
    return yaml.safe_load((EXPERIMENT_CONF / f"{ablation.preset}.yaml").read_text()) or {}


def arm_sweep(ablation: Ablation) -> tuple[str, list[str]] | None:
    """The override the preset's multirun sweeps its arms with (``controller`` or ``variant``) and its arms in the
    preset's order (longest first); None for the OPE benchmark or a preset without one."""
    params = ((_preset(ablation).get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    for key in ARM_SWEEPS:
        if key in params:
            return key, [arm.strip() for arm in str(params[key]).split(",") if arm.strip()]
    return None


def reference_arms(ablation: Ablation) -> list[str]:
    """The preset's arms that only measure headroom: named in a claim's ``headroom_arms`` (the reference, or the
    baseline of a claim whose gap runs the other way, e.g. C5's ``oracle_safety``), compared by no claim (``a``,
    ``b``), and not needed on every seed by a claim judged as shares of the headroom (``scale: headroom``, whose
    effect divides each seed by that seed's gap)."""
    sweep = arm_sweep(ablation)
    claims = [ClaimConfig(**c) for c in _preset(ablation).get("claims") or []]
    if sweep is None or not claims:
        return []
    compared = {arm for c in claims for arm in (*c.a, *c.b)}
    compared |= {arm for c in claims if c.scale == "headroom" for arm in c.headroom_arms}
    references = {arm for c in claims for arm in c.headroom_arms} - compared
    return [arm for arm in sweep[1] if arm in references]


def multiruns(ablation: Ablation, extra: Sequence[str], headroom_seeds: int | None = HEADROOM_SEEDS
              ) -> list[list[str]]:
    """The overrides of each multirun that makes one ablation's runs: ``[extra]``, or two where ``extra``'s seeds are
    ``seed=range(n)`` or ``seed=range(a,b)`` reaching past ``headroom_seeds``, the preset has :func:`reference_arms`
    and ``extra`` does not choose the arms itself: the other arms on those seeds, then the reference arms on the ones
    below ``headroom_seeds`` (none when the range starts there: seeds added to a pilot). ``headroom_seeds`` None:
    every arm on every seed."""
    sweep = arm_sweep(ablation)
    seeds = [e for e in extra if _is_seed(e)]
    if headroom_seeds is None or sweep is None or len(seeds) != 1:
        return [list(extra)]
    key, arms = sweep
    found = _SEED_RANGE.fullmatch(seeds[0].replace(" ", ""))
    if found is None or any(_override_key(e) == key for e in extra):
        return [list(extra)]
    low, high = (0, int(found[1])) if found[2] is None else (int(found[1]), int(found[2]))
    references = reference_arms(ablation)
    if not references or high <= headroom_seeds:
        return [list(extra)]
    rest = [e for e in extra if not _is_seed(e)]
    parts = [[*rest, f"{key}={','.join(a for a in arms if a not in references)}", seeds[0]]]
    if low < headroom_seeds:
        parts.append([*rest, f"{key}={','.join(references)}", f"seed=range({low},{headroom_seeds})"])
    return parts


def arm_runtimes(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per arm its finished runs and their summed runtime in seconds (each run's ``summary.json``)."""
    arms: dict[str, dict[str, float]] = {}
    for path in sorted(Path(run_dir).glob("*/summary.json")):
        s = json.loads(path.read_text())
        if "arm" in s and isinstance(s.get("seconds"), int | float):
            entry = arms.setdefault(s["arm"], {"runs": 0, "seconds": 0.0})
            entry["runs"] += 1
            entry["seconds"] = round(entry["seconds"] + float(s["seconds"]), 2)
    return arms


def _launch(ablation: Ablation, out: Path, smoke: bool, jobs: int, extra: Sequence[str]) -> _Launched:
    """Start :func:`_command`, appending its log to ``<out>/<preset>/multirun.log``. Into a folder that already
    holds finished runs of the experiment app (a pilot, extended by ``seed=range(a,b)``) the new runs go beside them
    (their folders are named by arm and seed) and the folder's runtime adds up; the OPE benchmark rewrites its own."""
    base = out / ablation.preset
    base.mkdir(parents=True, exist_ok=True)
    timing = base / "seconds.txt"
    extends = ablation.module != "experiments.ope" and timing.exists() and any((base / "runs").glob("*/summary.json"))
    cmd = _command(ablation, base, smoke, jobs, extra)
    env = {**os.environ, "MPLBACKEND": os.environ.get("MPLBACKEND", "Agg"), "WANDB_MODE": "disabled"}
    log.info("%s: %s", ablation.key, " ".join(cmd[1:]))
    logfile = open(base / "multirun.log", "a" if extends else "w")  # noqa: SIM115  (closed in _wait)
    # a session of its own: an interrupted suite stops the whole multirun, workers included (_Launched.stop)
    proc = subprocess.Popen(cmd, cwd=base, env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True)
    return _Launched(ablation, base, proc, logfile, time.perf_counter(), float(timing.read_text()) if extends else 0.0)


def _wait(launched: _Launched, poll: float | None = None) -> float | None:
    """Wait for a multirun (``poll``: at most that many seconds, None if still running then); its runtime in
    seconds (``seconds.txt`` gets the folder's: this multirun's plus the runs it extends). Raises if it failed."""
    try:
        code = launched.proc.wait(timeout=poll)
    except subprocess.TimeoutExpired:
        return None
    seconds = time.perf_counter() - launched.started
    launched.logfile.close()
    a, logpath = launched.ablation, launched.base / "multirun.log"
    if code != 0:
        raise RuntimeError(f"the {a.key} multirun ({a.preset}) failed with exit code {code}; its log ({logpath}) "
                           f"ends with:\n{logpath.read_text()[-3000:]}")
    (launched.base / "seconds.txt").write_text(f"{launched.earlier + seconds:.1f}\n")
    return seconds


def _finish(launched: _Launched) -> float | None:
    """:func:`_wait` for a multirun; interrupted (Ctrl-C, SIGTERM to the suite) or failed, stop it and everything it
    started first. The runs it finished stay in their folders (each writes its metrics window by window)."""
    try:
        return _wait(launched)
    except BaseException:
        launched.stop()
        raise


def evaluate_ablation(ablation: Ablation, out: Path, smoke: bool = False) -> AblationResult:
    """Evaluate the claims of the runs under ``<out>/<preset>/runs``, draw the figures, write that ablation's report."""
    base = out / ablation.preset
    runs = base / "runs"
    seconds = float((base / "seconds.txt").read_text()) if (base / "seconds.txt").exists() else math.nan
    frame = load_metrics(runs)
    claims = load_claims(runs)
    if smoke:
        claims = _smoke_claims(claims)
    results = [evaluate_claim(frame, c) for c in claims]
    if ablation.module == "experiments.ope":  # no windows over time: the benchmark's own figure (RMSE vs log size)
        paths = {"ope_rmse": base / "ope_rmse.png"}
    else:
        figures = make_figures(frame, load_shifts(runs), claim_metrics=[c.metric for c in claims])
        curves = load_curves(runs)
        if not curves.empty:  # arms that trained before the run (PPO on simulated runs): their training curves
            figures["pretrain"] = curves_figure(curves)
        paths = save_figures(figures, base / "figures")
    title = f"{ablation.key} {ablation.title.lower()} (`experiment={ablation.preset}`)"
    report = base / "report.md"
    gates, warmups = load_gates(runs), load_warmups(runs)
    report.write_text(render_report(frame, results, paths, report, f"Report: {title}", str(runs), gates, warmups))
    section = render_report(frame, results, paths, out / "report.md", title, str(runs.relative_to(out)), gates, warmups)
    n_runs = int(frame.groupby(["arm", "seed"]).ngroups)
    n_seeds = int(frame["seed"].nunique()) if "seed" in frame else 0
    return AblationResult(ablation, runs, results, seconds, n_runs, report, section, n_seeds, arm_runtimes(runs))


def run_ablation(ablation: Ablation, out: Path, smoke: bool = False, jobs: int = 2, extra: Sequence[str] = (),
                 headroom_seeds: int | None = HEADROOM_SEEDS) -> AblationResult:
    """Run one ablation's multiruns (:func:`multiruns`) and evaluate its claims."""
    for part in multiruns(ablation, extra, headroom_seeds) if not smoke else [list(extra)]:
        _finish(_launch(ablation, out, smoke, jobs, part))
    return evaluate_ablation(ablation, out, smoke)


def _demote(markdown: str) -> str:
    """Headings one level down (a report becomes a section)."""
    return "\n".join("#" + line if line.startswith("#") else line for line in markdown.splitlines())


def render_suite(done: list[AblationResult], smoke: bool, total: float, command: str) -> str:
    """The combined Markdown report: every claim in one table, then one section per ablation."""
    lines = ["# Ablation suite: the paradigm's claims, measured", ""]
    keys = [r.ablation.key for r in done]
    whole = set(keys) == {a.key for a in ABLATIONS}
    suite = ("the SMOKE suite (2 seeds, 3 short windows: checks the machinery, not the claims)" if smoke
             else "the full suite" if whole else f"part of the suite ({', '.join(keys)})")
    seeds = ", ".join(f"{r.ablation.key} {max([r.seeds, *(c.n for c in r.results)])}" for r in done)
    lines.append(f"`{command}`: {suite}; "
                 f"{sum(r.runs for r in done)} runs in {total:.0f} s on {platform.machine()} with {os.cpu_count()} cores "
                 f"(Python {platform.python_version()}); seeds per ablation: {seeds}.")
    results = [c for r in done for c in r.results]
    tested = sum(c.verdict != "untestable" for c in results)
    lines += ["", "Each claim's effect is `a - b` of the metric averaged per seed over the claim's windows; the 95% "
              "t-interval and the p-value are across seeds (paired by seed: the arms of one seed share the world). "
              + VERDICT_RULE, "",
              f"In the tables below *Holm* and *BH* adjust over all {tested} testable claims of "
              f"{'the suite' if whole or smoke else 'these ablations'}; in each "
              "ablation's section, over that ablation's claims.", ""]
    keys = [f"{r.ablation.key} {r.ablation.title.lower()}" for r in done for _ in r.results]
    lines += [*claims_table(results, adjust(results), keys), "", *power_table(results)]
    lines += ["", "| ablation | preset | runs | runtime |", "|---|---|---|---|"]
    for r in done:
        runtime = "" if math.isnan(r.seconds) else f"{r.seconds:.0f} s"
        lines.append(f"| {r.ablation.key} {r.ablation.title.lower()} | `{r.ablation.preset}` | {r.runs} | {runtime} |")
    for r in done:
        lines += ["", f"## {r.ablation.key}: {r.ablation.title}", "", f"_{r.ablation.question}_", ""]
        runtime = "" if math.isnan(r.seconds) else f" in {r.seconds:.0f} s"
        lines.append(f"`python -m experiments.run -m experiment={r.ablation.preset}`: {r.runs} runs{runtime}; "
                     f"report alone: `python -m experiments.report {r.run_dir}`.")
        lines += ["", _demote(r.section.split("\n", 1)[1] if r.section.startswith("# ") else r.section).strip()]
    return "\n".join(lines).rstrip() + "\n"


def suite_summary(done: list[AblationResult], smoke: bool, total: float, command: str = "") -> dict:
    """``summary.json``: per ablation its runs and runtime, per claim every number of its result
    (:meth:`~experiments.report.ClaimResult.as_dict`) and its Holm and BH p-values and verdicts, adjusted over
    the whole suite (``<key>_preset``: over the ablation's own claims)."""
    results = [c for r in done for c in r.results]
    suite = dict(zip((id(c) for c in results), adjust(results)))
    ablations = {}
    for r in done:
        own = dict(zip((id(c) for c in r.results), adjust(r.results)))
        claims = {}
        for c in r.results:
            s, o = suite[id(c)], own[id(c)]
            claims[c.claim.name] = {**c.as_dict(), "p_holm": s.p_holm, "verdict_holm": s.verdict_holm, "p_bh": s.p_bh,
                                    "verdict_bh": s.verdict_bh, "p_holm_preset": o.p_holm,
                                    "verdict_holm_preset": o.verdict_holm, "p_bh_preset": o.p_bh,
                                    "verdict_bh_preset": o.verdict_bh}
        ablations[r.ablation.key] = {"preset": r.ablation.preset, "runs": r.runs, "seeds": r.seeds,
                                     "seconds": round(r.seconds, 1), "arms": r.arms, "claims": claims}
    return {"smoke": smoke, "command": command, "seconds": round(total, 1), "alpha": 0.05, "power": 0.8,
            "multiplicity": f"Holm and Benjamini-Hochberg over the suite's {sum(c.verdict != 'untestable' for c in results)} "
                            f"testable claims (p_holm, p_bh); *_preset: over each ablation's own claims",
            "ablations": ablations}


@dataclass(frozen=True)
class SeedPlan:
    """How many seeds an ablation needs, from a pilot's claims (:func:`plan_seeds`)."""

    key: str
    seeds: int  # what the suite runs: the most any of its claims needs, within [2, max_seeds]
    needs: dict[str, int]  # per testable claim: seeds for MDE80 <= min_effect at the suite's Holm level
    pilot_seeds: int
    pilot_seconds: float
    arms: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # the pilot's runs and seconds per arm
    references: tuple[str, ...] = ()  # headroom-only arms (:func:`reference_arms`): at most ``headroom_seeds`` seeds
    headroom_seeds: int | None = HEADROOM_SEEDS

    @property
    def needed(self) -> int:
        """The seeds every claim's MDE80 needs (at least 2), before the cap."""
        return max([2, *self.needs.values()])

    def arm_seeds(self, arm: str, seeds: int) -> int:
        """The seeds ``arm`` runs on when the ablation runs ``seeds``."""
        capped = arm in self.references and self.headroom_seeds is not None
        return min(seeds, self.headroom_seeds) if capped else seeds

    def seconds_at(self, seeds: int) -> float:
        """The pilot's runtime scaled to ``seeds``: by each arm's mean run at the seeds it runs on (reference arms
        capped) where the pilot has per-arm runtimes, else by ``seeds`` over the pilot's seeds."""
        timed = {arm: e for arm, e in self.arms.items() if e.get("runs") and e.get("seconds")}
        if not timed:
            return self.pilot_seconds * seeds / max(self.pilot_seeds, 1)
        runs = sum(e["seconds"] / e["runs"] * self.arm_seeds(arm, seeds) for arm, e in timed.items())
        return self.pilot_seconds * runs / sum(e["seconds"] for e in timed.values())

    @property
    def projected_seconds(self) -> float:
        """The runtime at :attr:`seeds`."""
        return self.seconds_at(self.seeds)

    def underpowered(self) -> list[str]:
        """The claims that stay underpowered at ``seeds``."""
        return [name for name, n in self.needs.items() if n > self.seeds]


def plan_seeds(pilots: Sequence[dict], max_seeds: int = 30, alpha: float = 0.05, power: float = 0.8,
               headroom_seeds: int | None = HEADROOM_SEEDS, runtimes: Sequence[dict] = ()) -> dict[str, SeedPlan]:
    """Seeds per ablation from pilot suite summaries (``summary.json``; a later one wins for an ablation in two).

    Per testable claim with a spread (``sd``, paired or not, at ``n`` seeds) and a ``min_effect``, the seeds whose
    MDE80 is at most ``min_effect`` at the level Holm needs for the suite's first rejection (``alpha`` over the
    number of testable claims: Bonferroni, an upper bound for every Holm step); an ablation runs the most any of its
    claims needs, at least 2 and at most ``max_seeds`` (the claims above stay underpowered, and say so). The runtime
    a plan projects from is the pilot's, per arm where its summary has ``arms``; ``runtimes`` (summaries of timing
    runs, e.g. a seed or two of every arm: their claims are not read; a pilot marked ``"timing": true`` counts as
    one) replace it for the ablations they timed per arm (a later one wins)."""
    from rewards.stats import n_for_mde

    merged = _evidence(pilots)  # a timing run among the pilots gives runtimes only
    clocks = [*(p for p in pilots if p.get("timing")), *runtimes]
    timed = {key: a for summary in clocks for key, a in summary["ablations"].items() if a.get("arms")}
    claims = {(k, name): c for k, a in merged.items() for name, c in a["claims"].items() if c.get("verdict") != "untestable"}
    level = alpha / max(len(claims), 1)
    plans = {}
    for key, a in merged.items():
        needs, seen = {}, 0
        for (k, name), c in claims.items():
            sd, me = c.get("sd"), c.get("min_effect")
            if k != key or sd is None or me is None or not (math.isfinite(sd) and me > 0):
                continue
            seen = max(seen, int(c.get("n") or 0))
            needs[name] = n_for_mde(sd, me, alpha=level, power=power, paired=bool(c.get("paired", True)),
                                    max_n=100_000)
        known = next((ab for ab in ABLATIONS if ab.key == key), None)
        clock = timed.get(key, a)
        plan = SeedPlan(key, 0, needs, seen, float(clock.get("seconds") or math.nan), dict(clock.get("arms") or {}),
                        tuple(reference_arms(known)) if known else (), headroom_seeds)
        plans[key] = dataclasses.replace(plan, seeds=min(plan.needed, max_seeds))
    return plans


def budget_seeds(plans: dict[str, SeedPlan], minutes: float, max_seeds: int = 30) -> dict[str, SeedPlan]:
    """The seeds per ablation that power the most claims within ``minutes`` of projected runtime (the pilots'
    runtimes scaled by seeds, as :attr:`SeedPlan.seconds_at`): per ablation the candidates are 0 seeds (not run)
    and each of its claims' needs (at least 2, at most ``max_seeds``), and the choice is exact (a knapsack over
    10-second steps); ties go to the shorter plan. An ablation without a pilot runtime gets 0 seeds (its cost is
    unknown)."""
    step = 10.0
    units = int(minutes * 60 // step)
    best: dict[int, tuple[int, float, dict[str, int]]] = {0: (0, 0.0, {})}  # units used -> (claims, seconds, seeds)
    for key, plan in plans.items():
        options = {0: (0, 0.0)}
        if not math.isnan(plan.pilot_seconds):
            for n in {min(max(need, 2), max_seeds) for need in plan.needs.values()}:
                powered = sum(need <= n for need in plan.needs.values())
                options[n] = (powered, plan.seconds_at(n))
        grown: dict[int, tuple[int, float, dict[str, int]]] = {}
        for used, (claims, seconds, chosen) in best.items():
            for n, (powered, cost) in options.items():
                u = used + math.ceil(cost / step)
                if u > units:
                    continue
                cand = (claims + powered, seconds + cost, {**chosen, key: n})
                if u not in grown or (cand[0], -cand[1]) > (grown[u][0], -grown[u][1]):
                    grown[u] = cand
        best = grown
    _, _, seeds = max(best.values(), key=lambda c: (c[0], -c[1]))
    return {key: dataclasses.replace(plan, seeds=seeds.get(key, 0)) for key, plan in plans.items()}


def render_plan(plans: dict[str, SeedPlan], max_seeds: int) -> list[str]:
    """The seed plan as a Markdown table."""
    lines = [f"| ablation | pilot seeds | seeds (cap {max_seeds}) | projected runtime | seeds each claim needs | "
             "underpowered at these seeds |", "|---|---|---|---|---|---|"]
    for p in plans.values():
        needs = ", ".join(f"{k} {v if v <= 100_000 else '> 100000'}" for k, v in p.needs.items())
        runtime = ("not run" if p.seeds == 0 else "" if math.isnan(p.projected_seconds)
                   else f"{p.projected_seconds / 60:.0f} min")
        lines.append(f"| {p.key} | {p.pilot_seeds} | {p.seeds} | {runtime} | {needs} | {', '.join(p.underpowered()) or '-'} |")
    claims = sum(len(p.needs) for p in plans.values())
    powered = claims - sum(len(p.underpowered()) for p in plans.values())
    total = sum(p.projected_seconds for p in plans.values() if p.seeds and not math.isnan(p.projected_seconds))
    every = sum(p.seconds_at(p.needed) for p in plans.values() if not math.isnan(p.pilot_seconds))
    capped = [p for p in plans.values() if p.references and p.headroom_seeds]
    if capped:
        arms = "; ".join(f"{p.key} {', '.join(p.references)}" for p in capped)
        lines += ["", f"Headroom reference arms on at most {capped[0].headroom_seeds} seeds: {arms} (runtimes "
                      f"projected per arm where the pilot has them)."]
    lines += ["", f"At these seeds: {powered} of {claims} claims powered (MDE80 <= min_effect at the suite's Holm level), "
                  f"{total / 60:.0f} min projected on this machine; every claim powered: {every / 3600:.1f} h."]
    return lines


def _directions() -> dict[str, str]:
    """Every declared claim's direction (the presets' ``claims:`` and C9's), for summaries written before
    ``summary.json`` kept it."""
    import yaml

    from experiments.ope import C9_CLAIMS

    out = {c["name"]: c.get("direction", "greater") for c in C9_CLAIMS}
    for path in sorted((Path(__file__).resolve().parent.parent / "conf" / "experiment").glob("*.yaml")):
        for c in (yaml.safe_load(path.read_text()) or {}).get("claims") or []:
            out[c["name"]] = c.get("direction", "greater")
    return out


def _evidence(summaries: Sequence[dict]) -> dict[str, dict]:
    """Per ablation key its entry in the last of ``summaries`` that has it, skipping timing runs (``"timing": true``:
    their claims are no evidence, only their runtimes count)."""
    merged: dict[str, dict] = {}
    for summary in summaries:
        if not summary.get("timing"):
            merged |= summary["ablations"]
    return merged


def suite_status(summaries: Sequence[dict], alpha: float = 0.05) -> list[str]:
    """Where the suite stands on issue 14's bar, from suite summaries (``summary.json``; a later one wins for an
    ablation in two): the testable claims, how many reach a verdict after Holm over all of them, and how many of those
    with MDE80 (as reported, at the claim's own 5% level) within their ``min_effect``."""
    merged = _evidence(summaries)
    directions, results = None, []
    for a in merged.values():
        for name, c in a["claims"].items():
            if "direction" not in c and directions is None:
                directions = _directions()
            direction = c.get("direction") or (directions or {}).get(name, "greater")
            claim = ClaimConfig(name, a=["a"], b=["b"], direction=direction, min_effect=float(c["min_effect"]))
            num = [math.nan if c.get(k) is None else float(c[k]) for k in ("effect", "p", "p_short", "mde80")]
            low, high = (math.nan if x is None else float(x) for x in c.get("ci", [None, None]))
            results.append(ClaimResult(claim, c["verdict"], num[0], low, high, n=int(c.get("n") or 0), p=num[1],
                                       p_short=num[2], mde80=num[3]))
    adjusted = adjust(results, alpha)
    tested = [(r, j) for r, j in zip(results, adjusted) if r.verdict != "untestable"]
    decided = [(r, j) for r, j in tested if j.verdict_holm in ("held", "contradicted")]
    sharp = [r.claim.name for r, _ in decided if r.mde80 <= r.claim.min_effect]
    held = sum(j.verdict_holm == "held" for _, j in decided)
    share = len(sharp) / len(tested) if tested else math.nan
    return [f"Now ({', '.join(merged)}; Holm over all {len(tested)} testable claims): {len(decided)} reach a verdict "
            f"({held} held, {len(decided) - held} contradicted), {len(sharp)} of them with MDE80 <= min_effect "
            f"({share:.0%} of the testable claims; issue 14 asks 80%): {', '.join(sharp) or 'none'}."]


def compare_suites(summaries: dict[str, dict]) -> list[str]:
    """The same suite run on several worlds (``label -> summary.json``, the first the reference), claim by claim as a
    Markdown table: each world's effect, 95% interval and verdict (per claim, not adjusted), then whether the verdict
    is **robust** (the same held or contradicted in every world), **flips** (held in one world, contradicted in
    another), **differs** (decisive in some worlds only) or **undecided** (decisive in none), and whether the effect's
    sign changed."""
    labels = list(summaries)
    names: dict[str, str] = {}  # claim -> ablation key, in the reference's order, then any claim only others have
    for summary in summaries.values():
        for key, ablation in summary.get("ablations", {}).items():
            for claim in ablation.get("claims", {}):
                names.setdefault(claim, key)
    lines = ["| claim | " + " | ".join(labels) + " | across worlds | effect's sign |",
             "|---|" + "---|" * (len(labels) + 2)]
    counts = {"robust": 0, "flips": 0, "differs": 0, "undecided": 0}
    same_sign = 0
    for claim, key in names.items():
        cells, verdicts, signs = [], [], []
        for label in labels:
            c = summaries[label].get("ablations", {}).get(key, {}).get("claims", {}).get(claim)
            if c is None:
                cells.append("not run")
                verdicts.append("not run")
                continue
            effect, (low, high) = c.get("effect"), c.get("ci") or (None, None)
            verdict = c["verdict"] + (" (no headroom)" if c.get("no_headroom") else "")
            verdicts.append(verdict)
            if effect is None or not math.isfinite(effect):
                cells.append(verdict)
                continue
            signs.append("+" if effect > 0 else "-" if effect < 0 else "0")
            ci = "" if low is None or high is None else f" [{low:+.3f}, {high:+.3f}]"
            cells.append(f"{effect:+.3f}{ci} {verdict}")
        decisive = {v for v in verdicts if v in ("held", "contradicted")}
        status = ("undecided" if not decisive else "flips" if len(decisive) == 2
                  else "robust" if len(set(verdicts)) == 1 else "differs")
        counts[status] += 1
        same_sign += len(set(signs)) <= 1
        sign = "same" if len(set(signs)) <= 1 else "changes (" + " / ".join(signs) + ")"
        lines.append(f"| {claim} | " + " | ".join(cells) + f" | {status} | {sign} |")
    lines += ["", f"Across {len(labels)} worlds ({', '.join(labels)}): {counts['robust']} robust, {counts['flips']} flip, "
                  f"{counts['differs']} differ, {counts['undecided']} undecided; the effect's sign is the same for "
                  f"{same_sign} of {len(names)} claims."]
    return lines


def run_suite(out: str | os.PathLike[str], smoke: bool = False, only: Sequence[str] | None = None, jobs: int = 2,
              extra: Sequence[str] = (), run: bool = True, command: str = "python -m experiments.ablations",
              seeds: dict[str, int] | None = None, headroom_seeds: int | None = HEADROOM_SEEDS
              ) -> tuple[Path, list[AblationResult]]:
    """Run the ablations (all, or the presets / keys in ``only``) and write ``<out>/report.md``; ``seeds``: per
    ablation key the number of seeds to run (``seed=range(n)``) instead of its preset's; ``headroom_seeds``: the
    most seeds a headroom-only reference arm runs on (:func:`multiruns`; None: all)."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    chosen = list(ABLATIONS)
    if only:
        known = {a.preset: a for a in ABLATIONS} | {a.key: a for a in ABLATIONS}
        unknown = [o for o in only if o not in known]
        if unknown:
            raise ValueError(f"`--only` must name ablations among {sorted(known)} (got {unknown})")
        chosen = [a for a in ABLATIONS if a.preset in only or a.key in only]
    if run and not smoke and any(a.module == "experiments.ope" for a in chosen):
        ope_seeds(extra)  # a seed override C9 cannot take fails here, before any ablation runs
    if seeds is not None:  # a budgeted plan (--minutes) leaves out the ablations it gives no seeds
        skipped = [a.key for a in chosen if seeds.get(a.key, 1) == 0]
        if skipped:
            log.info("not run within the budget: %s", ", ".join(skipped))
        chosen = [a for a in chosen if seeds.get(a.key, 1) > 0]
    use_agg()
    started = time.perf_counter()
    if run and smoke:  # the reduced runs are short: overlap the multiruns (one job each) to hide their start-up
        flight = [_launch(a, out, smoke, 1, extra) for a in chosen]
        try:
            running = list(flight)
            while running:
                running = [launched for launched in running if _wait(launched, poll=0.2) is None]
        except BaseException:  # a failure or an interruption: stop the multiruns this call started, workers too
            for launched in flight:
                launched.stop()
            raise
    elif run:  # one multirun at a time, each with `jobs` parallel jobs: the runtimes are comparable
        for a in chosen:
            n = (seeds or {}).get(a.key)
            for part in multiruns(a, [*extra, *([f"seed=range({n})"] if n else [])], headroom_seeds):
                _finish(_launch(a, out, smoke, jobs, part))
    done = []
    for ablation in chosen:
        result = evaluate_ablation(ablation, out, smoke)
        log.info("%s: %d runs in %.0f s; %s", ablation.key, result.runs, result.seconds,
                 ", ".join(f"{c.claim.name} {c.verdict}" for c in result.results))
        done.append(result)
    total = time.perf_counter() - started if run else sum(r.seconds for r in done if not math.isnan(r.seconds))
    path = out / "report.md"
    path.write_text(render_suite(done, smoke, total, command))
    (out / "summary.json").write_text(json.dumps(json_safe(suite_summary(done, smoke, total, command)), indent=1,
                                                 default=lambda x: None))
    return path, done


def _positive_int(text: str) -> int:
    """``text`` as an integer; 0 for anything else (which the caller's range check refuses with the text given)."""
    try:
        return int(text)
    except ValueError:
        return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the reduced suite (2 seeds, 3 short windows; ~4 min on 2 cores)")
    parser.add_argument("--out", default=None, help="where runs and the report go (default outputs/ablations/<time>, "
                                                    "outputs/ablations-smoke/<time> with --smoke)")
    parser.add_argument("--only", default=None, help="comma-separated presets or keys (e.g. C1,c5_reward)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="parallel jobs per multirun on the default launcher (joblib n_jobs; default 2); another "
                             "launcher given as hydra/launcher=slurm|ray_cluster|subprocesses sets its own")
    parser.add_argument("--report-only", action="store_true", help="re-evaluate the runs already under --out")
    parser.add_argument("--seeds-from", nargs="+", default=None, metavar="SUMMARY",
                        help="pilot suite summaries (summary.json): run each ablation with the seeds its claims need "
                             "(MDE80 <= min_effect at the suite's Holm level), printed as a plan first")
    parser.add_argument("--max-seeds", type=int, default=30, help="the most seeds --seeds-from may ask per ablation")
    parser.add_argument("--plan-only", action="store_true", help="with --seeds-from: print the plan and stop")
    parser.add_argument("--minutes", type=float, default=None,
                        help="with --seeds-from: the seeds per ablation that power the most claims within this many "
                             "minutes of projected runtime (ablations given none are not run)")
    parser.add_argument("--runtimes-from", nargs="+", default=(), metavar="SUMMARY",
                        help="with --seeds-from: summaries of timing runs whose per-arm runtimes the plan projects "
                             "from (their claims are not read)")
    parser.add_argument("--headroom-seeds", default=str(HEADROOM_SEEDS), metavar="N|all",
                        help="the most seeds (the first ones) a headroom-only reference arm runs on when the suite "
                             f"runs seed=range(...) beyond them (default {HEADROOM_SEEDS}; all: every seed)")
    parser.add_argument("--compare", nargs="+", default=None, metavar="LABEL=SUMMARY",
                        help="compare suites run on different worlds (their summary.json, the first the reference): "
                             "print the claims table across them and stop")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every multirun")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if argv is None:  # the command line: SIGTERM (a scheduler's stop) unwinds like Ctrl-C, stopping the multiruns
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.compare:
        bad = [c for c in args.compare if "=" not in c]
        if bad:
            parser.error(f"--compare takes LABEL=path/to/summary.json entries (got {bad})")
        pairs = [c.split("=", 1) for c in args.compare]
        missing = [p for _, p in pairs if not Path(p).is_file()]
        if missing:
            parser.error(f"--compare: no such summary.json: {missing}")
        print("\n".join(compare_suites({label: json.loads(Path(p).read_text()) for label, p in pairs})))
        return
    if args.max_seeds < 2:
        parser.error(f"--max-seeds must be >= 2 (got {args.max_seeds})")
    headroom_seeds = None if args.headroom_seeds == "all" else _positive_int(args.headroom_seeds)
    if headroom_seeds is not None and headroom_seeds < 2:
        parser.error(f"--headroom-seeds must be an integer >= 2 (a reference's gap needs a spread) or 'all' "
                     f"(got {args.headroom_seeds!r})")
    if args.minutes is not None and not (args.seeds_from and math.isfinite(args.minutes) and args.minutes > 0):
        parser.error(f"--minutes must be a positive number of minutes, with --seeds-from (the pilots whose runtimes "
                     f"it scales) (got --minutes {args.minutes}, --seeds-from {args.seeds_from})")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"extra arguments must be key=value overrides (got {bad}; --only takes one comma-separated list)")
    launcher = _launcher(args.overrides)
    if args.jobs is not None and launcher != JOBLIB_LAUNCHER:
        parser.error(f"--jobs sets the default launcher's n_jobs (hydra/launcher={JOBLIB_LAUNCHER}); "
                     f"hydra/launcher={launcher} has its own parallelism (e.g. "
                     f"hydra.launcher.array_parallelism for slurm) (got --jobs {args.jobs})")
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be >= 1 (got {args.jobs})")
    seeds = None
    if args.seeds_from:
        pilots = [json.loads(Path(p).read_text()) for p in args.seeds_from]
        plans = plan_seeds(pilots, args.max_seeds, headroom_seeds=headroom_seeds,
                           runtimes=[json.loads(Path(p).read_text()) for p in args.runtimes_from])
        if args.minutes is not None:
            plans = budget_seeds(plans, args.minutes, args.max_seeds)
        print("\n".join([*render_plan(plans, args.max_seeds), "", *suite_status(pilots)]))
        if args.plan_only:
            return
        seeds = {k: p.seeds for k, p in plans.items()}
    out = args.out or f"outputs/{'ablations-smoke' if args.smoke else 'ablations'}/{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    command = " ".join(["python -m experiments.ablations", *(["--smoke"] if args.smoke else []),
                        *([f"--only {args.only}"] if args.only else []), *args.overrides,
                        *(["--report-only"] if args.report_only else [])])
    path, done = run_suite(out, smoke=args.smoke, only=args.only.split(",") if args.only else None, jobs=args.jobs or 2,
                           extra=args.overrides, run=not args.report_only, command=command, seeds=seeds,
                           headroom_seeds=headroom_seeds)
    for r in done:
        for c in r.results:
            print(c.line())
    print(f"report: {path}")


if __name__ == "__main__":
    main()
