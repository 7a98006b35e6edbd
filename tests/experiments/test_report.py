"""The report: claim verdicts (intervals: tests/rewards/test_stats.py), the Markdown and the CLI."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import yaml

from envs.validation import ConfigError
from experiments.config import ClaimConfig
from experiments.report import evaluate_claim, load_claims, load_warmups, main, render_warmups, write_report


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
    held = evaluate_claim(frame, ClaimConfig("C1", min_effect=0.1, metric="reward", a=["optuna"], b=["static"]))
    assert held.verdict == "held" and held.paired and held.n == 4 and held.seeds == [0, 1, 2, 3]
    assert (held.effect, held.low, held.high) == pytest.approx((0.6, 0.470077, 0.729923), abs=1e-6)
    assert (held.a_mean, held.b_mean) == pytest.approx((1.15, 0.55))
    assert "**C1: HELD**: reward of optuna > static" in held.line()
    assert "effect +0.6, 95% CI [+0.4701, +0.7299]" in held.line() and "paired by seed, n=4 seeds" in held.line()
    less = evaluate_claim(frame, ClaimConfig("C2", min_effect=0.1, metric="reward", a=["optuna"], b=["static"], direction="less"))
    assert less.verdict == "contradicted"
    strict = evaluate_claim(frame, ClaimConfig("C3", metric="reward", a=["optuna"], b=["static"], min_effect=0.5))
    assert strict.verdict == "held" and strict.beyond_min == "unclear"  # significant; 0.470 < 0.5 < 0.730
    assert held.beyond_min == "yes" and less.beyond_min == "no"  # [0.47, 0.73] beyond 0.1; the claimed -0.6 short of it


def test_from_step_drops_early_windows_and_groups_average_their_arms():
    frame = table({"optuna": A, "static": B}, steps=3, early=-10.0)
    assert evaluate_claim(frame, ClaimConfig("C1", min_effect=0.1, a=["optuna"], b=["static"])).effect == pytest.approx(0.6)
    assert evaluate_claim(frame, ClaimConfig("C1", min_effect=0.1, a=["optuna"], b=["static"], from_step=1)).effect == pytest.approx(0.6)
    frame = table({"optuna": A, "random": {s: v - 0.2 for s, v in A.items()}, "static": B})
    both = evaluate_claim(frame, ClaimConfig("C1", min_effect=0.1, a=["optuna", "random"], b=["static"]))
    assert both.effect == pytest.approx(0.5) and both.a_mean == pytest.approx(1.05)


def test_from_day_keeps_the_windows_ending_on_or_after_that_day():
    frame = table({"optuna": A, "static": B}, steps=3)  # windows end on days 0.3, 0.6, 0.9
    frame.loc[(frame["arm"] == "optuna") & (frame["step"] == 0), "reward"] = -10.0  # optuna's first window, before a shift
    everything = evaluate_claim(frame, ClaimConfig("C1", min_effect=0.1, a=["optuna"], b=["static"]))
    assert everything.verdict == "contradicted"
    after = evaluate_claim(frame, ClaimConfig("C1", min_effect=0.1, a=["optuna"], b=["static"], from_day=0.6))
    assert after.verdict == "held" and after.effect == pytest.approx(0.6)
    assert "over windows ending on or after day 0.6" in after.line()
    both = evaluate_claim(frame, ClaimConfig("C1", min_effect=0.1, a=["optuna"], b=["static"], from_step=2, from_day=0.6))
    assert both.effect == pytest.approx(0.6) and "over windows >= 2 and windows ending on or after day 0.6" in both.line()


def test_unpaired_claim_uses_welch():
    frame = table({"optuna": {0: 1.0, 1: 2.0, 2: 3.0}, "static": {3: 4.0, 4: 5.0, 5: 6.0}})
    r = evaluate_claim(frame, ClaimConfig("C1", min_effect=0.1, a=["optuna"], b=["static"], direction="less"))
    assert not r.paired and r.verdict == "held" and "Welch, unpaired" in r.line()
    assert (r.low, r.high) == pytest.approx((-5.266958, -0.733042), abs=1e-5)


def test_a_claim_pairs_on_the_seeds_both_groups_ran():
    """An arm extended by more seeds (static at 5, optuna at 3) is paired on the 3 common seeds; the interval is the
    paired one of those seeds' differences, not Welch's over all 8 runs (which the extra seeds used to force)."""
    frame = table({"optuna": {0: 1.0, 1: 2.0, 2: 3.5}, "static": {0: 0.5, 1: 1.4, 2: 3.1, 3: 9.0, 4: -9.0}})
    r = evaluate_claim(frame, ClaimConfig("C1", min_effect=0.1, a=["optuna"], b=["static"]))
    assert r.paired and r.seeds == [0, 1, 2] and r.n == 3 and "paired by seed" in r.line()
    assert r.effect == pytest.approx((0.5 + 0.6 + 0.4) / 3)  # seeds 3 and 4 (static only) left out


def test_untestable_claims_say_why():
    frame = table({"optuna": A, "static": B})
    r = evaluate_claim(frame, ClaimConfig("C1", min_effect=0.1, a=["ppo"], b=["static"]))
    assert r.verdict == "untestable" and "no runs of arm(s) ['ppo']" in r.line()
    r = evaluate_claim(frame, ClaimConfig("C1", min_effect=0.1, metric="outer/long_term/return_rate", a=["optuna"], b=["static"]))
    assert r.verdict == "untestable" and "no column 'outer/long_term/return_rate'" in r.note
    r = evaluate_claim(table({"optuna": {0: 1.0}, "static": {0: 0.5}}), ClaimConfig("C1", min_effect=0.1, a=["optuna"], b=["static"]))
    assert r.verdict == "untestable" and "needs at least 2 seeds per group (got 1 and 1)" in r.note


def test_write_report_reads_claims_from_the_runs_and_embeds_the_figures(tmp_path):
    claims = [{"name": "C1", "description": "Search beats the static config.", "metric": "reward",
               "a": ["optuna"], "b": ["static"], "direction": "greater", "min_effect": 0.1, "from_step": 0},
              {"name": "C2", "description": "", "metric": "reward", "a": ["ppo"], "b": ["static"],
               "direction": "greater", "min_effect": 0.1, "from_step": 0}]
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
    # an arm added later to the folder, its runs with the preset's claims as they are now: the newest declaration
    later = tmp_path / "multirun" / "oracle"
    later.mkdir()
    frame[frame["arm"] == "optuna"].assign(arm="oracle").to_csv(later / "metrics.csv", index=False)
    (later / "config.yaml").write_text(yaml.safe_dump({"name": "toy", "claims": [{**claims[0], "headroom": 0.05}]}))
    os.utime(later / "config.yaml", ns=(2**62, 2**62))
    assert [(c.name, c.headroom) for c in load_claims(tmp_path / "multirun")] == [("C1", 0.05)]
    for f in later.iterdir():
        f.unlink()
    later.rmdir()

    out = tmp_path / "reports" / "report.md"
    main([str(tmp_path / "multirun"), "--out", str(out)])
    text = out.read_text()
    assert text.startswith("# Report: toy")
    assert "- **C1: HELD**: reward of optuna > static" in text and "_Search beats the static config._" in text
    assert "- **C2: UNTESTABLE**" in text
    assert ("| C1 | reward | optuna | static | a > b | +0.6 | [+0.4701, +0.7299] | 0.00068 | 1 | 4 | paired |  | held "
            "| held (p 0.00068) | held (p 0.00068) |") in text  # Holm and BH over the one testable claim
    assert "| C1 | 0.1 | yes | 0.0816 | 0.17 | 0.26 | [+0.525, +0.675] | placebo: b: odd - even windows | +0 | [+0, +0] | 1 | 0.129 | 0.306 |" in text
    assert "It **held** when the whole 95% interval of `a - b` lies on the claimed side of 0" in text
    assert "is **contradicted** when the interval lies wholly short of `min_effect`" in text
    assert "| optuna | 4 | 1.15 [" in text  # per-arm summary: mean and CI across seeds
    for name in ("reward", "decomposition", "pareto"):
        assert f"![{name}](figures/{name}.png)" in text and (tmp_path / "reports" / "figures" / f"{name}.png").exists()
    path, results = write_report(tmp_path / "multirun", figures=False)
    assert path == tmp_path / "multirun" / "report.md" and [r.verdict for r in results] == ["held", "untestable"]


def test_gated_changes_are_read_from_the_runs_stores_and_listed(tmp_path):
    import json

    from agents.infra.store import KnowledgeStore
    from experiments.report import load_gates, render_gates

    shared = f"sqlite:///{tmp_path / 'shared.db'}"  # one store for both runs, and an older run's own store.db
    with KnowledgeStore(shared) as store:  # a third run's experiment in the shared store: not one of these runs
        other = store.start_experiment("other", {}, 0)
        store.add_rollout(other, 4, "elsewhere", {"mmr_lambda": 0.9}, "accepted", effect=0.2, ci_low=0.1, ci_high=0.3,
                          p_value=0.01, n_incumbent=500, n_candidate=500)
    for i, (arm, accepted) in enumerate([("llm_designer", True), ("alternating", False)]):
        run = tmp_path / "runs" / f"{i}-{arm}-s0"
        run.mkdir(parents=True)
        pd.DataFrame({"step": [0], "arm": [arm], "seed": [0], "reward": [0.5]}).to_csv(run / "metrics.csv", index=False)
        url = shared if arm == "llm_designer" else str(run / "store.db")
        with KnowledgeStore(url) as store:
            exp = store.start_experiment("x", {}, 0, run_dir=str(run))
            summary = {"arm": arm, "seed": 0} | ({"store": url, "experiment_id": exp} if url == shared else {})
            (run / "summary.json").write_text(json.dumps(summary))
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
    gates = load_gates(tmp_path / "runs")
    assert gates[["arm", "step", "what", "decision"]].values.tolist() == [
        ["llm_designer", 4, "add route fresh (quota 0.05)", "accepted"], ["alternating", 4, "mmr_lambda=0.3", "rejected"]]
    text = "\n".join(render_gates(gates))
    assert "| llm_designer | 1 | 1 |" in text and "| alternating | 1 | 0 |" in text
    assert "| llm_designer | 0 | 4 | add route fresh (quota 0.05) | +0.0524 | [+0.0045, +0.1002] |" in text
    assert "mmr_lambda=0.3" not in text  # only accepted changes are listed one by one


def test_min_effect_is_required_and_positive():
    import experiments.arms  # noqa: F401  (registers the arms load_config checks)
    from envs.validation import ConfigError
    from experiments.config import load_config

    with pytest.raises(ConfigError, match=r"`claims\[C1\].min_effect` is required: the smallest effect a - b worth "
                                          r"detecting, in the metric's units .*\(got none\)"):
        ClaimConfig("C1", a=["optuna"], b=["static"])
    with pytest.raises(ConfigError, match=r"`claims\[C1\].min_effect` must be in \(0.0, inf\) \(got 0.0\)"):
        ClaimConfig("C1", a=["optuna"], b=["static"], min_effect=0.0)
    claim = {"name": "X1", "metric": "reward", "a": ["optuna"], "b": ["static"]}  # as a preset's yaml without it
    with pytest.raises(ConfigError, match=r"`claims\[X1\].min_effect` is required"):
        load_config({"claims": [claim]})


def test_power_mde_and_underpowered_inconclusive_claims():
    # paired differences 0.5, 0.6, 0.7, 0.6: sd 0.081650, se 0.040825, df 3;
    # MDE80 = (t_{0.975,3} 3.182446 + t_{0.8,3} 0.978472) * se = 0.169869
    frame = table({"optuna": A, "static": B})
    r = evaluate_claim(frame, ClaimConfig("C1", a=["optuna"], b=["static"], min_effect=0.1))
    assert r.sd == pytest.approx(0.081650, abs=1e-6) and r.mde80 == pytest.approx(0.169869, abs=1e-5)
    assert r.p == pytest.approx(0.000683, abs=2e-6) and 0.2 < r.power < 0.3 and not r.underpowered
    at_mde = evaluate_claim(frame, ClaimConfig("C1", a=["optuna"], b=["static"], min_effect=r.mde80))
    assert at_mde.power == pytest.approx(0.8, abs=0.01)
    # a noisy null: differences +-0.3 around 0.05 -> inconclusive, and 4 seeds cannot detect 0.1
    noisy = table({"optuna": {0: 1.35, 1: 0.45, 2: 1.3, 3: 0.5}, "static": {s: 1.0 for s in range(4)}})
    r = evaluate_claim(noisy, ClaimConfig("N1", a=["optuna"], b=["static"], min_effect=0.1))
    assert r.verdict == "inconclusive" and r.underpowered and r.power < 0.2
    assert r.label == f"inconclusive (underpowered: power {r.power:.2f} at min_effect)"
    assert r.line().startswith(f"**N1: INCONCLUSIVE** (underpowered: power {r.power:.2f} at min_effect): reward of")
    assert r.beyond_min == "unclear" and r.as_dict()["underpowered"] is True
    # the same spread around +0.6: 95% CI [-0.182, +1.382], MDE80 (3.182446 + 0.978472) * 0.245798 = 1.0227
    shifted = noisy.assign(reward=noisy["reward"] + np.where(noisy["arm"] == "optuna", 0.7, 0.0))
    enough = evaluate_claim(shifted, ClaimConfig("N2", a=["optuna"], b=["static"], min_effect=1.1))
    assert enough.mde80 == pytest.approx(1.0227, abs=1e-3) and enough.power > 0.8
    assert enough.verdict == "inconclusive" and not enough.underpowered and enough.label == "inconclusive"
    # a claimed gain of 5 lies beyond the whole interval: ruled out (contradicted, short of min_effect), not reversed
    far = evaluate_claim(shifted, ClaimConfig("N3", a=["optuna"], b=["static"], min_effect=5.0))
    assert far.verdict == "contradicted" and not far.reversed and far.label == "contradicted (short of min_effect)"
    assert far.p_short < 0.05 < far.p and far.beyond_min == "no"
    assert far.line().startswith("**N3: CONTRADICTED** (short of min_effect): reward of")


def test_bootstrap_interval_for_few_seeds_only():
    frame = table({"optuna": A, "static": B})
    r = evaluate_claim(frame, ClaimConfig("C1", a=["optuna"], b=["static"], min_effect=0.1))
    assert r.boot_low >= 0.5 - 1e-12 and r.boot_high <= 0.7 + 1e-12 and r.boot_low < 0.6 < r.boot_high
    many = table({"optuna": {s: 1.0 + 0.01 * (s % 3) for s in range(12)}, "static": {s: 0.5 for s in range(12)}})
    r = evaluate_claim(many, ClaimConfig("C1", a=["optuna"], b=["static"], min_effect=0.1))
    assert r.n == 12 and np.isnan(r.boot_low) and "bootstrap" not in r.line()


def test_adjust_holm_and_bh_over_a_family_of_claims():
    from experiments.report import ClaimResult, adjust

    def result(name, p, p_short, effect=1.0, verdict="held", direction="greater"):
        return ClaimResult(ClaimConfig(name, a=["x"], b=["y"], min_effect=0.1, direction=direction), verdict,
                           effect=effect, p=p, p_short=p_short)

    # held-side p (p when the effect is on the claimed side, else 1) and p_short per claim:
    # A (0.01, 1), B (0.04, 0.9), C reversed (1, 0.03), D claimed "less" but +1 (1, 0.005)
    rs = [result("A", 0.01, 1.0), result("B", 0.04, 0.9), result("C", 0.03, 0.03, effect=-1.0, verdict="contradicted"),
          result("D", 0.005, 0.005, direction="less", verdict="contradicted"),
          result("E", float("nan"), float("nan"), verdict="untestable")]
    adj = adjust(rs)
    # Holm-Shaffer over the 8 hypotheses, sorted 0.005 (D short), 0.01 (A held), 0.03 (C short), 0.04 (B held), ...:
    # each rejection leaves its claim's other hypothesis in play, so all 4 claims can still hold a true one and the
    # multiplier stays 4: 0.02, 0.04, 0.12, 0.16 (plain Holm over the claims' smaller p would give 0.02, 0.03, 0.06, 0.06)
    assert [a.p_holm for a in adj[:4]] == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert [a.verdict_holm for a in adj] == ["held", "inconclusive", "inconclusive", "contradicted", "untestable"]
    # BH over the claims' smaller p (0.01, 0.04, 0.03, 0.005): 0.02, 0.04, 0.04, 0.02
    assert [a.p_bh for a in adj[:4]] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert [a.verdict_bh for a in adj] == ["held", "held", "contradicted", "contradicted", "untestable"]
    # one claim alone: its two hypotheses cannot both be true, so nothing is multiplied (Holm's p is the raw one)
    assert adjust([result("A", 0.01, 1.0)])[0].p_holm == pytest.approx(0.01)


def test_noise_floor_compares_the_baseline_with_itself():
    from experiments.report import noise_floor

    rows = []
    for seed, level in enumerate([0.5, 0.6, 0.4, 0.7]):
        for step in range(6):  # odd windows 0.1 above even ones: a window-level alternation the A/A must show
            rows += [{"arm": "static", "seed": seed, "step": step, "day": step, "reward": level + 0.1 * (step % 2)},
                     {"arm": "optuna", "seed": seed, "step": step, "day": step, "reward": level + 0.2}]
    frame = pd.DataFrame(rows)
    claim = ClaimConfig("C1", a=["optuna"], b=["static"], min_effect=0.1)
    floor = noise_floor(frame, claim)
    assert floor.n == 4 and floor.effect == pytest.approx(0.1) and floor.p < 1e-6
    # the baseline's per-seed means 0.55, 0.65, 0.45, 0.75: sd 0.129099; unpaired MDE80 of 4 vs 4 seeds
    # (t_{0.975,6} 2.446912 + t_{0.8,6} 0.905744) * 0.129099 * sqrt(2 / 4) = 0.306050
    assert floor.seed_sd == pytest.approx(0.129099, abs=1e-6) and floor.mde80 == pytest.approx(0.306050, abs=1e-5)
    frame.loc[frame["arm"] == "static", "reward"] = frame["seed"].map({0: 0.5, 1: 0.6, 2: 0.4, 3: 0.7})
    flat = evaluate_claim(frame, claim).aa
    assert (flat.effect, flat.low, flat.high, flat.p) == (0.0, 0.0, 0.0, 1.0)
    assert evaluate_claim(frame, ClaimConfig("C1", a=["optuna"], b=["static"], min_effect=0.1, stage="exploit")).aa.n == 0


def test_noise_floor_uses_the_a_a_arm_when_one_ran():
    from experiments.report import false_alarm_line, noise_floor, replicates

    rows = []
    drift = {0: 0.01, 1: -0.02, 2: 0.015, 3: 0.0}  # the replicate's per-seed difference from static: mean 0.00125
    for seed, level in enumerate([0.5, 0.6, 0.4, 0.7]):
        for step in range(4):
            rows += [{"arm": "static", "replicate": 0, "seed": seed, "step": step, "day": step, "reward": level},
                     {"arm": "static_r1", "replicate": 1, "seed": seed, "step": step, "day": step,
                      "reward": level + drift[seed]},
                     {"arm": "optuna", "replicate": 0, "seed": seed, "step": step, "day": step, "reward": level + 0.2},
                     {"arm": "ppo", "replicate": 0, "seed": seed, "step": step, "day": step, "reward": level + 0.1}]
    frame = pd.DataFrame(rows)
    assert replicates(frame) == {"static": ["static_r1"]}
    floor = noise_floor(frame, ClaimConfig("C1", a=["optuna"], b=["static"], min_effect=0.1))
    diffs = np.array(list(drift.values()))
    assert floor.kind == "replicate" and floor.pair == "static_r1 - static" and floor.n == 4
    assert floor.effect == pytest.approx(diffs.mean()) and floor.low < 0 < floor.high and not floor.false_alarm
    # a claim whose groups have no replicate is checked against the preset's A/A arm, on its own metric and windows
    other = noise_floor(frame, ClaimConfig("C2", a=["optuna"], b=["ppo"], min_effect=0.1, from_step=2))
    assert other.kind == "replicate" and other.pair == "static_r1 - static"
    # a replicate that differs (a bug, or a claim's interval too narrow) is a false alarm, counted in the report
    frame.loc[frame["arm"] == "static_r1", "reward"] += 0.05
    alarm = evaluate_claim(frame, ClaimConfig("C1", a=["optuna"], b=["static"], min_effect=0.1))
    assert alarm.aa.false_alarm and alarm.aa.effect == pytest.approx(diffs.mean() + 0.05)
    assert "1 of 1 A/A-arm intervals exclude 0" in false_alarm_line([alarm])
    # without the replicate's rows: the placebo (odd minus even windows of b)
    placebo = noise_floor(frame[frame["arm"] != "static_r1"], ClaimConfig("C1", a=["optuna"], b=["static"], min_effect=0.1))
    assert placebo.kind == "placebo" and placebo.effect == 0.0


def test_a_claim_without_headroom_is_untestable_with_the_measured_gap():
    rows = []
    for seed, level in enumerate([0.5, 0.6, 0.4, 0.7]):
        for step in range(3):
            for arm, lift in (("static", 0.0), ("optuna", 0.003 * (seed % 2)), ("oracle", 0.01)):
                rows.append({"arm": arm, "seed": seed, "step": step, "day": step, "reward": level + lift})
    frame = pd.DataFrame(rows)
    claim = ClaimConfig("C1", a=["optuna"], b=["static"], min_effect=0.02, headroom=0.02)
    r = evaluate_claim(frame, claim)
    assert r.verdict == "untestable" and r.no_headroom and r.headroom == pytest.approx(0.01)
    assert r.label == "untestable (no headroom: +0.01 < 0.02)" and "oracle - static = +0.01" in r.note
    assert r.as_dict()["no_headroom"] and r.as_dict()["headroom_min"] == 0.02
    # enough headroom: the claim is tested as usual, its headroom reported beside it
    frame.loc[frame["arm"] == "oracle", "reward"] += 0.05
    tested = evaluate_claim(frame, claim)
    assert tested.verdict != "untestable" and tested.headroom == pytest.approx(0.06) and not tested.no_headroom
    # no oracle ran: the headroom is not measured, the claim is tested (its headroom column is empty)
    free = evaluate_claim(frame[frame["arm"] != "oracle"], claim)
    assert free.verdict != "untestable" and np.isnan(free.headroom)
    # without static's runs, the oracle's own per-window gap (on identical traffic) is the headroom
    frame["oracle/gap"] = np.where(frame["arm"] == "oracle", 0.005, np.nan)
    assert evaluate_claim(frame, claim).headroom == pytest.approx(0.06)  # both arms ran: their difference
    only = frame[frame["arm"] != "static"].assign(arm=lambda f: f["arm"].replace({"optuna": "a"}))
    only = pd.concat([only, only[only["arm"] == "a"].assign(arm="b")])
    gap = evaluate_claim(only, ClaimConfig("C1", a=["a"], b=["b"], min_effect=0.02, headroom=0.02))
    assert gap.no_headroom and gap.headroom == pytest.approx(0.005)
    # headroom first: only the reference arms ran, and their gap alone rules the claim out (not "arm missing")
    refs = frame[frame["arm"].isin(["oracle", "static"])].copy()
    refs.loc[refs["arm"] == "oracle", "reward"] -= 0.05
    first = evaluate_claim(refs, claim)
    assert first.no_headroom and first.headroom == pytest.approx(0.01) and "no runs of arm" not in first.note
    refs.loc[refs["arm"] == "oracle", "reward"] += 0.05  # with room, the missing arm is the reason again
    assert evaluate_claim(refs, claim).note.startswith("no runs of arm(s) ['optuna']")
    with pytest.raises(ConfigError, match="headroom_arms"):
        ClaimConfig("C1", a=["optuna"], b=["static"], min_effect=0.02, headroom_arms=["oracle"])


def test_the_report_says_how_many_runs_started_on_a_settled_system(tmp_path):
    import json

    for i, (arm, slope, p, settled) in enumerate([("static", 0.01, 0.6, 1.0), ("optuna", 0.05, 0.01, 0.0),
                                                   ("oracle", -0.02, 0.3, 1.0)]):
        run = tmp_path / f"{i}-{arm}-s0"
        run.mkdir()
        (run / "metrics.csv").write_text("arm,seed,step,reward\n")
        summary = {"arm": arm, "seed": 0, "warmup/windows": 4.0, "warmup/slope": slope, "warmup/slope_p": p,
                   "warmup/settled": settled}
        (run / "summary.json").write_text(json.dumps(summary))
    w = load_warmups(tmp_path)
    assert sorted(w["arm"]) == ["optuna", "oracle", "static"] and w["settled"].sum() == 2
    line = render_warmups(w)[0]
    assert line.startswith("Settled start: 2 of 3 runs showed no upward trend over their 4 warm-up windows")
    assert "mean +0.01333 (range -0.02 to +0.05)" in line
    short = w.assign(windows=1.0, settled=float("nan"))
    assert render_warmups(short)[0].startswith("Settled start: warm-up of 1 window(s), too short")
    untested = w[["arm", "seed", "windows"]].assign(windows=1.0)  # summaries leave out what could not be tested
    assert render_warmups(untested)[0].startswith("Settled start: warm-up of 1 window(s), too short")
    halves = w.assign(windows=12.0, tested=6.0)  # runs that tested the last half of their warm-up say so
    assert render_warmups(halves)[0].startswith("Settled start: 2 of 3 runs showed no upward trend over the last 6 of "
                                                "their 12 warm-up windows")
    assert render_warmups(w.iloc[:0]) == []


def test_a_claim_on_an_expected_metric_reports_the_realised_one_beside_it():
    # expected clicks differ by the A/B pairs' 0.5-0.7; the sampled (realised) clicks by that plus noise: +0.1 on
    # seed 0, -0.1 on seed 1 (mean unchanged), so the realised interval is the wider one around the same effect
    frame = table({"optuna": A, "static": B}).rename(columns={"reward": "outer/engagement/clicks_per_request/exp"})
    noise = np.where(frame["arm"].eq("optuna"), frame["seed"].map({0: 0.1, 1: -0.1, 2: 0.0, 3: 0.0}), 0.0)
    frame["outer/engagement/clicks_per_request"] = frame["outer/engagement/clicks_per_request/exp"] + noise
    claim = ClaimConfig("C1", min_effect=0.1, metric="outer/engagement/clicks_per_request/exp", a=["optuna"], b=["static"])
    result = evaluate_claim(frame, claim)
    effect, low, high = result.realised
    assert result.effect == pytest.approx(0.6) and effect == pytest.approx(0.6)  # same mean, wider interval
    assert high - low > result.high - result.low
    assert "realised (sampled clicks): +0.6 [" in result.line()
    assert result.as_dict()["realised"]["effect"] == pytest.approx(0.6)
    # a realised metric, or an expected one without its realised column, has nothing beside it
    assert np.isnan(evaluate_claim(frame.drop(columns="outer/engagement/clicks_per_request"), claim).realised[0])
    plain = evaluate_claim(frame, ClaimConfig("C2", min_effect=0.1, metric="outer/engagement/clicks_per_request",
                                              a=["optuna"], b=["static"]))
    assert np.isnan(plain.realised[0]) and "realised" not in plain.line()


def test_a_claim_scaled_by_headroom_judges_the_share_of_each_seeds_gap_recovered():
    room = {0: 0.1, 1: 0.2, 2: 0.1, 3: 0.01}  # seed 3's oracle gap is below the claim's headroom: left out
    gain = {0: 0.05, 1: 0.1, 2: 0.08, 3: 0.0}  # shares 0.5, 0.5, 0.8
    frame = table({"static": B, "oracle": {s: B[s] + room[s] for s in B}, "optuna": {s: B[s] + gain[s] for s in B}})
    claim = ClaimConfig("C2-gap", metric="reward", a=["optuna"], b=["static"], min_effect=0.25, headroom=0.02,
                        scale="headroom")
    result = evaluate_claim(frame, claim)
    assert result.paired and result.seeds == [0, 1, 2] and result.n == 3
    assert result.effect == pytest.approx(0.6) and result.b_mean == 0.0  # static recovers nothing by definition
    assert "as shares of each seed's oracle - static gap" in result.line()
    assert "1 seed(s) with a gap below 0.02 left out" in result.line()
    raw = evaluate_claim(frame, ClaimConfig("C2-raw", metric="reward", a=["optuna"], b=["static"], min_effect=0.02))
    assert raw.effect == pytest.approx(np.mean(list(gain.values()))) and raw.note == ""
    # the share needs the oracle's runs, and a headroom to divide by
    assert "needs the headroom arm(s) ['oracle']" in evaluate_claim(frame[frame["arm"] != "oracle"], claim).note
    with pytest.raises(ConfigError, match=r"`claims\[C2-gap\]\.headroom` must be > 0 with `scale: headroom`"):
        ClaimConfig("C2-gap", metric="reward", a=["optuna"], b=["static"], min_effect=0.25, scale="headroom")
    with pytest.raises(ConfigError, match=r"claims\[C2-gap\]\.scale"):
        ClaimConfig("C2-gap", metric="reward", a=["optuna"], b=["static"], min_effect=0.25, scale="ratio")
