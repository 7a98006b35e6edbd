"""The ablation suite end to end: the smoke suite runs every preset's multirun and writes one report."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from experiments.ablations import ABLATIONS, main
from experiments.report import load_claims

VERDICTS = ("held", "contradicted", "inconclusive")
ROOT = Path(__file__).resolve().parents[2]  # the repository


@pytest.mark.slow
def test_smoke_suite_reports_every_claim_with_a_verdict_and_the_figures(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(tmp_path / "mpl"), "WANDB_MODE": "disabled"}
    out = tmp_path / "suite"
    proc = subprocess.run([sys.executable, "-m", "experiments.ablations", "--smoke", "--out", str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=1200)  # a hang guard, not a timing: the
    # suite took 316 s alone and 482 s inside `make test` on this machine class (2026-12-02), > 600 s beside other runs
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "the SMOKE suite" in report

    summary = json.loads((out / "summary.json").read_text())
    assert summary["smoke"] and set(summary["ablations"]) == {"C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"}
    ope = next(a for a in ABLATIONS if a.module == "experiments.ope")  # C9: the OPE benchmark's estimators as arms
    claims = summary["ablations"][ope.key]["claims"]
    assert len(claims) == 5 and all(r["verdict"] in VERDICTS and r["n"] == 2 for r in claims.values())
    assert f"## {ope.key}: {ope.title}" in report and f"![ope_rmse]({ope.preset}/ope_rmse.png)" in report
    assert summary["ablations"][ope.key]["runs"] == 10  # 5 estimators x 2 seeds
    for ablation in ABLATIONS:
        if ablation.module != "experiments.run":
            continue
        key, preset = ablation.key, ablation.preset
        claims = summary["ablations"][key]["claims"]
        assert claims and all(name.startswith(f"{key}-") for name in claims)
        for name, result in claims.items():
            assert result["verdict"] in VERDICTS, (name, result)  # every arm ran: nothing untestable
            assert result["n"] == 2  # 2 seeds, paired
            assert result["min_effect"] > 0 and result["mde80"] >= 0 and 0 < result["power_at_min_effect"] <= 1
            assert result["verdict_holm"] in VERDICTS and result["verdict_bh"] in VERDICTS and 0 <= result["p"] <= 1
            # the adjusted p is a claim's smaller one (no gain / gain >= min_effect) adjusted: never below both raw ones
            floor = min(result["p"], result["p_short"])
            assert result["p_holm"] >= result["p_bh"] >= floor - 1e-12 and len(result["bootstrap_ci"]) == 2
            assert result["underpowered"] == (result["verdict"] == "inconclusive" and result["power_at_min_effect"] < 0.8)
            assert result["aa"]["kind"] == "replicate" and result["aa"]["pair"].split(" - ")[0].endswith("_r1")  # A/A arm
            assert result["aa"]["n"] == 2 and isinstance(result["aa"]["false_alarm"], bool)
            row = [ln for ln in report.splitlines() if ln.startswith(f"| {name} | {key} ")]
            assert len(row) == 1 and f"| {result['label']} | {result['verdict_holm']} (p " in row[0], row
            assert f"- **{name}: {result['verdict'].upper()}**" in report  # the claim line in its section
            assert f"**{name}: {result['verdict'].upper()}**" in proc.stdout  # printed too
        assert f"## {key}: {ablation.title}" in report
        assert "A/A false alarms: " in report and "A/A-arm intervals exclude 0" in report
        runs = out / preset / "runs"
        assert summary["ablations"][key]["runs"] == len([d for d in runs.iterdir() if d.is_dir()]) >= 4
        assert (out / preset / "report.md").exists() and summary["ablations"][key]["seconds"] > 0
        embedded = re.findall(rf"!\[(\w+)\]\({preset}/figures/(\w+)\.png\)", report)
        assert {"reward", "decomposition", "pareto", "segments"} <= {name for name, _ in embedded}
        if any(c.metric not in ("reward", "outer/engagement/clicks_per_request") for c in load_claims(runs)):
            assert ("claims", "claims") in embedded  # the claims' other metrics over time
        for name, file in embedded:
            assert name == file and mpimg.imread(out / preset / "figures" / f"{file}.png").shape[0] > 300, file
    # C3 ran the designer with the real offline model: its proposals and their A/B decisions are in the runs' stores
    from agents.infra.store import KnowledgeStore
    from experiments.plot import run_store

    for run in (out / "c3_structural" / "runs").iterdir():
        if run.is_dir() and "llm_designer" in run.name:
            url, exp_id = run_store(run)
            with KnowledgeStore(url) as store:
                assert store.designs(valid=True, exp_id=exp_id) and store.rollouts(exp_id)

    # the report alone, from the runs already there (two presets: twins, oracle and hindsight headroom): the same
    # verdicts and headroom figures
    main(["--smoke", "--out", str(out), "--report-only", "--only", "C2,C4"])
    again = json.loads((out / "summary.json").read_text())
    assert set(again["ablations"]) == {"C2", "C4"}
    assert {k: {n: (c["verdict"], c["headroom"]) for n, c in v["claims"].items()} for k, v in again["ablations"].items()} == \
        {k: {n: (c["verdict"], c["headroom"]) for n, c in summary["ablations"][k]["claims"].items()} for k in ("C2", "C4")}
    assert all(c["headroom"] is not None for c in again["ablations"]["C4"]["claims"].values())  # the hindsight arm ran


def test_only_rejects_an_unknown_ablation(tmp_path):
    with pytest.raises(ValueError, match=r"`--only` must name ablations among \[.*'C1'.*\] \(got \['C99'\]\)"):
        main(["--only", "C99", "--out", str(tmp_path)])


def test_suite_table_and_summary_adjust_over_the_whole_suite(tmp_path):
    from experiments.ablations import AblationResult, render_suite, suite_summary
    from experiments.config import ClaimConfig
    from experiments.report import ClaimResult

    def result(name, p, effect=0.1, power=0.9):
        claim = ClaimConfig(name, a=["x"], b=["y"], min_effect=0.05)
        low, high = (effect - 0.05, effect + 0.05) if p < 0.05 else (effect - 0.2, effect + 0.2)
        return ClaimResult(claim, "held" if p < 0.05 else "inconclusive", effect, low, high, n=5, paired=True, p=p,
                           sd=0.1, mde80=0.13, power=power, beyond_min="unclear")

    one = AblationResult(ABLATIONS[0], Path("r1"), [result("C1-a", 0.01), result("C1-b", 0.5, power=0.3)], 1.0, 10,
                         Path("r1/report.md"), "# C1\n\nsection one")
    two = AblationResult(ABLATIONS[1], Path("r2"), [result("C2-a", 0.02)], 2.0, 10, Path("r2/report.md"), "# C2\n\ntwo")
    text = render_suite([one, two], smoke=False, total=3.0, command="python -m experiments.ablations")
    assert "*Holm* and *BH* adjust over all 3 testable claims of these ablations" in text
    assert "`python -m experiments.ablations`: part of the suite (C1, C2); 20 runs" in text  # not "the full suite"
    assert "; seeds per ablation: C1 5, C2 5." in text  # (a report of merged runs says how many seeds each had)
    # Holm over (0.01, 0.5, 0.02): 0.03, 0.5, 0.04; BH: 0.03, 0.5, 0.03
    assert "| C1-a | C1 heterogeneity | reward | x | y | a > b | +0.1 |" in text
    assert "| held | held (p 0.03) | held (p 0.03) |" in text and "| held | held (p 0.04) | held (p 0.03) |" in text
    assert "| inconclusive (underpowered: power 0.30 at min_effect) | inconclusive (p 0.5) | inconclusive (p 0.5) |" in text
    summary = suite_summary([one, two], smoke=False, total=3.0)
    c1a, c2a = summary["ablations"]["C1"]["claims"]["C1-a"], summary["ablations"]["C2"]["claims"]["C2-a"]
    assert (c1a["p_holm"], c2a["p_holm"], c2a["p_bh"]) == pytest.approx((0.03, 0.04, 0.03))
    assert (c1a["p_holm_preset"], c2a["p_holm_preset"]) == pytest.approx((0.02, 0.02))  # within each ablation
    assert c1a["min_effect"] == 0.05 and c1a["power_at_min_effect"] == 0.9 and c1a["mde80"] == 0.13
    b = summary["ablations"]["C1"]["claims"]["C1-b"]
    assert b["underpowered"] and b["label"].startswith("inconclusive (underpowered")
    # a run whose claims are all untestable (e.g. only the headroom arms ran) still says how many seeds it ran
    untestable = ClaimResult(ClaimConfig("C1-c", a=["x"], b=["y"], min_effect=0.05), "untestable")
    three = AblationResult(ABLATIONS[0], Path("r3"), [untestable], 1.0, 20, Path("r3/report.md"), "# C1\n\nthree",
                           seeds=10)
    assert "; seeds per ablation: C1 10." in render_suite([three], smoke=False, total=1.0, command="x")
    assert suite_summary([three], smoke=False, total=1.0)["ablations"]["C1"]["seeds"] == 10


def test_the_seed_plan_asks_each_ablation_for_what_its_neediest_testable_claim_needs_at_the_holm_level():
    """``--seeds-from``: per testable claim the seeds whose MDE80 (at alpha over the suite's testable claims) is at
    most its min_effect, from the pilot's spread; an ablation runs the most of its claims' needs, capped; untestable
    claims and claims without a spread ask nothing; a later pilot replaces an earlier one's ablation."""
    from experiments.ablations import plan_seeds
    from rewards.stats import mde, n_for_mde

    def claim(sd, me, verdict="inconclusive", paired=True):
        return {"sd": sd, "min_effect": me, "verdict": verdict, "n": 5, "paired": paired}

    pilot = {"ablations": {
        "C1": {"seconds": 300.0, "claims": {"a": claim(0.03, 0.02), "b": claim(0.01, 0.02), "gone": claim(5.0, 0.01, "untestable")}},
        "C2": {"seconds": 100.0, "claims": {"c": claim(0.2, 0.02, paired=False), "d": claim(None, 0.02)}},
    }}
    earlier = {"ablations": {"C1": {"seconds": 1.0, "claims": {"x": claim(9.0, 0.01)}}}}
    plans = plan_seeds([earlier, pilot], max_seeds=40)
    # the level: 0.05 over the 4 testable claims (a, b, c, and d, which has no spread: it asks for no seeds but
    # is still tested); the first pilot's C1 is replaced whole by the second's
    need_a = n_for_mde(0.03, 0.02, alpha=0.05 / 4)
    assert plans["C1"].needs == {"a": need_a, "b": n_for_mde(0.01, 0.02, alpha=0.05 / 4)}
    assert plans["C1"].seeds == need_a and mde(0.03, need_a, alpha=0.05 / 4) <= 0.02 < mde(0.03, need_a - 1, alpha=0.05 / 4)
    assert plans["C1"].projected_seconds == pytest.approx(300.0 * need_a / 5)
    assert plans["C2"].seeds == 40 and plans["C2"].underpowered() == ["c"]  # capped: c stays underpowered
    assert plans["C2"].needs["c"] == n_for_mde(0.2, 0.02, alpha=0.05 / 4, paired=False, max_n=100_000)
    assert plan_seeds([pilot], max_seeds=3)["C1"].seeds == 3
    # the plan's last line: claims powered at the capped seeds, the runtime, and what powering every claim costs
    from experiments.ablations import render_plan

    need_c = plans["C2"].needs["c"]
    total = 300.0 * need_a / 5 + 100.0 * 40 / 5
    every = (300.0 * need_a / 5 + 100.0 * need_c / 5) / 3600
    assert render_plan(plans, 40)[-1] == (f"At these seeds: 2 of 3 claims powered (MDE80 <= min_effect at the suite's "
                                          f"Holm level), {total / 60:.0f} min projected on this machine; every claim "
                                          f"powered: {every:.1f} h.")


def test_a_time_budget_picks_the_seeds_that_power_the_most_claims():
    """``--minutes``: per ablation 0 seeds (not run) or one of its claims' needs (at least 2, capped); the most
    claims powered within the budget, the shorter plan on a tie; an ablation without a pilot runtime is not run."""
    from experiments.ablations import SeedPlan, budget_seeds, render_plan

    plans = {"A": SeedPlan("A", 0, {"a1": 5, "a2": 20, "a3": 1}, 10, 100.0),  # 10 s per seed
             "B": SeedPlan("B", 0, {"b1": 3}, 10, 600.0),  # 60 s per seed
             "C": SeedPlan("C", 0, {"c1": 2}, 10, math.nan)}
    # 300 s: A at 20 seeds (200 s, 3 claims) beats A at 5 + B at 3 (230 s, 3 claims) on time; A 20 + B 3 is 380 s
    assert {k: p.seeds for k, p in budget_seeds(plans, 5.0).items()} == {"A": 20, "B": 0, "C": 0}
    assert {k: p.seeds for k, p in budget_seeds(plans, 6.5).items()} == {"A": 20, "B": 3, "C": 0}
    assert {k: p.seeds for k, p in budget_seeds(plans, 1.0).items()} == {"A": 5, "B": 0, "C": 0}  # a3 asks 1: 2 run
    # capped at 10, A at 10 seeds powers what A at 5 does (a2 needs 20): the shorter wins
    assert {k: p.seeds for k, p in budget_seeds(plans, 6.5, max_seeds=10).items()} == {"A": 5, "B": 3, "C": 0}
    lines = render_plan(budget_seeds(plans, 5.0), 30)
    assert "| B | 10 | 0 | not run |" in "\n".join(lines)
    assert lines[-1].startswith("At these seeds: 3 of 5 claims powered") and "3 min projected" in lines[-1]


@pytest.mark.parametrize("argv, message", [
    (["--minutes", "60"], "--minutes must be a positive number of minutes, with --seeds-from"),
    (["--minutes", "0", "--seeds-from", "x.json"], "(got --minutes 0.0"),
])
def test_the_suite_cli_refuses_a_bad_time_budget(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path)])
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_c9_refuses_seeds_it_cannot_run_before_anything_runs(tmp_path):
    """The OPE benchmark rewrites its runs and takes a seed count: ``seed=range(a,b)`` (how the app's presets are
    extended) used to be ignored, and the benchmark ran its default 100 seeds over the runs it was meant to extend."""
    from experiments.ablations import ope_seeds

    assert ope_seeds(["seed=range(40)", "world=ml100k"]) == 40 and ope_seeds(["world=ml100k"]) is None
    for bad in ("seed=range(300,600)", "seed=0,1,2", "+seed=3"):
        with pytest.raises(ValueError, match=r"C9 \(the OPE benchmark\) takes its seeds as `seed=range\(n\)`"):
            ope_seeds([bad])
    with pytest.raises(ValueError, match=r"seed=range\(20,24\)"):
        main(["--only", "C2,C9", "--out", str(tmp_path), "seed=range(20,24)"])
    assert not any(tmp_path.rglob("*.log"))


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "4", "hydra/launcher=slurm"], "--jobs sets the default launcher's n_jobs (hydra/launcher=parallel); "
                                              "hydra/launcher=slurm has its own parallelism"),
    (["--jobs", "0"], "--jobs must be >= 1 (got 0)"),
])
def test_the_suite_cli_refuses_jobs_it_cannot_pass_on(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        main([*argv, "--only", "C1", "--out", str(tmp_path)])
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("launcher", sorted(p.stem for p in (ROOT / "conf" / "hydra" / "launcher").glob("*.yaml")))
def test_every_launcher_takes_the_suites_multirun_overrides(tmp_path, launcher):
    """``python -m experiments.ablations hydra/launcher=slurm`` (more cores: the way past a 2-core machine's hours):
    each multirun's overrides compose under every launcher. The suite passed the joblib launcher's ``n_jobs`` to all
    of them, and the other launchers, which have no such key, refused every multirun."""
    from hydra import compose, initialize_config_dir

    import experiments.run  # noqa: F401  (registers the config schema)
    from experiments.ablations import _command

    c1 = next(a for a in ABLATIONS if a.key == "C1")
    cmd = _command(c1, tmp_path, False, 3, [f"hydra/launcher={launcher}", "seed=1"])  # compose takes no sweep
    overrides = cmd[cmd.index("-m", 2) + 1:]  # after `python -m experiments.run -m`
    assert ("hydra.launcher.n_jobs=3" in overrides) == (launcher == "parallel")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.sweep.dir == str(tmp_path / "runs")
    if launcher == "parallel":
        assert cfg.hydra.launcher.n_jobs == 3
        mine = _command(c1, tmp_path, False, 3, ["hydra.launcher.n_jobs=8"])  # the user's own n_jobs, alone
        assert "hydra.launcher.n_jobs=8" in mine and "hydra.launcher.n_jobs=3" not in mine


def test_the_suite_cli_refuses_a_stray_positional_argument_before_running(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--only", "C2", "C4", "--out", str(tmp_path)])
    assert "must be key=value overrides (got ['C4']" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def _summary(**claims: tuple[float, float, float, str]) -> dict:
    """A suite summary with one ablation (C2) holding ``claims``: name -> (effect, low, high, verdict)."""
    return {"ablations": {"C2": {"claims": {name: {"effect": e, "ci": [lo, hi], "verdict": v, "no_headroom": False}
                                            for name, (e, lo, hi, v) in claims.items()}}}}


def test_comparing_worlds_says_which_verdicts_are_robust_flip_or_differ(tmp_path, capsys):
    from experiments.ablations import compare_suites

    default = _summary(same=(0.05, 0.01, 0.09, "held"), flip=(0.04, 0.01, 0.07, "held"),
                       weak=(-0.03, -0.05, -0.01, "contradicted"), null=(0.01, -0.01, 0.03, "inconclusive"))
    other = _summary(same=(0.02, 0.01, 0.03, "held"), flip=(-0.05, -0.08, -0.02, "contradicted"),
                     weak=(0.01, -0.02, 0.04, "inconclusive"), null=(-0.01, -0.03, 0.01, "inconclusive"))
    lines = compare_suites({"default": default, "topics": other})
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in lines if ln.startswith("| ") and "---" not in ln}
    assert rows["same"].endswith("| robust | same |")
    assert "+0.040 [+0.010, +0.070] held | -0.050 [-0.080, -0.020] contradicted | flips | changes (+ / -) |" in rows["flip"]
    assert rows["weak"].endswith("| differs | changes (- / +) |")
    assert rows["null"].endswith("| undecided | changes (+ / -) |")
    assert lines[-1] == ("Across 2 worlds (default, topics): 1 robust, 1 flip, 1 differ, 1 undecided; the effect's sign "
                         "is the same for 1 of 4 claims.")
    (tmp_path / "a.json").write_text(json.dumps(default))
    (tmp_path / "b.json").write_text(json.dumps(other))
    main(["--compare", f"default={tmp_path / 'a.json'}", f"topics={tmp_path / 'b.json'}"])
    assert "| flip | +0.040" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--compare", str(tmp_path / "a.json")])
    assert "LABEL=path/to/summary.json" in capsys.readouterr().err


def test_c9_takes_the_planners_seeds_and_ignores_world_overrides(tmp_path):
    from experiments.ablations import OPE_SEEDS, _command

    c9 = next(a for a in ABLATIONS if a.key == "C9")
    cmd = _command(c9, tmp_path, False, 2, ["world=ml100k", "seed=range(40)"])
    assert cmd[2:5] == ["experiments.ope", "--suite", "--out"] and cmd[-2:] == ["--seeds", "40"]
    assert "world=ml100k" not in cmd
    assert _command(c9, tmp_path, False, 2, [])[-2:] == ["--seeds", str(OPE_SEEDS)]
    assert _command(c9, tmp_path, True, 2, ["seed=range(40)"])[-3:] == ["--quick", "--seeds", "2"]
    c1 = next(a for a in ABLATIONS if a.key == "C1")
    assert _command(c1, tmp_path, False, 2, ["seed=range(40)"])[-1] == "seed=range(40)"


def test_seeds_added_to_a_pilot_go_beside_its_runs_and_add_to_its_runtime(tmp_path, monkeypatch):
    """A multirun into a folder with finished runs (a pilot) extends it: the log is appended and ``seconds.txt``
    holds the folder's total; a fresh folder, or the OPE benchmark (which rewrites its runs), starts again."""
    import experiments.ablations as ab

    monkeypatch.setattr(ab, "_command", lambda *args: [sys.executable, "-c", "print('extension')"])
    c3, c9 = (next(a for a in ABLATIONS if a.key == k) for k in ("C3", "C9"))
    for ablation in (c3, c9):
        base = tmp_path / ablation.preset
        (base / "runs" / "0-static-s0").mkdir(parents=True)
        (base / "runs" / "0-static-s0" / "summary.json").write_text("{}")
        (base / "seconds.txt").write_text("1000.0\n")
        (base / "multirun.log").write_text("pilot\n")
        took = ab._wait(ab._launch(ablation, tmp_path, False, 2, []))
        total = float((base / "seconds.txt").read_text())
        log_text = (base / "multirun.log").read_text()
        if ablation is c3:
            assert total == pytest.approx(1000.0 + took, abs=0.1) and log_text == "pilot\nextension\n"
        else:
            assert total == pytest.approx(took, abs=0.1) and log_text == "extension\n"
    fresh = tmp_path / "fresh"
    (fresh / c3.preset).mkdir(parents=True)
    (fresh / c3.preset / "seconds.txt").write_text("1000.0\n")  # a runtime without runs: nothing to extend
    took = ab._wait(ab._launch(c3, fresh, False, 2, []))
    assert float((fresh / c3.preset / "seconds.txt").read_text()) == pytest.approx(took, abs=0.1)


def test_the_suite_status_counts_holm_verdicts_over_every_summary_and_their_mde():
    """``--seeds-from ... --plan-only`` ends with issue 14's bar: the testable claims of the latest summary per
    ablation, Holm over all of them, and which verdicts have MDE80 within min_effect."""
    from experiments.ablations import suite_status

    def claim(verdict, effect, p, p_short, mde, direction="greater"):
        out = {"verdict": verdict, "effect": effect, "ci": [effect - 0.01, effect + 0.01], "p": p, "p_short": p_short,
               "mde80": mde, "min_effect": 0.02, "n": 10}
        return out | ({"direction": direction} if direction else {})

    old = {"ablations": {"C1": {"claims": {"C1-new": claim("held", 0.5, 0.5, 0.5, 0.01)}}}}  # replaced below
    new = {"ablations": {
        "C1": {"claims": {
            "C1-new": claim("held", 0.05, 1e-6, 0.9, 0.01, direction=None),  # an old summary: direction from the preset
            "C1-heavy": claim("contradicted", -0.05, 1e-6, 1e-6, 0.05),  # decided, but MDE80 above min_effect
        }},
        "C2": {"claims": {
            "C2-optuna": claim("contradicted", 0.0, 0.9, 1e-5, 0.015, direction="less"),
            "C2-floor": claim("inconclusive", 0.01, 0.3, 0.4, 0.03),
            "C2-rl": {"verdict": "untestable", "effect": None, "ci": [None, None], "p": None, "p_short": None,
                      "mde80": None, "min_effect": 0.02, "n": 0},
        }},
    }}
    line = suite_status([old, new])[0]
    assert line.startswith("Now (C1, C2; Holm over all 4 testable claims): 3 reach a verdict (1 held, 2 contradicted), "
                           "2 of them with MDE80 <= min_effect (50% of the testable claims; issue 14 asks 80%): "
                           "C1-new, C2-optuna."), line


def test_smoke_claims_drop_the_headroom_gate_but_keep_shares_of_it_defined():
    from experiments.ablations import _smoke_claims
    from experiments.config import ClaimConfig

    plain = ClaimConfig("x", a=["a"], b=["b"], min_effect=0.02, headroom=0.02, from_step=10)
    share = ClaimConfig("y", a=["a"], b=["b"], min_effect=0.25, headroom=0.02, scale="headroom")
    got = {c.name: c for c in _smoke_claims([plain, share])}
    assert (got["x"].headroom, got["x"].from_step) == (0.0, 0)
    assert got["y"].scale == "headroom" and 0 < got["y"].headroom < 1e-6  # a share needs a positive gap


def test_reference_arms_are_the_headroom_arms_no_claim_compares_or_divides_by(monkeypatch):
    """An arm named only in ``headroom_arms`` (either side) is a reference; one a claim compares, or one a claim
    judged as shares of the headroom needs on every seed, is not."""
    import experiments.ablations as ab

    c2, c4, c5 = (next(a for a in ABLATIONS if a.key == k) for k in ("C2", "C4", "C5"))
    assert ab.reference_arms(c4) == ["hindsight_composition"]
    assert ab.reference_arms(c2) == []  # C2-gap divides each seed by its oracle - static gap
    assert "oracle_safety" in ab.reference_arms(c5)  # the baseline side of a gap that runs the other way
    preset = {"hydra": {"sweeper": {"params": {"controller": "ref, x,y,z,share", "seed": "range(5)"}}},
              "claims": [{"name": "p", "a": ["x"], "b": ["y"], "min_effect": 0.02, "headroom": 0.02,
                          "headroom_arms": ["ref", "y"]},
                         {"name": "q", "a": ["z"], "b": ["y"], "min_effect": 0.02, "headroom_arms": ["z", "y"]},
                         {"name": "r", "a": ["x"], "b": ["y"], "min_effect": 0.25, "headroom": 0.02,
                          "headroom_arms": ["share", "y"], "scale": "headroom"}]}
    monkeypatch.setattr(ab, "_preset", lambda ablation: preset)
    assert ab.arm_sweep(c4) == ("controller", ["ref", "x", "y", "z", "share"])
    assert ab.reference_arms(c4) == ["ref"]


def test_reference_arms_run_on_the_first_headroom_seeds_in_a_multirun_of_their_own():
    from experiments.ablations import multiruns

    c4 = next(a for a in ABLATIONS if a.key == "C4")
    others = "controller=ppo_composition_pretrained,static_composition,individual,compositional,alternating,individual_r1"
    assert multiruns(c4, ["world.x=1", "seed=range(30)"]) == [
        ["world.x=1", others, "seed=range(30)"], ["world.x=1", "controller=hindsight_composition", "seed=range(0,10)"]]
    assert multiruns(c4, ["seed=range(4, 30)"], headroom_seeds=6)[1] == ["controller=hindsight_composition",
                                                                         "seed=range(4,6)"]
    assert multiruns(c4, ["seed=range(10,30)"]) == [[others, "seed=range(10,30)"]]  # added to a pilot: none
    for extra in (["seed=range(10)"], ["seed=0,1,2"], ["controller=individual", "seed=range(30)"], []):
        assert multiruns(c4, extra) == [extra]  # within the cap, a seed list, arms chosen by the caller, none
    assert multiruns(c4, ["seed=range(30)"], headroom_seeds=None) == [["seed=range(30)"]]
    c2 = next(a for a in ABLATIONS if a.key == "C2")
    assert multiruns(c2, ["seed=range(30)"]) == [["seed=range(30)"]]  # no reference arm


def test_an_ablation_runs_its_multiruns_into_one_folder_whose_runtime_adds_up(tmp_path, monkeypatch):
    import experiments.ablations as ab

    calls = []
    make_run = ("import pathlib, sys, time; time.sleep(0.2); runs = pathlib.Path('runs'); "
                "p = runs / str(len(list(runs.glob('*'))) if runs.exists() else 0); p.mkdir(parents=True); "
                "(p / 'summary.json').write_text('{}'); print(sys.argv[1])")

    def command(ablation, base, smoke, jobs, extra):
        calls.append(list(extra))
        return [sys.executable, "-c", make_run, extra[-1]]

    monkeypatch.setattr(ab, "_command", command)
    monkeypatch.setattr(ab, "evaluate_ablation", lambda ablation, out, smoke=False: ablation.key)
    c4 = next(a for a in ABLATIONS if a.key == "C4")
    assert ab.run_ablation(c4, tmp_path, extra=["seed=range(12)"], headroom_seeds=3) == "C4"
    assert [c[-1] for c in calls] == ["seed=range(12)", "seed=range(0,3)"]
    assert len(list((tmp_path / c4.preset / "runs").iterdir())) == 2
    # the second multirun extends the first's folder: its log appended, the runtimes summed
    assert (tmp_path / c4.preset / "multirun.log").read_text() == "seed=range(12)\nseed=range(0,3)\n"
    assert float((tmp_path / c4.preset / "seconds.txt").read_text()) >= 0.4


def test_the_plan_projects_each_arms_runs_at_its_own_seeds():
    """Per-arm runtimes: the pilot's wall time scaled by the run-seconds each arm needs at the seeds it runs on
    (reference arms capped); a timing summary replaces the pilot's clock, not its claims."""
    from experiments.ablations import SeedPlan, plan_seeds

    arms = {"x": {"runs": 10, "seconds": 100.0}, "ref": {"runs": 10, "seconds": 1000.0}}  # 10 s and 100 s a run
    plan = SeedPlan("C4", 30, {}, 10, 550.0, arms, ("ref",), 10)
    assert plan.seconds_at(30) == pytest.approx(550.0 * (10 * 30 + 100 * 10) / 1100)
    assert plan.seconds_at(5) == pytest.approx(550.0 * (10 * 5 + 100 * 5) / 1100)
    uncapped = SeedPlan("C4", 30, {}, 10, 550.0, arms, ("ref",), None)
    assert uncapped.seconds_at(30) == pytest.approx(550.0 * 3)
    assert SeedPlan("C4", 30, {}, 10, 550.0).seconds_at(30) == pytest.approx(1650.0)  # no arms: by seeds
    claim = {"sd": 0.03, "min_effect": 0.02, "verdict": "inconclusive", "n": 10, "paired": True}
    pilot = {"ablations": {"C4": {"seconds": 900.0, "claims": {"C4-comp": claim}}}}
    timing = {"ablations": {"C4": {"seconds": 100.0, "arms": {"hindsight_composition": {"runs": 1, "seconds": 80.0},
                                                              "individual": {"runs": 1, "seconds": 20.0}},
                                   "claims": {"C4-comp": {"verdict": "untestable", "sd": 9.0, "min_effect": 0.02}}}}}
    plain, timed = plan_seeds([pilot])["C4"], plan_seeds([pilot], runtimes=[timing])["C4"]
    assert timed.needs == plain.needs and plain.projected_seconds == pytest.approx(900.0 * plain.seeds / 10)
    assert timed.references == ("hindsight_composition",)
    assert timed.projected_seconds == pytest.approx(100.0 * (80.0 * min(timed.seeds, 10) + 20.0 * timed.seeds) / 100)


@pytest.mark.parametrize("value", ["1", "many", "-3"])
def test_the_suite_cli_refuses_a_bad_headroom_seed_count(tmp_path, capsys, value):
    with pytest.raises(SystemExit):
        main(["--headroom-seeds", value, "--out", str(tmp_path)])
    assert f"--headroom-seeds must be an integer >= 2 (a reference's gap needs a spread) or 'all' (got '{value}')" in \
        capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_timing_summary_among_the_pilots_gives_runtimes_not_claims():
    """A summary marked ``"timing": true`` (a seed or two of every arm, for the runtimes) passed with
    ``--seeds-from`` (e.g. by a glob) neither replaces the pilots' claims nor counts in the suite status."""
    from experiments.ablations import plan_seeds, suite_status

    claim = {"sd": 0.03, "min_effect": 0.02, "verdict": "held", "n": 10, "paired": True, "effect": 0.05,
             "ci": [0.03, 0.07], "p": 0.001, "p_short": 0.9, "mde80": 0.015, "direction": "greater"}
    pilot = {"ablations": {"C4": {"seconds": 900.0, "claims": {"C4-comp": claim}}}}
    timing = {"timing": True, "ablations": {"C4": {
        "seconds": 100.0, "arms": {"individual": {"runs": 2, "seconds": 40.0}},
        "claims": {"C4-comp": {**claim, "sd": 0.5, "verdict": "contradicted", "mde80": 0.9}}}}}
    plan, alone = plan_seeds([pilot, timing])["C4"], plan_seeds([pilot])["C4"]
    assert plan.needs == alone.needs and plan.arms == {"individual": {"runs": 2, "seconds": 40.0}}
    assert plan.projected_seconds == pytest.approx(100.0 * plan.seeds / 2)
    assert suite_status([pilot, timing]) == suite_status([pilot])


def test_the_kept_results_list_names_summaries_that_exist_and_the_status_reads_them():
    """``experiments/results/latest.txt`` (what README's status command reads): every path exists and is a suite
    summary, every ablation appears, and the status line counts testable claims from them."""
    from experiments.ablations import suite_status

    paths = (ROOT / "experiments" / "results" / "latest.txt").read_text().split()
    summaries = [json.loads((ROOT / p).read_text()) for p in paths]
    assert all("ablations" in s for s in summaries)
    covered = {key for s in summaries if not s.get("timing") for key in s["ablations"]}
    assert covered == {a.key for a in ABLATIONS}
    line = suite_status(summaries)[0]
    assert re.match(r"Now \(.*; Holm over all \d+ testable claims\): \d+ reach a verdict", line), line


def test_an_interrupted_suite_stops_the_multirun_and_the_workers_it_started(tmp_path, monkeypatch):
    """Ctrl-C (or a failure) while a multirun runs stops its whole process group: a worker it spawned (as joblib's
    are) does not outlive it, still writing into the run folders."""
    import time

    import experiments.ablations as ab

    spawn = ("import subprocess, sys, time; w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
             "open('worker.pid', 'w').write(str(w.pid)); time.sleep(120)")
    monkeypatch.setattr(ab, "_command", lambda *args: [sys.executable, "-c", spawn])
    real_wait = ab._wait

    def interrupted(launched, poll=None):
        pid_file = launched.base / "worker.pid"
        for _ in range(200):
            if pid_file.exists() and pid_file.read_text():
                break
            real_wait(launched, poll=0.05)
        raise KeyboardInterrupt

    monkeypatch.setattr(ab, "_wait", interrupted)
    c1 = next(a for a in ABLATIONS if a.key == "C1")
    with pytest.raises(KeyboardInterrupt):
        ab.run_ablation(c1, tmp_path)
    worker = int((tmp_path / c1.preset / "worker.pid").read_text())

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        stat = open(f"/proc/{pid}/stat").read() if os.path.exists(f"/proc/{pid}/stat") else ""
        return not stat or stat.split(")")[-1].split()[0] != "Z"  # a zombie awaiting its reaper is gone

    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker)


def test_every_ablation_argues_how_its_verdicts_could_have_come_out_the_other_way():
    """Issue 14: no claim's outcome fixed by construction, with a stated argument per ablation. ABLATIONS.md's section
    on it has a bullet for every ablation in :data:`ABLATIONS` (a new ablation without one fails here)."""
    text = (ROOT / "experiments" / "ABLATIONS.md").read_text()
    section = text.split("## Could each verdict have come out the other way?", 1)[1].split("\n## ", 1)[0]
    argued = re.findall(r"^- \*\*(C\d+)\*\* \(", section, flags=re.M)
    assert sorted(argued) == sorted(a.key for a in ABLATIONS), argued  # each once
