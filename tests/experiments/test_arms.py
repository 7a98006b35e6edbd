"""The arms: per-segment metrics of a window, and the composition arms (C4) end to end on the composition env."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from agents.infra.store import KnowledgeStore
from envs.log import REQUEST_COLUMNS, InteractionLog
from envs.validation import ConfigError
from experiments.arms import ARMS, segment_metrics
from experiments.config import load_config
from experiments.plot import run_store
from experiments.run import build_env, run

CONF = Path(__file__).resolve().parents[2] / "conf"
# a few short windows of a tiny world, the rankers without a minimum of gradient steps: seconds per run
TINY_RUN = ("logger=csv", "logger.plots=false", "logger.progress=false", "evolution.window=100", "evolution.concurrency=50",
            "system.pipelines.0.ranker.params.min_updates=0")


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_segment_metrics_of_a_hand_worked_log():
    # 5 requests: new (segment 0) x2 with 1 and 0 clicks, heavy (2) x3 with 2, 1, 0 clicks and 1 violation; no casual
    segment = np.array([0, 0, 2, 2, 2])
    clicks = np.array([1, 0, 2, 1, 0])
    violations = np.array([0, 0, 1, 0, 0])
    n = len(segment)
    requests = {c: np.zeros(n, dtype) for c, dtype in REQUEST_COLUMNS.items()}
    expected = np.array([0.25, 0.75, 0.5, 0.5, 0.2], np.float32)  # the choice model's 1 - P(no click)
    requests |= {"request": np.arange(n), "segment": segment, "clicks": clicks, "violations": violations,
                 "clicks_exp": expected}
    log = InteractionLog(requests=requests, segment_names=["new", "casual", "heavy"])
    m = segment_metrics(log)
    assert m["segment/new/clicks_per_request"] == pytest.approx(0.5)  # 1 click / 2 requests
    assert m["segment/heavy/clicks_per_request"] == pytest.approx(1.0)  # 3 / 3
    assert m["segment/new/clicks_per_request/exp"] == pytest.approx(0.5)  # (0.25 + 0.75) / 2
    assert m["segment/heavy/clicks_per_request/exp"] == pytest.approx(0.4)  # (0.5 + 0.5 + 0.2) / 3
    assert m["segment/heavy/violations_per_request"] == pytest.approx(1 / 3)
    assert m["segment/new/request_share"] == pytest.approx(0.4) and m["segment/heavy/request_share"] == pytest.approx(0.6)
    assert math.isnan(m["segment/casual/clicks_per_request"]) and math.isnan(m["segment/casual/clicks_per_request/exp"])
    assert m["segment/casual/request_share"] == 0.0
    assert segment_metrics(None) == {} and segment_metrics(InteractionLog(segment_names=["new"])) == {}


def test_every_window_has_per_segment_columns_that_add_up_to_the_overall_ones(tmp_path):
    run(compose_config("experiment=c1_heterogeneity", "variant=segment_routed", "evolution.windows=2", *TINY_RUN),
        out_dir=tmp_path)
    f = pd.read_csv(tmp_path / "metrics.csv")
    assert (f["arm"] == "segment_routed").all()
    segments = ("new", "casual", "heavy")
    shares = sum(f[f"segment/{s}/request_share"] for s in segments)
    np.testing.assert_allclose(shares, 1.0)
    overall = sum(f[f"segment/{s}/request_share"] * f[f"segment/{s}/clicks_per_request"].fillna(0.0) for s in segments)
    np.testing.assert_allclose(overall, f["outer/engagement/clicks_per_request"])


@pytest.mark.parametrize("arm", ["static", "random", "optuna", "optuna_ab", "ppo"])
def test_evolution_arms_exploit_what_they_found_after_the_evolution(tmp_path, arm):
    overrides = ["controller.options.n_steps=2", "controller.options.batch_size=2"] if arm == "ppo" else []
    summary = run(compose_config("experiment=smoke", f"controller={arm}", "evolution.windows=3", "evolution.exploit=2",
                                 *overrides, *TINY_RUN), out_dir=tmp_path)
    f = pd.read_csv(tmp_path / "metrics.csv")
    assert f["step"].tolist() == [0, 1, 2, 3, 4] and summary["windows"] == 5
    assert f["phase"].fillna("").tolist() == ["", "", "", "exploit", "exploit"]
    assert summary["final/exploit_reward_mean"] == pytest.approx(f["reward"][3:].mean())
    config = [c for c in f.columns if c.startswith("config/")]
    told = f["reward"]
    if arm == "optuna_ab":  # told candidate - control while searching; the exploit windows serve everyone alike
        relative = f["evolution/candidate_reward"][:3] - f["evolution/control_reward"][:3]
        np.testing.assert_allclose(f["evolution/told_reward"][:3], relative)
        np.testing.assert_allclose(f["reward"][:3], f["evolution/window_reward"][:3])  # the row: what the platform earned
        assert f["evolution/control_reward"][3:].isna().all() and f["evolution/told_reward"][3:].isna().all()
        told = f["evolution/told_reward"]
    if arm in ("random", "optuna", "optuna_ab"):  # the best config of the evolution's windows, served again
        best = f.loc[told[:3].idxmax(), config]
        for step in (3, 4):
            pd.testing.assert_series_equal(f.loc[step, config], best, check_names=False)
    if arm == "static":
        assert len(f[config].drop_duplicates()) == 1
    if arm == "ppo":  # SB3's own log of its updates, in the run's folder
        assert pd.read_csv(tmp_path / "sb3" / "progress.csv")["time/total_timesteps"].max() >= 2


def explored_run(tmp_path: Path, experiment: str, arm: str, *overrides: str) -> pd.DataFrame:
    """Run ``arm`` for 4 windows explored on 20% of the users, then 1 exploit window (400 requests each), check what
    every such run shows (the candidate's request share near 0.2, the searcher told candidate - control, rows with
    what the platform earned, an exploit window not split) and return its rows."""
    ppo = ["controller.options.n_steps=2", "controller.options.batch_size=2"] if arm.startswith("ppo") else []
    run(compose_config(f"experiment={experiment}", f"controller={arm}", "evolution.windows=4", "evolution.exploit=1",
                       "evolution.explore_share=0.2", "evolution.window=400", *ppo, *overrides, *TINY_RUN),
        out_dir=tmp_path)
    f = pd.read_csv(tmp_path / "metrics.csv")
    search, rest = f.iloc[:4], f.iloc[4:]
    # the candidate's request share: users split by a hash, ~50 users per window in the smoke and C4 worlds (sd of a
    # window's share ~0.055, of the mean of 4 fresh splits ~0.03)
    assert 0.08 < search["evolution/candidate_share"].mean() < 0.35, search["evolution/candidate_share"].tolist()
    np.testing.assert_allclose(search["evolution/told_reward"],
                               search["evolution/candidate_reward"] - search["evolution/control_reward"])
    np.testing.assert_allclose(search["reward"], search["evolution/window_reward"])
    assert rest["evolution/candidate_share"].isna().all() and rest["phase"].eq("exploit").all()
    return f


@pytest.mark.parametrize("arm", ["random", "optuna", "ppo", "ppo_pretrained"])
def test_searching_arms_explore_on_the_declared_share_and_exploit_on_all_traffic(tmp_path, arm):
    """`evolution.explore_share=0.2`: while searching, the candidate serves ~20% of the users (the incumbent the
    rest, a fresh split per window) and the searcher is told candidate - control; the rows keep what the platform
    earned; the re-test and exploit windows are not split by it. PPO's pre-training (on simulated platforms, all
    their users) runs beside it (with `select=ship`)."""
    overrides = []
    if arm == "ppo_pretrained":
        overrides += ["controller.options.pretrain=1", "controller.options.pretrain_hold=2",
                      "controller.options.pretrain_gap=1", "evolution.select=ship"]
    explored_run(tmp_path, "smoke", arm, *overrides)


@pytest.mark.parametrize("ships", [True, False])
def test_ship_deploys_what_wins_each_windows_test_to_production(tmp_path, ships):
    """`evolution.select=ship`: a window whose test clears `ship_min_effect` (here -1 clicks per request: every
    test; 1: none) ships its candidate: production (the control) serves it from the next window, the searcher is
    then told candidate - new production, and the exploit windows serve the last shipped config; with no ship they
    serve the hand-tuned config."""
    summary = run(compose_config("experiment=smoke", "controller=random", "reward=outer_only", "evolution.windows=4",
                                 "evolution.exploit=1", "evolution.explore_share=0.2", "evolution.select=ship",
                                 "evolution.window=400",
                                 f"evolution.ship_min_effect={-1 if ships else 1}", *TINY_RUN), out_dir=tmp_path)
    f = pd.read_csv(tmp_path / "metrics.csv")
    search, exploit_row = f.iloc[:4], f.iloc[4]
    configs = [c for c in f.columns if c.startswith("config/") and c != "config/learn_violations"]
    assert search["ship/shipped"].tolist() == ([1.0] * 4 if ships else [0.0] * 4)
    assert search["ship/ships"].iloc[-1] == summary["ship/ships"] == (4.0 if ships else 0.0)
    assert (search["ship/low"] < search["ship/effect"]).all()
    # the outer-only reward is expected clicks per request: the test's effect is what the searcher is told
    np.testing.assert_allclose(search["ship/effect"], search["evolution/told_reward"], rtol=1e-9, atol=1e-12)
    incumbent = build_env(load_config(compose_config("experiment=smoke"))).initial_config
    served = f.iloc[3][configs] if ships else [incumbent[c.removeprefix("config/")] for c in configs]
    np.testing.assert_allclose(exploit_row[configs].astype(float), np.asarray(served, float))
    if ships:  # random proposals differ window to window: production moved, so did what the control earned
        assert search[configs].drop_duplicates().shape[0] == 4


@pytest.mark.parametrize("arm", ["compositional", "ppo_composition"])
def test_composition_arms_explore_on_the_declared_share_and_exploit_on_all_traffic(tmp_path, arm):
    """`evolution.explore_share=0.2` on the composition env: while searching, the candidate wiring serves ~20% of the
    users (the system config's own wiring the rest, a fresh split per window) and the searcher is told candidate -
    control; the rows keep what the platform earned; the exploit windows are not split."""
    f = explored_run(tmp_path, "c4_composition", arm)
    search, rest = f.iloc[:4], f.iloc[4:]
    assert search["evolution/told_reward"].ne(search["reward"]).all() and search["config/composition"].nunique() > 1
    assert "twin/reward" in rest.columns and rest["twin/reward"].notna().all()  # unsplit: twins judge it again


@pytest.mark.parametrize("ships", [True, False])
def test_ship_deploys_the_wiring_that_wins_each_windows_test_on_the_composition_env(tmp_path, ships):
    """`evolution.select=ship` on the composition env: a window whose test clears `ship_min_effect` (-1: every test;
    1: none) ships its candidate wiring to production (the control); the exploit windows serve the last shipped
    wiring, or the system config's own without a ship."""
    summary = run(compose_config("experiment=c4_composition", "controller=compositional", "evolution.windows=4",
                                 "evolution.exploit=1", "evolution.explore_share=0.2", "evolution.select=ship",
                                 "evolution.window=400", f"evolution.ship_min_effect={-1 if ships else 1}", *TINY_RUN),
                  out_dir=tmp_path)
    f = pd.read_csv(tmp_path / "metrics.csv")
    search, exploit_row = f.iloc[:4], f.iloc[4]
    assert search["ship/shipped"].tolist() == ([1.0] * 4 if ships else [0.0] * 4)
    assert search["ship/ships"].iloc[-1] == summary["ship/ships"] == (4.0 if ships else 0.0)
    assert (search["ship/low"] < search["ship/effect"]).all()
    # reward=outer_only is expected clicks per request: the test's effect is what the searcher is told
    np.testing.assert_allclose(search["ship/effect"], search["evolution/told_reward"], rtol=1e-6, atol=1e-9)
    env = build_env(load_config(compose_config("experiment=c4_composition", "controller=compositional")))
    initial = env.initial_config  # the system config's own wiring, as a config of the composition's choices
    served = f.iloc[3] if ships else {"config/composition": env.initial.key(), **{f"config/{k}": v for k, v in initial.items()}}
    assert exploit_row[[f"config/{k}" for k in initial]].tolist() == [served[f"config/{k}"] for k in initial]
    assert exploit_row["config/composition"] == served["config/composition"]
    assert search["config/composition"].nunique() == 4  # a new candidate wiring every window: the last ship is row 3's


@pytest.mark.parametrize(("arm", "extra", "match"), [
    ("optuna_phases", (), "must be 1 for arm 'optuna_phases'"),
    ("optuna_ab", (), "controller.options.control_share"),
    ("optuna", ("reward=lagrangian",), "`reward.constraints` are not supported with `evolution.explore_share` < 1"),
])
def test_explore_share_is_refused_by_arms_that_cannot_split_their_search(arm, extra, match):
    experiment = "smoke"
    with pytest.raises(ConfigError, match=re.escape(match)):
        build_env(load_config(compose_config(f"experiment={experiment}", f"controller={arm}", *extra,
                                             "evolution.explore_share=0.2")))


@pytest.mark.parametrize("arm", ["static_composition", "compositional", "individual", "alternating", "ppo_composition"])
def test_composition_arms_run_on_the_composition_env(tmp_path, arm):
    assert ARMS[arm].env == "composition"
    overrides = ["controller.options.n_steps=2", "controller.options.batch_size=2"] if arm.startswith("ppo") else []
    # on all traffic (explore_share=1; the preset's 20% share and ships: the tests below), every window's reward told
    summary = run(compose_config("experiment=c4_composition", f"controller={arm}", "evolution.windows=3",
                                 "evolution.exploit=1", "evolution.explore_share=1", "evolution.select=best_window",
                                 *overrides, *TINY_RUN), out_dir=tmp_path)
    f = pd.read_csv(tmp_path / "metrics.csv")
    schedule = arm in ("individual", "alternating")  # the schedule's first window is a sentinel of production, counted
    n = 4  # 3 evolution windows (the schedule's sentinel among them: every arm serves as many) and 1 exploit
    assert f["step"].tolist() == list(range(n)) and summary["windows"] == n
    assert (f["arm"] == arm).all() and f["day"].is_monotonic_increasing and f["phase"][n - 1] == "exploit"
    assert {"outer/engagement/clicks_per_request", "segment/new/clicks_per_request", "config/composition"} <= set(f.columns)
    url, exp_id = run_store(tmp_path)  # the shared store (one file per test worker) and this run's experiment in it
    with KnowledgeStore(url) as store:
        exp = store.experiment(exp_id)
        trials = store.trials(exp.id)
    assert exp.status == "finished" and [t.step for t in trials] == list(range(n))
    np.testing.assert_allclose([t.reward for t in trials], f["reward"])
    if arm == "static_composition":
        assert f["config/composition"].nunique() == 1 and "new->main" in f["config/composition"][0]
        assert {t.agent for t in trials} == {"composition"}
    if arm == "compositional":
        assert f["config/composition"][:3].nunique() == 3  # a new wiring every window
        assert f["config/composition"][3] == f["config/composition"][f["reward"][:3].idxmax()]  # then the best one
        assert {"config/main/rankers", "config/routing/new"} <= set(f.columns)
        # reward=outer_only, judged by the expected clicks (the default outcome); the realised ones are logged beside
        np.testing.assert_allclose(f["reward"], f["outer/engagement/clicks_per_request/exp"], rtol=1e-6)
    # twins of the exploit window (served - incumbent wiring) where the wiring is all the arm changes; the schedule
    # also re-configures a pooled agent outside the action, so a twin with the incumbent's action would not be the
    # incumbent
    assert ("twin/reward" in f.columns) == (not schedule)
    if arm == "static_composition":
        assert f["twin/reward"].iloc[-1] == 0
    if schedule:  # the schedule's rows: the re-ranker's config changes, the wiring does not
        assert f["phase"].tolist() == ["sentinel", "individual", "individual", "exploit"]
        assert f["config/composition"].nunique() == 1 and f["config/mmr_lambda"][1:3].nunique() == 2
        assert [t.agent for t in trials] == ["production"] + ["main/rerank/mmr"] * 2 + ["composition"]
        assert {t.controller for t in trials[1:3]} == {"individual/optuna"}


@pytest.mark.parametrize("arm", ["individual", "alternating"])
def test_the_schedule_arms_explore_on_the_declared_share_and_ship_what_wins(tmp_path, arm):
    """`evolution.explore_share=0.2`, `select=ship` for the schedule's arms (C4's same exposure): every exploration
    window serves the candidate (the re-ranker's config; alternating's compositional phase: the wiring) to ~20% of
    the users and production to the rest, tells the searcher candidate - production, and ships a won test
    (`ship_min_effect=-1`: every test wins); sentinels serve production to everyone; the exploit windows serve the
    last shipped production."""
    options = (["controller.options.patience=1", "controller.options.min_windows=2", "controller.options.min_gain=10",
                "controller.options.gate_windows=1"] if arm == "alternating" else [])
    summary = run(compose_config("experiment=c4_composition", f"controller={arm}", "evolution.windows=6",
                                 "evolution.exploit=1", "evolution.explore_share=0.2", "evolution.select=ship",
                                 "evolution.window=400", "evolution.ship_min_effect=-1", *options, *TINY_RUN),
                  out_dir=tmp_path)
    f = pd.read_csv(tmp_path / "metrics.csv")
    assert len(f) == 7 and f["phase"].iloc[-1] == "exploit"  # 6 windows served (sentinels and gates among them)
    search = f[f["phase"].isin(["individual", "compositional"])]
    n = len(search)
    assert n >= 3 and search["ship/shipped"].tolist() == [1.0] * n and summary["ship/ships"] == float(n)
    assert search["evolution/candidate_share"].between(0.08, 0.35).all(), search["evolution/candidate_share"].tolist()
    np.testing.assert_allclose(search["evolution/told_reward"],
                               search["evolution/candidate_reward"] - search["evolution/control_reward"], atol=1e-9)
    assert f.loc[f["phase"] == "sentinel", "evolution/candidate_share"].isna().all()  # production, everyone
    exploit_row = f.iloc[-1]
    assert exploit_row["phase"] == "exploit"
    if arm == "individual":  # the last window's re-ranker config shipped: the exploit window serves it
        ind = search[search["phase"] == "individual"]
        assert len(ind) == 5 and ind["config/mmr_lambda"].nunique() == 5
        assert exploit_row["config/mmr_lambda"] == ind["config/mmr_lambda"].iloc[-1]
        assert exploit_row["config/composition"] == search["config/composition"].iloc[-1]
    else:  # two phases: the re-ranker, then the wiring, each ending with a gate of its best (by the told reward)
        # unless that is production already; the exploit window serves a wiring the compositional phase served
        assert search["phase"].tolist()[:3] == ["individual", "individual", "compositional"]
        assert exploit_row["config/composition"] in set(search["config/composition"].iloc[2:])


def test_alternating_arm_switches_phase_through_an_ab_gate(tmp_path):
    # saturation after 2 windows whatever the gains (min_gain 10 = 1000%): a gate, then compositional evolution
    # on all traffic (the preset's 20% share with ships skips the gate of a phase best that shipped: tested above)
    run(compose_config("experiment=c4_composition", "controller=alternating", "evolution.windows=8", "evolution.exploit=0",
                       "evolution.explore_share=1", "evolution.select=best_window",
                       "controller.options.patience=1", "controller.options.min_windows=2", "controller.options.min_gain=10",
                       "controller.options.gate_windows=1", *TINY_RUN), out_dir=tmp_path)
    f = pd.read_csv(tmp_path / "metrics.csv")
    assert f.loc[f["phase"] == "compositional", "config/composition"].nunique() == 2
    url, exp_id = run_store(tmp_path)
    with KnowledgeStore(url) as store:
        rollouts = store.rollouts(exp_id)
        trials = store.trials(exp_id)
    assert [(r.step, r.agent) for r in rollouts] == [(1, "main/rerank/mmr"), (3, "composition")]  # one gate per phase end
    # every window served is a row, 8 in all (as every arm's evolution): the first sentinel, a gate window at each
    # phase end and a sentinel of the new production after an accepted gate (the shift test's sentinel after the 5th
    # exploration window does not fit)
    after = [["sentinel"] if r.decision == "accepted" else [] for r in rollouts]
    phases = (["sentinel", "individual", "individual", "gate", *after[0], "compositional", "compositional", "gate",
               *after[1], "individual"])[:8]
    assert f["phase"].tolist() == phases
    who = {"sentinel": "production", "individual": "main/rerank/mmr", "compositional": "composition", "gate": "gate"}
    assert [t.agent for t in trials] == [who[p] for p in phases]
    assert f["step"].tolist() == list(range(len(f))) and f["day"].is_monotonic_increasing


def test_an_a_a_replicate_arm_is_labelled_and_reseeds_only_the_arms_own_randomness(tmp_path):
    """``controller=static_r1``: the static arm again with its own randomness re-seeded (label ``static_r1``,
    ``replicate`` 1 in every row), on the same world and traffic: other rewards, the same days and window count."""
    short = ("experiment=smoke", "evolution.windows=2", "evolution.exploit=0", "seed=1", *TINY_RUN)
    base = run(compose_config("controller=static", *short), out_dir=tmp_path / "static")
    rep = run(compose_config("controller=static_r1", *short), out_dir=tmp_path / "static_r1")
    assert (base["arm"], rep["arm"]) == ("static", "static_r1") and (base["replicate"], rep["replicate"]) == (0, 1)
    a, b = pd.read_csv(tmp_path / "static" / "metrics.csv"), pd.read_csv(tmp_path / "static_r1" / "metrics.csv")
    assert (b["replicate"] == 1).all() and (a["replicate"] == 0).all() and len(a) == len(b)
    np.testing.assert_array_equal(a["day"], b["day"])
    assert not np.array_equal(a["reward"], b["reward"])
    url, exp_id = run_store(tmp_path / "static_r1")
    with KnowledgeStore(url) as store:
        assert store.experiment(exp_id).name == "smoke/static_r1"
    # an arm that derives many seeds from its own (a study per phase) stays within the samplers' seed range
    ind = run(compose_config("experiment=c4_composition", "controller=individual_r1", "evolution.windows=2",
                             "evolution.exploit=0", *TINY_RUN), out_dir=tmp_path / "individual_r1")
    assert ind["arm"] == "individual_r1" and ind["windows"] >= 2


@pytest.mark.parametrize("experiment, oracle, static, extra", [
    ("c2_individual", "oracle", "static", ()),
    ("c4_composition", "oracle_composition", "static_composition", ()),
    # the oracle of one metric: the served window's metric is the best of the grid's (a cost: the lowest)
    ("c2_individual", "oracle", "static", ("controller.options.metric=inner/rerank/intra_list_diversity",)),
    ("c2_individual", "oracle", "static", ("controller.options.metric=outer/risk/violations_per_request",
                                           "controller.options.minimize=true")),
    # a local grid: the incumbent's one-parameter neighbours before the uniform samples (a config, a wiring)
    ("c2_individual", "oracle", "static", ("controller.options.local=2",)),
    ("c4_composition", "oracle_composition", "static_composition", ("controller.options.local=2",)),
])
def test_the_oracle_serves_the_best_twin_of_its_grid_each_window(tmp_path, experiment, oracle, static, extra):
    """The oracle's window is its best twin's exactly (same state, same traffic); the incumbent (hand-tuned config,
    the system's own wiring) is in its grid, so its gap is never negative, and on the first window (the same state for
    both arms) the incumbent's twin is the static arm's window."""
    short = (f"experiment={experiment}", "evolution.windows=3", "evolution.exploit=1", "evolution.select=best_window",
             "seed=0", *TINY_RUN)
    run(compose_config(f"controller={oracle}", "controller.options.grid=4", *extra, *short), out_dir=tmp_path / "oracle")
    run(compose_config(f"controller={static}", *short), out_dir=tmp_path / "static")
    o, s = pd.read_csv(tmp_path / "oracle" / "metrics.csv"), pd.read_csv(tmp_path / "static" / "metrics.csv")
    assert len(o) == 4 and (o["phase"].iloc[-1] == "exploit")
    metric = next((e.split("=")[1] for e in extra if ".metric=" in e), "reward")
    sign = -1.0 if any("minimize=true" in e for e in extra) else 1.0
    np.testing.assert_allclose(sign * o[metric], o["oracle/best_value"], rtol=0, atol=1e-12)
    assert (o["oracle/gap"] >= 0).all() and (o["oracle/gap"] == o["oracle/best_value"] - o["oracle/static_value"]).all()
    assert o["oracle/static_value"].iloc[0] == pytest.approx(sign * s[metric].iloc[0], abs=1e-12)
    chosen = o["oracle/best_index"].astype(int)
    assert chosen.between(0, 3).all()
    if metric == "reward":  # over a few windows of a tiny world the grid has something to gain somewhere
        assert (o["oracle/gap"] > 0).any()


@pytest.mark.parametrize("experiment, arm, static", [
    ("c2_individual", "hindsight", "static"),
    ("c4_composition", "hindsight_composition", "static_composition"),
])
def test_hindsight_serves_the_fixed_point_that_was_best_over_the_exploit_windows(tmp_path, experiment, arm, static):
    """Each grid point was run held fixed on a copy of the env: the run then serves the best, and repeats that copy
    exactly (its exploit windows' mean reward is the value it was picked by); the incumbent is in the grid, so the gap
    is never negative, and the incumbent's value is the static arm's own run."""
    short = (f"experiment={experiment}", "evolution.windows=3", "evolution.exploit=2", "evolution.select=best_window",
             "seed=0", *TINY_RUN)
    summary = run(compose_config(f"controller={arm}", "controller.options.grid=3", *short), out_dir=tmp_path / "h")
    run(compose_config(f"controller={static}", *short), out_dir=tmp_path / "static")
    h, s = pd.read_csv(tmp_path / "h" / "metrics.csv"), pd.read_csv(tmp_path / "static" / "metrics.csv")
    exploit = h["phase"] == "exploit"
    assert exploit.sum() == 2 and h["hindsight/value"].nunique() == 1
    assert h.loc[exploit, "reward"].mean() == pytest.approx(h["hindsight/value"].iloc[0], abs=1e-12)
    assert s.loc[s["phase"] == "exploit", "reward"].mean() == pytest.approx(h["hindsight/static_value"].iloc[0], abs=1e-12)
    assert h["hindsight/gap"].iloc[0] >= 0 and summary["hindsight/gap"] == h["hindsight/gap"].iloc[0]
    if h["hindsight/best_index"].iloc[0] == 0:  # the incumbent won: the run is the static arm's
        np.testing.assert_array_equal(h["reward"], s["reward"])


def test_the_oracle_names_the_metrics_a_window_has_when_its_metric_is_unknown(tmp_path):
    from envs.validation import ConfigError

    with pytest.raises(ConfigError, match=r"'outer/engagement/clickz' is not a metric of this run's windows \(known: "
                                          r"\[.*'outer/engagement/clicks_per_request'"):
        run(compose_config("experiment=c2_individual", "controller=oracle", "controller.options.grid=2",
                           "controller.options.metric=outer/engagement/clickz", "evolution.windows=1", "evolution.select=best_window",
                           "evolution.exploit=0", "seed=0", *TINY_RUN), out_dir=tmp_path)


def test_twins_measure_an_arms_choice_against_the_incumbent_on_identical_traffic_and_change_nothing(tmp_path):
    """``twin/<metric>`` is the window's metric with the served action minus with the incumbent's, each on a twin of
    the same state and traffic: the served twin is the live window exactly (so the reward less the gain is the
    incumbent's twin), on the first window (one state for every arm) that is the static arm's window, the static arm
    gains exactly 0, and serving the twins changes nothing the run does."""
    short = ("experiment=smoke", "evolution.windows=3", "evolution.exploit=2", "evolution.select=best_window", "seed=1",
             *TINY_RUN)
    run(compose_config("controller=optuna", "evolution.twins=all", *short), out_dir=tmp_path / "optuna")
    run(compose_config("controller=optuna", "evolution.twins=off", *short), out_dir=tmp_path / "plain")
    run(compose_config("controller=static", *short), out_dir=tmp_path / "static")
    o, plain, s = (pd.read_csv(tmp_path / name / "metrics.csv") for name in ("optuna", "plain", "static"))
    np.testing.assert_array_equal(o["reward"], plain["reward"])  # the twins leave the run as it was
    assert not any(c.startswith("twin/") for c in plain.columns)
    assert o["twin/reward"].notna().all() and (o["twin/reward"] != 0).any()
    assert o["reward"].iloc[0] - o["twin/reward"].iloc[0] == pytest.approx(s["reward"].iloc[0], abs=1e-12)
    clicks = "outer/engagement/clicks_per_request"
    assert o[clicks].iloc[0] - o[f"twin/{clicks}"].iloc[0] == pytest.approx(s[clicks].iloc[0], abs=1e-12)
    assert {f"twin/{clicks}", "twin/outer/risk/violations_per_request"} <= set(o.columns)
    assert (s.loc[s["phase"] == "exploit", "twin/reward"] == 0).all()  # twins=exploit (the default): those windows
    assert s.loc[s["phase"] != "exploit", "twin/reward"].isna().all()


@pytest.mark.parametrize("overrides, message", [
    (("evolution.twins=off",), r"`claims\[C2-optuna-found\].metric` = 'twin/reward' needs twins in its windows \(stage "
                               r"'exploit'\): set `evolution.twins` to 'all' or 'exploit' \(got evolution.twins='off'\)"),
    (("evolution.twins=every",), r"`evolution.twins` must be one of \['off', 'exploit', 'all'\] \(got 'every'\)"),
    # the oracle of one metric: a name that is not an inner or outer metric, a cost without a metric
    (("controller=oracle", "controller.options.metric=clicks"),
     r"`controller.options.metric` must be '' \(the run's reward\) or an inner or outer metric .*got 'clicks'\)"),
    (("controller=oracle", "controller.options.minimize=true"),
     r"`controller.options.minimize` needs `controller.options.metric`"),
    (("controller=oracle", "controller.options.grid=4", "controller.options.local=4"),
     r"`controller.options.local` must be .*3.* \(got 4\)"),
])
def test_a_claim_on_twins_or_an_oracle_metric_is_refused_before_running(overrides, message):
    from envs.validation import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(compose_config("experiment=c2_individual", *overrides))


def test_a_twin_window_refuses_a_window_split_with_a_concurrent_control():
    from envs.validation import ConfigError

    env = build_env(load_config(compose_config("experiment=smoke", "controller=optuna_ab", *TINY_RUN)))
    env.reset(seed=0)
    env.unwrapped.set_control_share(0.5)
    with pytest.raises(ConfigError, match="control_share=0.5"):
        env.unwrapped.twin_window(env.unwrapped.current_action())


@pytest.mark.parametrize("arm", ["oracle", "hindsight"])
def test_the_reference_arms_refuse_a_constrained_reward_before_running(arm):
    from envs.validation import ConfigError
    from experiments.config import load_config
    from experiments.run import build_env

    cfg = load_config(compose_config("experiment=c2_individual", f"controller={arm}", "reward=lagrangian"))
    with pytest.raises(ConfigError, match=rf"`reward.constraints` are not supported by arm '{arm}'"):
        build_env(cfg)


def test_select_retest_re_tests_the_leaders_then_exploits_the_winner_or_keeps_the_incumbent(tmp_path):
    """``evolution.select=retest``: the last ``retest`` of the run's windows re-test its best distinct configs by
    successive halving against a concurrent control (the incumbent); the exploit windows serve the winner by mean
    relative reward when that mean is > 0, else the incumbent. Every arm still serves ``windows`` windows."""
    summary = run(compose_config("experiment=smoke", "controller=optuna", "evolution.windows=10", "evolution.exploit=1",
                                 "evolution.select=retest", "evolution.leaders=4", "evolution.retest=6",
                                 "evolution.warmup=3", *TINY_RUN), out_dir=tmp_path)
    f = pd.read_csv(tmp_path / "metrics.csv")
    assert f["phase"].fillna("").tolist() == [""] * 4 + ["retest"] * 6 + ["exploit"]
    config = [c for c in f.columns if c.startswith("config/")]
    search, retest, exploit_row = f[:4], f[4:10], f.iloc[10]
    leaders = search.sort_values("reward", ascending=False, kind="stable")[config].drop_duplicates()
    lead = retest["retest/leader"].astype(int).tolist()
    assert lead[:4] == [0, 1, 2, 3] and len(set(lead[4:])) == 2  # round 1: all four once; round 2: the better two
    for step, i in enumerate(lead, start=4):  # each re-test window serves its leader's config
        pd.testing.assert_series_equal(f.loc[step, config], leaders.iloc[i], check_names=False)
    relative = (retest["evolution/candidate_reward"] - retest["evolution/control_reward"]).to_numpy()
    means = {i: relative[[j for j, x in enumerate(lead) if x == i]].mean() for i in set(lead[4:])}
    winner = max(means, key=lambda i: (means[i], -i))
    chosen = int(exploit_row["selection/leader"])
    assert chosen == (winner if means[winner] > 0 else -1)
    assert exploit_row["selection/retest_mean"] == pytest.approx(means[winner])
    if chosen >= 0:
        pd.testing.assert_series_equal(exploit_row[config], leaders.iloc[winner], check_names=False)
    else:  # the incumbent: the system config's re-ranker
        assert exploit_row["config/mmr_lambda"] == 0.0 and exploit_row["config/risk_threshold"] == 0.5
    assert not np.allclose(retest["reward"], relative)  # the rows record the whole window's reward, not the test's
    assert summary["warmup/windows"] == 3 and summary["warmup/settled"] in (0.0, 1.0)
    assert 0.0 <= summary["warmup/slope_p"] <= 1.0



@pytest.mark.parametrize("overrides, message", [
    (("evolution.select=best",), r"`evolution.select` must be one of \['best_window', 'retest', 'ship'\] \(got "
                                 r"'best'\); did you mean 'retest'\?"),
    (("evolution.select=ship",), r"`evolution.select=ship` deploys what beats production.*set `evolution.explore_share` "
                                 r"< 1, e.g. 0.2 \(got explore_share=1.0\)"),
    (("evolution.select=ship", "evolution.explore_share=0.2", "evolution.ship_metric=ctr"),
     r"`evolution.ship_metric` must be one of \['clicks_exp', 'clicks', 'dwell'\] \(got 'ctr'\)"),
    (("evolution.ship_alpha=0",), r"`evolution.ship_alpha` must be in \[0.001, 0.5\] \(got 0(\.0)?\)"),
    (("evolution.select=retest", "evolution.windows=8", "evolution.retest=8"),
     r"`evolution.retest` must be < `evolution.windows` \(.*got 8 >= 8\)"),
    (("evolution.select=retest", "evolution.windows=20", "evolution.leaders=5", "evolution.retest=9"),
     r"`evolution.retest` must be >= 10 for 5 leaders \(successive halving re-tests 5 then 3 then 2 of them"),
    (("evolution.retest_share=0.99",), r"`evolution.retest_share` must be in \[0.05, 0.95\] \(got 0.99\)"),
    (("evolution.explore_share=0.01",), r"`evolution.explore_share` must be in \[0.05, 1(\.0)?\] \(got 0.01\)"),
    (("evolution.explore_share=0.2", "evolution.stationary=true"),
     r"`evolution.explore_share` < 1 needs `evolution.stationary` = false.*set explore_share=1"),
])
def test_bad_selection_settings_are_refused_with_the_key(overrides, message):
    from envs.validation import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(compose_config("experiment=smoke", "controller=optuna", *overrides))


def test_a_retest_is_live_traffic_and_refuses_a_stationary_env_but_takes_constraints_as_guardrails():
    from envs.validation import ConfigError

    def env(*overrides: str):
        return build_env(load_config(compose_config("experiment=smoke", "evolution.select=retest",
                                                    "evolution.windows=12", *overrides)))

    with pytest.raises(ConfigError, match=r"`evolution.stationary` must be false for arm 'optuna' with "
                                          r"`evolution.select` = 'retest'"):
        env("controller=optuna", "evolution.stationary=true")
    env("controller=static", "evolution.stationary=true")  # an arm that does not select: fine
    env("controller=optuna", "reward=lagrangian")  # a re-test under constraints: they are its guardrails
    with pytest.raises(ConfigError, match=r"`reward.constraints` are not supported by arm 'optuna_ab'"):
        env("controller=optuna_ab", "reward=lagrangian")  # a live arm still refuses them


@pytest.mark.parametrize("bound, passes", [(1e6, True), (-1.0, False)])
def test_a_retest_under_constraints_deploys_only_a_leader_whose_own_users_meet_the_bounds(tmp_path, bound, passes):
    """Constraints are the re-test's guardrails: with a bound every leader meets, the winner is the unconstrained
    re-test's; with one none can meet (violations per request <= -1), every leader that beat the incumbent is
    passed over and the incumbent stays. Each re-test row carries the leader's own users' outer metrics."""
    summary = run(compose_config("experiment=smoke", "controller=optuna", "evolution.windows=10", "evolution.exploit=1",
                                 "evolution.select=retest", "evolution.leaders=4", "evolution.retest=6",
                                 "evolution.warmup=3", "reward=lagrangian", f"reward.constraints.0.bound={bound}",
                                 *TINY_RUN), out_dir=tmp_path)
    f = pd.read_csv(tmp_path / "metrics.csv")
    retest, exploit_row = f[4:10], f.iloc[10]
    own = retest["evolution/candidate/outer/risk/violations_per_request"]
    assert own.notna().all() and (own >= 0).all()
    lead = retest["retest/leader"].astype(int)
    relative = retest["evolution/candidate_reward"] - retest["evolution/control_reward"]
    means = relative.groupby(lead).mean()
    finalists = lead[2:].unique()  # (4 leaders once each, then the better 2 twice each)
    winner = max(finalists, key=lambda i: (means[i], -i))
    chosen = int(exploit_row["selection/leader"])
    if passes:
        assert chosen == (winner if means[winner] > 0 else -1)
        assert exploit_row["selection/guardrail_breaches"] == 0
    else:
        assert chosen == -1
        ahead = sorted(means.index, key=lambda i: (-(lead == i).sum(), -means[i], i))
        breached = next((k for k, i in enumerate(ahead) if not means[i] > 0), len(ahead))
        assert exploit_row["selection/guardrail_breaches"] == breached >= 1  # (the leaders beat the incumbent by 0.1-0.2)
    assert summary["windows"] == 11


def test_optuna_ab_explores_on_a_declared_share_up_to_95_percent_control():
    from envs.validation import ConfigError

    cfg = load_config(compose_config("experiment=smoke", "controller=optuna_ab", "controller.options.control_share=0.8"))
    assert cfg.controller.typed_options().control_share == 0.8  # the candidate explored on 20% of the users
    with pytest.raises(ConfigError, match=r"`controller.options.control_share` must be in \[0.05, 0.95\] \(got 0.99\)"):
        load_config(compose_config("experiment=smoke", "controller=optuna_ab", "controller.options.control_share=0.99"))


@pytest.mark.parametrize("arm, experiment, residual", [("ppo", "smoke", "false"), ("ppo", "smoke", "true"),
                                                      ("ppo_composition", "c4_composition", "false")])
def test_ppo_pretrains_on_simulated_platforms_and_the_training_reaches_its_policy(tmp_path, arm, experiment, residual):
    """``controller.options.pretrain``: PPO first trains on fresh worlds of the run's config, each a simulated run
    frozen at a checkpoint every ``pretrain_gap`` windows for ``pretrain_hold`` replays (common random numbers, the
    incumbent served once per checkpoint as the reference), its curve written as ``pretrain.csv`` (and a figure), its
    numbers in the summary, its policy in ``policy.zip``; the run itself still serves exactly ``windows`` +
    ``exploit`` windows. With the same agent seed the pre-trained policy's weights are far from the untrained
    one's, and with a learning rate of ~0 they are not (what moved them is the training, not the random streams it
    advanced)."""
    from stable_baselines3 import PPO

    base = ["controller.options.n_steps=2", "controller.options.batch_size=2", "evolution.windows=3",
            "evolution.exploit=1", "logger.plots=true", f"controller.options.residual={residual}", *TINY_RUN[:1],
            *TINY_RUN[2:]]
    pre = ["controller.options.pretrain=2", "controller.options.pretrain_hold=2", "controller.options.pretrain_gap=1"]

    def weights(name: str, *overrides: str) -> np.ndarray:
        run(compose_config(f"experiment={experiment}", f"controller={arm}", *base, *overrides), out_dir=tmp_path / name)
        return PPO.load(tmp_path / name / "policy.zip", device="cpu").policy.parameters_to_vector()

    trained, cold = weights("pre", *pre), weights("cold")
    summary = json.loads((tmp_path / "pre" / "summary.json").read_text())
    curve = pd.read_csv(tmp_path / "pre" / "pretrain.csv")
    # 3 windows: checkpoints after 0, 1, 2 windows of a simulated run, 2 replays each; then a fresh world
    assert curve["episode"].tolist() == [0] * 6 + [1] * 6 and curve["checkpoint"].tolist() == [0, 0, 1, 1, 2, 2] * 2
    np.testing.assert_allclose(curve["gain"], curve["reward"] - curve["incumbent"])
    assert curve.groupby(["episode", "checkpoint"])["incumbent"].nunique().eq(1).all()
    assert curve["day"][:6].is_monotonic_increasing and curve["day"][6] < curve["day"][5]  # a fresh world starts over
    assert (tmp_path / "pre" / "figures" / "pretrain.png").stat().st_size > 0
    gains = curve.groupby("episode")["gain"].mean()
    assert summary["pretrain/windows"] == 12 and summary["pretrain/episodes"] == 2
    assert summary["pretrain/first_episode_gain"] == pytest.approx(gains[0])
    assert summary["pretrain/last_episode_gain"] == pytest.approx(gains[1])
    assert summary["windows"] == 4 and "pretrain/windows" not in json.loads((tmp_path / "cold" / "summary.json").read_text())
    assert np.abs(trained - cold).max() > 1e-3
    if arm == "ppo" and residual == "false":  # the control, once: what moved the weights is the training
        frozen = ("controller.options.learning_rate=1e-12",)
        assert np.abs(weights("pre0", *pre, *frozen) - weights("cold0", *frozen)).max() < 1e-6


@pytest.mark.parametrize("overrides, message", [
    (["controller.options.pretrain=-1"], r"controller.options.pretrain"),
    (["controller.options.pretrain=4", "controller.options.pretrain_hold=0"], r"controller.options.pretrain_hold"),
    (["controller.options.pretrain_gap=0"], r"controller.options.pretrain_gap"),
])
def test_bad_pretraining_settings_are_refused_with_the_key(overrides, message):
    from envs.validation import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(compose_config("experiment=smoke", "controller=ppo", *overrides))


def test_a_residual_action_is_a_step_from_the_incumbent_clipped_to_the_box():
    """``controller.options.residual``: PPO's action 0 serves the incumbent (the policy starts at the hand-tuned
    config and learns where to deviate), a step is added to the incumbent's action and clipped to the box."""
    from agents.evolution.env import EvolutionEnv
    from experiments.arms import Residual

    env = Residual(EvolutionEnv(world={"num_items": 300, "num_users": 600, "num_topics": 4, "num_creators": 20},
                                window=100, concurrency=50, warmup=1))
    with pytest.raises(Exception, match="reset"):
        env.step(np.zeros(env.action_space.shape, np.float32))
    env.reset(seed=0)
    inner = env.unwrapped
    incumbent = dict(inner.target.config)
    *_, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert info["config"] == incumbent
    far = np.full(env.action_space.shape, 5.0, np.float32)
    np.testing.assert_array_equal(env.action(far), env.action_space.high)
    step = np.full(env.action_space.shape, 0.1, np.float32)
    np.testing.assert_allclose(env.action(step), np.clip(inner.codec.encode({k: incumbent[k] for k in inner.codec.params.by_name})
                                                         + 0.1, -1, 1), atol=1e-6)


@pytest.mark.slow
def test_the_automodel_arm_screens_offline_gates_online_and_records_it(tmp_path):
    """automodel_models on the linear baseline: rounds of recorded windows, feature edits and LLM-parsed designs
    screened offline, each round's best gated by an A/B test; every parse and gate in the store, the counts in the
    summary, the gate windows in the metrics, then the exploit windows."""

    cfg = compose_config("experiment=c6_automodel", "variant=c6_automodel_models", "evolution.windows=10",
                         "evolution.exploit=2", "evolution.warmup=1", "controller.options.updates=100", "seed=0",
                         *TINY_RUN)
    summary = run(cfg, out_dir=tmp_path)
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert len(m) == 12 and (m["phase"] == "exploit").sum() == 2
    url, exp_id = run_store(tmp_path)
    with KnowledgeStore(url) as store:
        parses = store.designs(agent="autotrain", exp_id=exp_id)
        gates = store.rollouts(exp_id)
    assert len(parses) == 5 and {p.document["card"] for p in parses} == {"wide_and_deep", "dcn", "deepfm", "mmoe", "din"}
    assert all(p.valid or p.error for p in parses)
    assert summary["automodel/gated"] == len(gates) >= 1 and summary["automodel/rounds"] >= 2
    assert len(gates) <= (m["phase"] == "gate").sum() <= 2 * len(gates)  # each gate's windows, recorded as served
    for g in gates:
        assert g.decision in ("accepted", "rejected") and g.reasons[0].startswith("offline AUC gain +")
        assert g.agent.startswith("automodel_models/") and g.candidate_config["candidate"]


@pytest.mark.slow
def test_autotrain_searches_the_winners_recipe_when_asked(tmp_path):
    """`recipe_trials: 3`: after a model round's screen, AutoTrain searches the winning design's training recipe offline
    (3 trials at the same budget, the screen's recipe first) and trains the candidate with the best; each search is in
    the store (`autotrain/recipe`), one per round that found a winner (min_gain -1: every model round does)."""
    cfg = compose_config("experiment=c6_automodel", "controller=autotrain", "evolution.windows=8", "evolution.exploit=1",
                         "evolution.warmup=1", "controller.options.updates=100", "controller.options.recipe_trials=3",
                         "controller.options.min_gain=-1.0", "seed=0", *TINY_RUN)
    summary = run(cfg, out_dir=tmp_path)
    url, exp_id = run_store(tmp_path)
    with KnowledgeStore(url) as store:
        searches = store.designs(agent="autotrain/recipe", exp_id=exp_id)
        gates = store.rollouts(exp_id)
    assert len(searches) == len(gates) >= 1 and summary["automodel/rounds"] >= 1
    for d in searches:
        trials = d.document["trials"]
        assert len(trials) == 3 and all(t[0]["updates"] == 100 for t in trials)
        assert d.reward == pytest.approx(max(a for _, a in trials) - trials[0][1])


def test_knowledge_written_by_one_experiment_warm_starts_the_next(tmp_path):
    """Long-term memory: a second experiment pointed at the same store, with ``warm_start``, serves the best config the
    first one found in its first window (a stationary world: the same config earns the same reward), where the first
    one, cold, needed several windows; experiments with another reward are not used."""
    store = f"sqlite:///{tmp_path / 'knowledge.db'}"
    common = ("experiment=smoke", "controller=optuna", "evolution.stationary=true", "evolution.windows=6",
              "evolution.exploit=0", "seed=0", f"store={store}", *TINY_RUN)
    run(compose_config(*common, "reward=outer_only"), out_dir=tmp_path / "other_reward")  # not comparable: ignored
    cold = run(compose_config(*common), out_dir=tmp_path / "cold")
    cold_rewards = pd.read_csv(tmp_path / "cold" / "metrics.csv")["reward"].to_numpy()
    warm = run(compose_config(*common, "controller.options.warm_start=true"), out_dir=tmp_path / "warm")
    warm_rewards = pd.read_csv(tmp_path / "warm" / "metrics.csv")["reward"].to_numpy()
    assert int(np.argmax(cold_rewards)) >= 2  # the cold search found its best late (seed 0)
    assert warm_rewards[0] == pytest.approx(cold_rewards.max(), rel=1e-9)  # the warm one starts there
    assert warm_rewards[0] > cold_rewards[0]
    assert (warm["warm_start/trials"], warm["warm_start/experiments"]) == (6.0, 1.0)  # only the cold run's trials
    assert "warm_start/trials" not in cold


def test_optuna_phases_probes_each_phase_and_seeds_the_warm_study_from_the_nearest_phases(tmp_path):
    common = ("experiment=c7_knowledge", "evolution.windows=12", "seed=0", *TINY_RUN)
    warm = run(compose_config(*common, "controller=optuna_phases_warm"), out_dir=tmp_path / "warm")
    cold = run(compose_config(*common, "controller=optuna_phases"), out_dir=tmp_path / "cold")
    w, c = (pd.read_csv(tmp_path / arm / "metrics.csv") for arm in ("warm", "cold"))
    initial = w["config/mmr_lambda"][0]
    assert (w["config/mmr_lambda"][::4] == initial).all() and (c["config/mmr_lambda"][::4] == initial).all()  # probes
    np.testing.assert_array_equal(w["reward"][:5], c["reward"][:5])  # the same until the first warm-started study
    assert (warm["warm_start/trials"], warm["warm_start/phases"]) == (4.0 + 8.0, 3.0)  # phase 2: 4 trials, phase 3: 8
    assert cold["warm_start/trials"] == 0.0
    url, exp_id = run_store(tmp_path / "warm")
    with KnowledgeStore(url) as store:
        phases = store.designs(agent="knowledge/phases/baseline/rerank/mmr", exp_id=exp_id)
    assert [len(d.document["trials"]) for d in phases] == [4, 4, 4]
    assert [d.document["probe"] for d in phases] == w["reward"][::4].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("coordinate", [True, False])
def test_the_automodel_system_runs_its_agents_through_the_coordinator(tmp_path, coordinate):
    """automodel_system (C8): AutoTrain, AutoPerf and re-rank evolution propose from window 2 on; every window is
    served by the coordinator and recorded with the share its challengers served and the resource model's FLOPs;
    every decision is in the store; coordinated, no two tests ever ran on the pipeline at once."""
    cfg = compose_config("experiment=c8_system", f"variant=c8_{'' if coordinate else 'un'}coordinated",
                         "evolution.windows=8", "evolution.exploit=2", "evolution.warmup=1",
                         "controller.options.updates=100", "seed=0", *TINY_RUN)
    summary = run(cfg, out_dir=tmp_path)
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert len(m) == 10 and (m["phase"] == "exploit").sum() == 2
    evolution = m[m["phase"] != "exploit"]
    assert (evolution["coordinator/test_share"].iloc[:2] == 0).all()  # nothing proposed before 2 recorded windows
    assert evolution["coordinator/test_share"].iloc[2:].max() > 0
    assert (m["outer/cost/flops_per_request"] > 0).all()
    url, exp_id = run_store(tmp_path)
    with KnowledgeStore(url) as store:
        decisions = [r for r in store.rollouts(exp_id) if r.agent.startswith("coordinator/")]
    decided = summary["coordinator/shipped"] + summary["coordinator/rejected"]
    assert len(decisions) == decided >= 1 and summary["coordinator/proposals"] >= decided
    assert {r.agent.split("/")[1].split("#")[0] for r in decisions} <= {"autotrain", "autoperf", "rerank"}
    if coordinate:
        assert summary["coordinator/overlapping_windows"] == 0 and summary["coordinator/test_share"] <= 0.5 + 0.05


@pytest.mark.slow
def test_the_llm_designer_proposes_through_the_coordinator(tmp_path):
    """`agents: [designer, rerank]`: the bundled LLM's edits of the running pipeline go to the coordinator as agent
    edits (`agents.evolution.designer.agent_edits`), are tested on a share of the users and decided like any other
    proposal, and every design it made is in the store (tested ones valid, inexpressible ones with their reason)."""
    cfg = compose_config("experiment=c8_system", "variant=c8_coordinated", "evolution.windows=8", "evolution.exploit=1",
                         "evolution.warmup=1", "controller.options.updates=100",
                         "controller.options.agents=[designer,rerank]", "seed=0", *TINY_RUN)
    summary = run(cfg, out_dir=tmp_path)
    assert summary.get("coordinator/designer/shipped", 0) + summary.get("coordinator/designer/rejected", 0) >= 1
    assert summary["coordinator/overlapping_windows"] == 0
    url, exp_id = run_store(tmp_path)
    with KnowledgeStore(url) as store:
        designs = store.designs(agent="designer", exp_id=exp_id)
        decisions = [r for r in store.rollouts(exp_id) if r.agent.startswith("coordinator/designer")]
    assert designs and len(decisions) >= 1


def test_a_static_run_with_the_resource_model_carries_constant_flops(tmp_path):
    """evolution.resources: the serving code is timed at reset and every window carries the resource model's terms;
    a static config's ranker FLOPs per request do not move (the same fusion size and ranker throughout)."""
    cfg = compose_config("experiment=smoke", "controller=static", "evolution.resources=true", "evolution.windows=3",
                         "seed=0", *TINY_RUN)
    run(cfg, out_dir=tmp_path)
    m = pd.read_csv(tmp_path / "metrics.csv")
    flops = m["outer/cost/flops_per_request"]
    assert flops.nunique() == 1 and flops.iloc[0] > 0
    assert (m["outer/cost/latency_p99_ms"] >= m["outer/cost/latency_p50_ms"]).all()
