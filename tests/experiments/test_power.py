"""`python -m experiments.power`: seeds and windows a claim needs, from a fabricated pilot multirun."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from experiments.config import ClaimConfig
from experiments.power import main, plan_claim
from rewards.stats import mde, n_for_mde, power_at, t_quantile

SEEDS, WINDOWS = 4, 6


def pilot(effect: float = 0.05, seed_sd: float = 0.02, window_sd: float = 0.04) -> pd.DataFrame:
    """``static`` and ``optuna`` runs of 4 seeds x 6 windows: optuna = static + effect + a seed offset + window noise."""
    rng = np.random.default_rng(3)
    rows = []
    for seed in range(SEEDS):
        offset = rng.normal(0, seed_sd)
        for step in range(WINDOWS):
            base = 0.5 + 0.1 * seed + 0.01 * step
            rows += [{"arm": "static", "seed": seed, "step": step, "day": 0.5 * (step + 1), "reward": base},
                     {"arm": "optuna", "seed": seed, "step": step, "day": 0.5 * (step + 1),
                      "reward": base + effect + offset + rng.normal(0, window_sd)}]
    return pd.DataFrame(rows)


CLAIM = ClaimConfig("P1", metric="reward", a=["optuna"], b=["static"], min_effect=0.02)


def test_plan_claim_seeds_and_windows():
    frame = pilot()
    plan = plan_claim(frame, CLAIM)
    d = frame.pivot_table(index="seed", columns="arm", values="reward").eval("optuna - static").to_numpy()
    sd = float(np.std(d, ddof=1))
    assert plan["paired"] and plan["n"] == SEEDS and plan["sd"] == pytest.approx(sd)
    assert plan["target"] == 0.02 and plan["mde_now"] == pytest.approx(mde(sd, SEEDS))
    assert plan["power_now"] == pytest.approx(power_at(0.02, sd, SEEDS))
    assert plan["seeds"] == n_for_mde(sd, 0.02) and mde(sd, plan["seeds"]) <= 0.02 < mde(sd, plan["seeds"] - 1)
    # var(d) = var_seed + var_window / W: the window plan at the pilot's 4 seeds
    wide = frame.pivot_table(index="seed", columns=["step", "arm"], values="reward")
    per_window = np.stack([(wide[s]["optuna"] - wide[s]["static"]).to_numpy() for s in range(WINDOWS)], axis=1)
    var_window = float(per_window.var(axis=1, ddof=1).mean())
    assert plan["windows_now"] == WINDOWS and plan["window_sd"] == pytest.approx(math.sqrt(var_window))
    var_seed = plan["seed_sd"] ** 2
    assert var_seed == pytest.approx(max(0.0, sd**2 - var_window / WINDOWS))
    k = t_quantile(0.975, SEEDS - 1) + t_quantile(0.8, SEEDS - 1)

    def mde_at(w: int) -> float:
        return k * math.sqrt((var_seed + var_window / w) / SEEDS)

    loose = plan_claim(frame, CLAIM, target=0.1)  # a target the seed component leaves room for
    assert loose["windows"] is not None and mde_at(loose["windows"]) <= 0.1
    assert loose["windows"] == 1 or mde_at(loose["windows"] - 1) > 0.1
    assert loose["seeds"] < plan["seeds"] and loose["target"] == 0.1
    tight = plan_claim(frame, CLAIM, target=1e-4)  # the seed component alone is above it: no number of windows
    assert tight["windows"] is None and tight["seeds"] > 1000


def test_plan_claim_unpaired_and_untestable():
    frame = pilot()
    frame.loc[frame["arm"] == "optuna", "seed"] += 10  # the groups ran different seeds
    plan = plan_claim(frame, CLAIM)
    assert not plan["paired"] and plan["windows"] is None and "unpaired" in plan["note"] and plan["seeds"] >= 2
    missing = plan_claim(frame, ClaimConfig("P2", a=["ppo"], b=["static"], min_effect=0.02))
    assert missing["seeds"] is None and "no runs of arm(s) ['ppo']" in missing["note"]


def test_cli_prints_a_table_then_one_json_line(tmp_path, capsys):
    frame = pilot()
    claims = [{"name": "P1", "description": "", "metric": "reward", "a": ["optuna"], "b": ["static"],
               "direction": "greater", "min_effect": 0.02, "from_step": 0},
              {"name": "P2", "description": "", "metric": "outer/risk/violations_per_request", "a": ["optuna"],
               "b": ["static"], "direction": "greater", "min_effect": 0.01, "from_step": 1}]
    frame["outer/risk/violations_per_request"] = 0.05 + 0.01 * frame["seed"] + 0.002 * (frame["arm"] == "optuna")
    for arm in ("optuna", "static"):
        for seed in range(SEEDS):
            run = tmp_path / f"{arm}-s{seed}"
            run.mkdir()
            frame[(frame["arm"] == arm) & (frame["seed"] == seed)].to_csv(run / "metrics.csv", index=False)
            (run / "config.yaml").write_text(yaml.safe_dump({"name": "pilot", "claims": claims}))
    main([str(tmp_path)])
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])["power"]
    assert [c["claim"] for c in result["claims"]] == ["P1", "P2"] and result["power"] == 0.8
    p1 = result["claims"][0]
    assert p1["seeds"] == plan_claim(frame, CLAIM)["seeds"] and p1["target"] == 0.02
    assert any(line.startswith(f"| P1 | reward | 4 | {p1['sd']:.3g} |") for line in out)
    p2 = result["claims"][1]
    assert p2["windows_now"] == WINDOWS - 1 and p2["sd"] < 1e-12 and p2["seeds"] == 2  # no spread: 2 seeds suffice

    main([str(tmp_path), "--mde", "0.05", "--metric", "reward", "--power", "0.9"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["power"]
    (only,) = result["claims"]
    assert only["claim"] == "P1" and only["target"] == 0.05 and only["power"] == 0.9
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--metric", "outer/engagement/clicks_per_request"])
    assert "`--metric` must be one of the claims' metrics" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--mde", "0"])
    assert "--mde must be > 0 (got 0.0)" in capsys.readouterr().err
