"""The experiment app end to end: outputs of one run, resume from the store, the arms, multirun + plot + report."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from agents.infra.store import KnowledgeStore
from experiments.loggers import read_wandb_history
from experiments.plot import run_store
from experiments.run import run
from rewards.outer import OUTER_KEYS

CONF = Path(__file__).resolve().parents[2] / "conf"
RERANK_PARAMS = ("mmr_lambda", "freshness_boost", "risk_threshold", "exposure_cap", "learn_violations", "mmr_pool")


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def quiet_home(tmp_path, monkeypatch):
    """Everything wandb and matplotlib write goes under tmp_path; wandb offline, never prompting."""
    env = {"WANDB_DIR": tmp_path, "WANDB_CONFIG_DIR": tmp_path / "wandb-config", "WANDB_CACHE_DIR": tmp_path / "wandb-cache",
           "WANDB_DATA_DIR": tmp_path / "wandb-data", "MPLCONFIGDIR": tmp_path / "mpl"}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("WANDB_MODE", "offline")
    return {**os.environ, **{k: str(v) for k, v in env.items()}, "WANDB_MODE": "offline", "MPLBACKEND": "Agg"}


@pytest.mark.slow
def test_smoke_run_writes_table_store_figures_wandb_and_tensorboard(tmp_path, quiet_home):
    out = tmp_path / "run"
    summary = run(compose_config("experiment=smoke", "controller=random", "seed=1"), out_dir=out)

    frame = pd.read_csv(out / "metrics.csv")
    assert len(frame) == 4 and summary["windows"] == 4
    expected = ["experiment", "arm", "controller", "seed", "step", "day", "reward", "evolution/best_reward",
                *OUTER_KEYS, *(f"layered/rerank/{t}" for t in ("inner", "outer", "penalty", "inner_weight", "total")),
                "inner/rerank/intra_list_diversity", "inner/rerank/risk_rate", "regime/share/new",
                "regime/clicks_per_request", *(f"config/{p}" for p in RERANK_PARAMS)]
    assert not set(expected) - set(frame.columns), set(expected) - set(frame.columns)
    assert frame["step"].tolist() == [0, 1, 2, 3]
    assert (frame[["experiment", "arm", "controller"]] == ["smoke", "random", "random"]).all().all()
    assert (frame["seed"] == 1).all() and frame["day"].is_monotonic_increasing
    np.testing.assert_allclose(frame["reward"], frame["layered/rerank/total"])
    np.testing.assert_allclose(frame["evolution/best_reward"], frame["reward"].cummax())
    assert frame["config/mmr_lambda"].nunique() == 4  # random search: a new config every window
    parquet = pd.read_parquet(out / "metrics.parquet")
    pd.testing.assert_frame_equal(parquet[expected].reset_index(drop=True), frame[expected], check_dtype=False)

    assert summary["store"] == os.environ["AGENTIC_RS_STORE"]  # the shared store, here the test worker's
    with KnowledgeStore(summary["store"]) as store:
        exp = store.experiment(summary["experiment_id"])
        assert (exp.name, exp.seed, exp.status, exp.run_dir) == ("smoke/random", 1, "finished", str(out.resolve()))
        trials = store.trials(exp.id)
    assert [t.step for t in trials] == [0, 1, 2, 3]
    np.testing.assert_allclose([t.reward for t in trials], frame["reward"])
    assert all(t.controller == "random" and t.agent == "baseline/rerank/mmr" for t in trials)
    assert trials[2].config["mmr_lambda"] == pytest.approx(frame["config/mmr_lambda"][2])
    assert trials[0].outer["outer/engagement/clicks_per_request"] == pytest.approx(frame[OUTER_KEYS[0]][0])
    assert len(trials[0].regime) == 3 + 8 + 6  # the observation acted on: segment shares, regime scalars, config

    for name in ("reward", "decomposition", "pareto"):
        img = mpimg.imread(out / "figures" / f"{name}.png")
        assert img.shape[0] > 300 and img.shape[1] > 500, name
    assert json.loads((out / "summary.json").read_text())["final/reward_mean"] == pytest.approx(frame["reward"].mean())
    assert "num_items: 600" in (out / "config.yaml").read_text()

    # wandb: an offline run in <run dir>/wandb whose history holds every window, whose summary has the finals
    assert len(list((out / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    history, wb_summary = read_wandb_history(out)
    rows = [h for h in history if "reward" in h]
    assert [h["_step"] for h in rows] == [0, 1, 2, 3]
    np.testing.assert_allclose([h["reward"] for h in rows], frame["reward"])
    assert wb_summary["final/reward_mean"] == pytest.approx(frame["reward"].mean())
    assert len(list((out / "wandb").glob("offline-run-*/files/media/images/figures/*.png"))) == 4  # + segments

    # TensorBoard: scalars per window and the figures
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert {"reward", "outer/engagement/clicks_per_request", "config/mmr_lambda"} <= set(acc.Tags()["scalars"])
    events = acc.Scalars("reward")
    assert [e.step for e in events] == [0, 1, 2, 3]
    np.testing.assert_allclose([e.value for e in events], frame["reward"], rtol=1e-6)
    assert {"figures/reward", "figures/pareto"} <= set(acc.Tags()["images"])


def test_a_killed_run_resumes_from_the_store_and_replays_the_same_windows(tmp_path, quiet_home, monkeypatch, caplog):
    cfg = compose_config("experiment=smoke", "controller=optuna", "logger=csv", "logger.plots=false")
    original = KnowledgeStore.add_trial

    def killed_at_step_2(self, exp_id, step, *args, **kwargs):
        if step == 2:
            raise KeyboardInterrupt  # the process dies after committing windows 0 and 1
        return original(self, exp_id, step, *args, **kwargs)

    monkeypatch.setattr(KnowledgeStore, "add_trial", killed_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out_dir=tmp_path)
    with KnowledgeStore(os.environ["AGENTIC_RS_STORE"]) as store:
        (exp,) = [e for e in store.experiments() if e.run_dir == str(tmp_path.resolve())]
        assert exp.status == "running" and store.completed_steps(exp.id) == {0, 1}
        first = [t.reward for t in store.trials(exp.id)]

    monkeypatch.setattr(KnowledgeStore, "add_trial", original)
    with caplog.at_level(logging.INFO):
        run(cfg, out_dir=tmp_path)
    assert "2 windows already in the store" in caplog.text
    assert "not deterministic" not in caplog.text  # the replayed windows earned the stored rewards
    with KnowledgeStore(os.environ["AGENTIC_RS_STORE"]) as store:
        (exp,) = [e for e in store.experiments() if e.run_dir == str(tmp_path.resolve())]  # the same one, resumed
        trials = store.trials(exp.id)
        assert exp.status == "finished" and [t.step for t in trials] == [0, 1, 2, 3]
    assert [t.reward for t in trials[:2]] == first
    np.testing.assert_allclose([t.reward for t in trials], pd.read_csv(tmp_path / "metrics.csv")["reward"])


def test_ppo_arm_learns_online_for_exactly_the_runs_windows(tmp_path, quiet_home):
    cfg = compose_config("experiment=smoke", "controller=ppo", "controller.options.n_steps=3",
                         "controller.options.batch_size=3", "evolution.windows=5", "logger=csv", "logger.plots=false")
    run(cfg, out_dir=tmp_path)
    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert frame["step"].tolist() == [0, 1, 2, 3, 4]  # PPO's rollouts of 3 stopped after the 5th window
    assert len(frame.filter(like="config/").drop_duplicates()) >= 3  # its stochastic policy picks the configs
    url, exp_id = run_store(tmp_path)
    with KnowledgeStore(url) as store:
        assert len(store.trials(exp_id)) == 5


def test_lagrangian_reward_penalises_violations_and_steps_its_multiplier(tmp_path, quiet_home):
    cfg = compose_config("experiment=smoke", "controller=random", "reward=lagrangian", "evolution.windows=6",
                         "logger=csv", "logger.plots=false")
    run(cfg, out_dir=tmp_path)
    f = pd.read_csv(tmp_path / "metrics.csv")
    metric, bound, scale, lr = "outer/risk/violations_per_request", 0.05, 0.05, 0.1
    lam = f[f"constraint/{metric}/lambda"].to_numpy()
    excess = f[metric].to_numpy() - bound
    before = np.concatenate([[0.0], lam[:-1]])  # the penalty uses the multiplier before this window's dual step
    np.testing.assert_allclose(lam, np.maximum(0.0, before + lr * excess / scale))
    np.testing.assert_allclose(f["layered/rerank/penalty"], before * excess, atol=1e-12)
    w = f["layered/rerank/inner_weight"]
    np.testing.assert_allclose(f["reward"], w * f["layered/rerank/inner"] + (1 - w) * f["layered/rerank/outer"]
                               - f["layered/rerank/penalty"])
    assert (lam > 0).any()  # random re-rank configs do break the bound


def test_a_run_on_the_grounded_world(tmp_path, quiet_home):
    """`world=ml100k` swaps MovieLens-100K's movies and users into any preset's run (every preset validates on it:
    test_presets; the smoke suite runs them all on it)."""
    cfg = compose_config("experiment=smoke", "controller=random", "world=ml100k", "logger=csv", "logger.plots=false")
    run(cfg, out_dir=tmp_path)
    f = pd.read_csv(tmp_path / "metrics.csv")
    assert len(f) == cfg.evolution.windows and (f["outer/engagement/clicks_per_request"] > 0).all()
    assert "data: ml100k" in (tmp_path / "config.yaml").read_text()


def _run_cli(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_a_parallel_sweep_writes_every_window_once_to_one_postgresql_store(tmp_path, quiet_home, postgres_url):
    """Concurrent writers from a parallel sweep (joblib, 2 jobs) against a PostgreSQL knowledge store set once in the
    environment: every run registers one experiment, every window is one trial, none lost, none twice."""
    from sqlalchemy import make_url

    url = postgres_url
    sweep = tmp_path / "multirun"
    _run_cli(["experiments.run", "-m", "experiment=smoke", "logger=csv", "logger.plots=false", "logger.progress=false",
              f"hydra.sweep.dir={sweep}"], tmp_path, {**quiet_home, "AGENTIC_RS_STORE": url})
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(runs) == 4
    with KnowledgeStore(url) as store:
        experiments = store.experiments()
        trials = store.to_frame("trials")
        for run_dir in runs:
            stored_url, exp_id = run_store(run_dir)
            assert make_url(stored_url) == make_url(url) and store.experiment(exp_id).run_dir == str(run_dir.resolve())
            frame = pd.read_csv(run_dir / "metrics.csv")
            np.testing.assert_allclose([t.reward for t in store.trials(exp_id)], frame["reward"])
    assert len(experiments) == 4 and all(e.status == "finished" for e in experiments)
    assert len(trials) == 4 * 4 and not trials.duplicated(["experiment_id", "step"]).any()


@pytest.mark.slow
def test_multirun_with_joblib_then_plot_and_report(tmp_path, quiet_home, capsys):
    sweep = tmp_path / "multirun"
    proc = _run_cli(["experiments.run", "-m", "experiment=smoke", "logger=csv", "logger.plots=false", "logger.progress=false",
                     f"hydra.sweep.dir={sweep}"], tmp_path, quiet_home)
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0-static-s0", "1-static-s1", "2-random-s0", "3-random-s1"]  # 2 arms x 2 seeds from the preset
    experiments = set()
    for job in jobs:
        assert (sweep / job / "metrics.parquet").exists() and (sweep / job / ".hydra" / "config.yaml").exists()
        url, exp_id = run_store(sweep / job)  # the 4 runs wrote to one shared store, 2 at a time
        with KnowledgeStore(url) as store:
            assert len(store.trials(exp_id)) == 4 and store.experiment(exp_id).status == "finished"
        experiments.add((url, exp_id))
    assert len(experiments) == 4 and len({url for url, _ in experiments}) == 1

    from experiments.plot import load_metrics, load_shifts, make_figures

    frame = load_metrics(sweep)
    assert frame.groupby(["arm", "seed"]).size().to_dict() == {(a, s): 4 for a in ("random", "static") for s in (0, 1)}
    assert load_shifts(sweep) == [(1, "segment_mix"), (2, "topic_shock")]
    figures = make_figures(frame, load_shifts(sweep))
    assert set(figures) == {"reward", "decomposition", "pareto", "segments"}
    ax = figures["reward"].axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("simulated day", "layered reward (per window)")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["static (n=2)", "random (n=2)"]
    assert len(ax.lines) == 2 + 1  # one mean curve per arm, the day-1 shift (day 2 lies beyond the run)
    assert len(ax.collections) == 2  # one CI band per arm
    assert [a.get_title() for a in figures["decomposition"].axes] == [
        "inner term of rerank (signed metric)", "outer term (platform objective)", "total layered reward"]
    assert figures["pareto"].axes[0].get_xlabel() == "policy violations per request (lower is better)"
    for fig in figures.values():
        plt.close(fig)

    from experiments.report import main as report_main

    report = tmp_path / "report.md"
    capsys.readouterr()
    report_main([str(sweep), "--out", str(report)])  # as `python -m experiments.report <sweep> --out report.md`
    printed = capsys.readouterr().out
    text = report.read_text()
    for name in ("S1", "S2"):
        (line,) = [ln for ln in text.splitlines() if ln.startswith(f"- **{name}: ")]
        assert any(f"**{name}: {v.upper()}**" in line for v in ("held", "contradicted", "inconclusive")), line
        assert "95% CI [" in line and "paired by seed, n=2 seeds" in line
        assert line[2:].rstrip() in printed  # the CLI prints the claim lines too
    assert "| S1 | reward | random | static |" in text
    for name in ("reward", "decomposition", "pareto", "segments", "claims"):  # the report draws the figures next to itself
        assert f"![{name}](figures/{name}.png)" in text
        assert mpimg.imread(tmp_path / "figures" / f"{name}.png").shape[0] > 300


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_sweep(tmp_path, quiet_home):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "multirun"
    _run_cli(["experiments.run", "-m", "experiment=smoke", "hydra/launcher=subprocesses", "controller=static", "seed=0,1",
              "evolution.windows=2", "logger=csv", "logger.plots=false", "logger.progress=false",
              f"hydra.sweep.dir={sweep}"], tmp_path, quiet_home)
    assert (sweep / ".submitit").is_dir()
    for job in ("0-static-s0", "1-static-s1"):
        assert len(pd.read_csv(sweep / job / "metrics.csv")) == 2
