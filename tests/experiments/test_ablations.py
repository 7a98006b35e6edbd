"""The ablation suite end to end: the smoke suite runs every preset's multirun and writes one report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import matplotlib.image as mpimg
import pytest

from experiments.ablations import ABLATIONS, main
from experiments.report import load_claims

VERDICTS = ("held", "contradicted", "inconclusive")


@pytest.mark.slow
def test_smoke_suite_reports_every_claim_with_a_verdict_and_the_figures(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(tmp_path / "mpl"), "WANDB_MODE": "disabled"}
    out = tmp_path / "suite"
    proc = subprocess.run([sys.executable, "-m", "experiments.ablations", "--smoke", "--out", str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "the SMOKE suite" in report

    summary = json.loads((out / "summary.json").read_text())
    assert summary["smoke"] and set(summary["ablations"]) == {"C1", "C2", "C3", "C4", "C5"}
    for ablation in ABLATIONS:
        key, preset = ablation.key, ablation.preset
        claims = summary["ablations"][key]["claims"]
        assert claims and all(name.startswith(f"{key}-") for name in claims)
        for name, result in claims.items():
            assert result["verdict"] in VERDICTS, (name, result)  # every arm ran: nothing untestable
            assert result["n"] == 2  # 2 seeds, paired
            row = [ln for ln in report.splitlines() if ln.startswith(f"| {name} | {key} ")]
            assert len(row) == 1 and re.search(rf"\| \*\*{result['verdict']}\*\* \|$", row[0]), row
            assert f"- **{name}: {result['verdict'].upper()}**" in report  # the claim line in its section
            assert f"**{name}: {result['verdict'].upper()}**" in proc.stdout  # printed too
        assert f"## {key}: {ablation.title}" in report
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

    for run in (out / "c3_structural" / "runs").iterdir():
        if run.is_dir() and "llm_designer" in run.name:
            with KnowledgeStore(run / "store.db") as store:
                assert store.designs(valid=True) and store.rollouts()

    # the report alone, from the runs already there: the same verdicts
    main(["--smoke", "--out", str(out), "--report-only"])
    again = json.loads((out / "summary.json").read_text())
    assert {k: {n: c["verdict"] for n, c in v["claims"].items()} for k, v in again["ablations"].items()} == \
        {k: {n: c["verdict"] for n, c in v["claims"].items()} for k, v in summary["ablations"].items()}


def test_only_rejects_an_unknown_ablation(tmp_path):
    with pytest.raises(ValueError, match=r"`--only` must name ablations among \[.*'C1'.*\] \(got \['C9'\]\)"):
        main(["--only", "C9", "--out", str(tmp_path)])
