"""The demo job writes its table, plots and summary, and its numbers tell the baselines apart."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from experiments.demo import DemoConfig, run
from envs.validation import ConfigError


def test_demo_writes_metrics_plots_and_summary(tmp_path):
    summary = run(DemoConfig(out=str(tmp_path), num_envs=128, days=3, window=25, seed=0, evolution_windows=0))
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    # 3 days x 100 steps per day / 25-step windows = 12 rows per policy
    assert metrics.groupby("policy").size().to_dict() == {"popularity": 12, "profile": 12, "random": 12}
    for col in ("outer/ctr", "outer/return_rate", "outer/violations_per_request", "segment/new/ctr"):
        assert metrics[col].between(0, 10).all(), col
    segments = pd.read_csv(tmp_path / "segments.csv")
    assert set(segments["segment"]) == {"new", "casual", "heavy"}
    for name in ("engagement.png", "segments.png"):
        img = mpimg.imread(tmp_path / name)
        assert img.shape[0] > 200 and img.shape[1] > 400, name
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["shifts"] == [{"day": 2, "kind": "segment_mix"}]  # the day-4 and day-6 shifts lie beyond 3 days
    p = summary["policies"]
    # measured (this seed): random 0.23, profile 0.52 clicks per request; violations random 0.22, profile 0.03
    assert p["profile"]["outer/ctr"] > p["random"]["outer/ctr"] + 0.2
    assert p["profile"]["outer/violations_per_request"] < 0.5 * p["random"]["outer/violations_per_request"]


def test_demo_rejects_unknown_policy_before_running(tmp_path):
    with pytest.raises(ConfigError, match=r"`policies` must be one of .* \(got 'rand'\); did you mean 'random'\?"):
        DemoConfig(out=str(tmp_path), policies=["rand"])
    assert not any(tmp_path.iterdir())


def test_evolution_part_writes_curves_and_commits_every_window(tmp_path):
    from agents.infra.store import KnowledgeStore
    from experiments.evolution_demo import ARMS, EvolutionDemoConfig, run_evolution

    frame = run_evolution(EvolutionDemoConfig(out=str(tmp_path), windows=3, window=400, seed=0))
    assert frame.groupby("arm", sort=False).size().to_dict() == {arm: 3 for arm in ARMS}
    assert frame["reward"].notna().all()
    static = frame[frame["arm"] == "static"]
    assert static.filter(like="config/").nunique().max() == 1  # the static arm never changes its config
    assert frame[frame["arm"] == "optuna"].filter(like="config/").drop_duplicates().shape[0] == 3
    img = mpimg.imread(tmp_path / "evolution.png")
    assert img.shape[0] > 200 and img.shape[1] > 400
    with KnowledgeStore(tmp_path / "store.db") as store:
        exps = store.experiments()
        assert sorted(e.name for e in exps) == sorted(f"demo/{a}" for a in ARMS)
        assert all(e.status == "finished" for e in exps)
        for e in exps:
            trials = store.trials(e.id)
            assert [t.step for t in trials] == [0, 1, 2]
            rewards = frame[frame["arm"] == e.name.split("/")[1]]["reward"].to_numpy()
            np.testing.assert_allclose([t.reward for t in trials], rewards)


def test_alternation_part_runs_both_arms_and_commits_every_window(tmp_path):
    from agents.infra.store import KnowledgeStore
    from experiments.evolution_demo import EvolutionDemoConfig, run_alternation

    frame = run_alternation(EvolutionDemoConfig(out=str(tmp_path), windows=8, window=400, seed=0))
    explored = frame[frame["phase"].isin(["individual", "compositional"])]
    assert explored.groupby("arm", sort=False).size().to_dict() == {"static": 8, "alternating": 8}
    static = frame[frame["arm"] == "static"]
    assert static["composition"].nunique() == 1 and static["phase"].tolist() == ["sentinel"] + ["individual"] * 8
    assert frame[frame["arm"] == "alternating"]["composition"].nunique() > 1  # it explored wirings
    img = mpimg.imread(tmp_path / "alternation.png")
    assert img.shape[0] > 200 and img.shape[1] > 400
    with KnowledgeStore(tmp_path / "store.db") as store:
        for e in store.experiments():
            served = frame[frame["arm"] == e.name.split("/")[-1]]
            assert [t.step for t in store.trials(e.id)] == served["served"].tolist() == list(range(len(served)))
            assert e.status == "finished"
