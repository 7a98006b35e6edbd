"""The report: claim verdicts (intervals: tests/rewards/test_stats.py), the Markdown and the CLI."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from experiments.config import ClaimConfig
from experiments.report import evaluate_claim, load_claims, main, write_report


def table(per_seed: dict[str, dict[int, float]], steps: int = 2, early: float = 0.0) -> pd.DataFrame:
    """Each (arm, seed) run has ``steps`` windows of the given value; window 0 is shifted by ``early``."""
    rows = []
    for arm, seeds in per_seed.items():
        for seed, value in seeds.items():
            for step in range(steps):
                rows.append({"arm": arm, "seed": seed, "step": step, "day": 0.3 * (step + 1),
                             "reward": value + (early if step == 0 else 0.0)})
    return pd.DataFrame(rows)


A = {0: 1.0, 1: 1.2, 2: 1.1, 3: 1.3}
B = {0: 0.5, 1: 0.6, 2: 0.4, 3: 0.7}  # paired differences 0.5, 0.6, 0.7, 0.6


def test_paired_claim_held_contradicted_and_inconclusive():
    frame = table({"optuna": A, "static": B})
    # mean 0.6, sd 0.081650, se 0.040825, t(0.975, 3) = 3.182446 -> [0.470077, 0.729923]
    held = evaluate_claim(frame, ClaimConfig("C1", metric="reward", a=["optuna"], b=["static"]))
    assert held.verdict == "held" and held.paired and held.n == 4 and held.seeds == [0, 1, 2, 3]
    assert (held.effect, held.low, held.high) == pytest.approx((0.6, 0.470077, 0.729923), abs=1e-6)
    assert (held.a_mean, held.b_mean) == pytest.approx((1.15, 0.55))
    assert "**C1: HELD**: reward of optuna > static" in held.line()
    assert "effect +0.6, 95% CI [+0.4701, +0.7299]" in held.line() and "paired by seed, n=4 seeds" in held.line()
    less = evaluate_claim(frame, ClaimConfig("C2", metric="reward", a=["optuna"], b=["static"], direction="less"))
    assert less.verdict == "contradicted"
    strict = evaluate_claim(frame, ClaimConfig("C3", metric="reward", a=["optuna"], b=["static"], min_effect=0.5))
    assert strict.verdict == "inconclusive"  # 0.470 < 0.5: the interval reaches below the claimed effect


def test_from_step_drops_early_windows_and_groups_average_their_arms():
    frame = table({"optuna": A, "static": B}, steps=3, early=-10.0)
    assert evaluate_claim(frame, ClaimConfig("C1", a=["optuna"], b=["static"])).effect == pytest.approx(0.6)
    assert evaluate_claim(frame, ClaimConfig("C1", a=["optuna"], b=["static"], from_step=1)).effect == pytest.approx(0.6)
    frame = table({"optuna": A, "random": {s: v - 0.2 for s, v in A.items()}, "static": B})
    both = evaluate_claim(frame, ClaimConfig("C1", a=["optuna", "random"], b=["static"]))
    assert both.effect == pytest.approx(0.5) and both.a_mean == pytest.approx(1.05)


def test_from_day_keeps_the_windows_ending_on_or_after_that_day():
    frame = table({"optuna": A, "static": B}, steps=3)  # windows end on days 0.3, 0.6, 0.9
    frame.loc[(frame["arm"] == "optuna") & (frame["step"] == 0), "reward"] = -10.0  # optuna's first window, before a shift
    everything = evaluate_claim(frame, ClaimConfig("C1", a=["optuna"], b=["static"]))
    assert everything.verdict == "contradicted"
    after = evaluate_claim(frame, ClaimConfig("C1", a=["optuna"], b=["static"], from_day=0.6))
    assert after.verdict == "held" and after.effect == pytest.approx(0.6)
    assert "over windows ending on or after day 0.6" in after.line()
    both = evaluate_claim(frame, ClaimConfig("C1", a=["optuna"], b=["static"], from_step=2, from_day=0.6))
    assert both.effect == pytest.approx(0.6) and "over windows >= 2 and windows ending on or after day 0.6" in both.line()


def test_unpaired_claim_uses_welch():
    frame = table({"optuna": {0: 1.0, 1: 2.0, 2: 3.0}, "static": {3: 4.0, 4: 5.0, 5: 6.0}})
    r = evaluate_claim(frame, ClaimConfig("C1", a=["optuna"], b=["static"], direction="less"))
    assert not r.paired and r.verdict == "held" and "Welch, unpaired" in r.line()
    assert (r.low, r.high) == pytest.approx((-5.266958, -0.733042), abs=1e-5)


def test_untestable_claims_say_why():
    frame = table({"optuna": A, "static": B})
    r = evaluate_claim(frame, ClaimConfig("C1", a=["ppo"], b=["static"]))
    assert r.verdict == "untestable" and "no runs of arm(s) ['ppo']" in r.line()
    r = evaluate_claim(frame, ClaimConfig("C1", metric="outer/long_term/return_rate", a=["optuna"], b=["static"]))
    assert r.verdict == "untestable" and "no column 'outer/long_term/return_rate'" in r.note
    r = evaluate_claim(table({"optuna": {0: 1.0}, "static": {0: 0.5}}), ClaimConfig("C1", a=["optuna"], b=["static"]))
    assert r.verdict == "untestable" and "needs at least 2 seeds per group (got 1 and 1)" in r.note


def test_write_report_reads_claims_from_the_runs_and_embeds_the_figures(tmp_path):
    claims = [{"name": "C1", "description": "Search beats the static config.", "metric": "reward",
               "a": ["optuna"], "b": ["static"], "direction": "greater", "min_effect": 0.0, "from_step": 0},
              {"name": "C2", "description": "", "metric": "reward", "a": ["ppo"], "b": ["static"],
               "direction": "greater", "min_effect": 0.0, "from_step": 0}]
    frame = table({"optuna": A, "static": B})
    frame["outer/engagement/clicks_per_request"] = 0.3
    frame["outer/risk/violations_per_request"] = 0.01
    frame["layered/rerank/inner"] = frame["layered/rerank/outer"] = frame["layered/rerank/total"] = frame["reward"]
    for arm in ("optuna", "static"):
        d = tmp_path / "multirun" / arm
        d.mkdir(parents=True)
        frame[frame["arm"] == arm].to_csv(d / "metrics.csv", index=False)
        (d / "config.yaml").write_text(yaml.safe_dump({"name": "toy", "world": {"shifts": []}, "claims": claims}))
    assert [c.name for c in load_claims(tmp_path / "multirun")] == ["C1", "C2"]

    out = tmp_path / "reports" / "report.md"
    main([str(tmp_path / "multirun"), "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# Report: toy")
    assert "- **C1: HELD**: reward of optuna > static" in text and "_Search beats the static config._" in text
    assert "- **C2: UNTESTABLE**" in text
    assert "| C1 | reward | optuna | static | +0.6 | [+0.4701, +0.7299] | 4 | paired | held |" in text
    assert "| optuna | 4 | 1.15 [" in text  # per-arm summary: mean and CI across seeds
    for name in ("reward", "decomposition", "pareto"):
        assert f"![{name}](figures/{name}.png)" in text and (tmp_path / "reports" / "figures" / f"{name}.png").exists()
    path, results = write_report(tmp_path / "multirun", figures=False)
    assert path == tmp_path / "multirun" / "report.md" and [r.verdict for r in results] == ["held", "untestable"]


def test_gated_changes_are_read_from_the_runs_stores_and_listed(tmp_path):
    import json

    from agents.infra.store import KnowledgeStore
    from experiments.report import load_gates, render_gates

    for i, (arm, accepted) in enumerate([("llm_designer", True), ("alternating", False)]):
        run = tmp_path / f"{i}-{arm}-s0"
        run.mkdir()
        pd.DataFrame({"step": [0], "arm": [arm], "seed": [0], "reward": [0.5]}).to_csv(run / "metrics.csv", index=False)
        (run / "summary.json").write_text(json.dumps({"arm": arm, "seed": 0}))
        with KnowledgeStore(run / "store.db") as store:
            exp = store.start_experiment("x", {}, 0)
            if arm == "llm_designer":
                doc = {"pipelines": [{"name": "baseline", "fusion_size": 300}]}
                store.add_design(exp, "llm_designer", doc, "add route fresh (quota 0.05): why", "constrained", True,
                                 None, 0.0524)
                store.add_design(exp, "llm_designer", {"pipelines": [{"name": "other"}]}, "drop route fresh: no",
                                 "constrained", True, None, 0.0524)  # the same effect, another design
            else:
                doc = {"mmr_lambda": 0.3}
            store.add_rollout(exp, 4, arm, doc, "accepted" if accepted else "rejected", effect=0.0524 if accepted else -0.01,
                              ci_low=0.0045 if accepted else -0.05, ci_high=0.1002 if accepted else 0.03, p_value=0.03,
                              n_incumbent=500, n_candidate=500)
    gates = load_gates(tmp_path)
    assert gates[["arm", "step", "what", "decision"]].values.tolist() == [
        ["llm_designer", 4, "add route fresh (quota 0.05)", "accepted"], ["alternating", 4, "mmr_lambda=0.3", "rejected"]]
    text = "\n".join(render_gates(gates))
    assert "| llm_designer | 1 | 1 |" in text and "| alternating | 1 | 0 |" in text
    assert "| llm_designer | 0 | 4 | add route fresh (quota 0.05) | +0.0524 | [+0.0045, +0.1002] |" in text
    assert "mmr_lambda=0.3" not in text  # only accepted changes are listed one by one
