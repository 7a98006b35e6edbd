"""The demo (`make demo`) is a preset of the experiment app: `experiment=demo` composes to the intended arms and world,
and a shrunk copy of its sweep runs through :func:`experiments.run.run` and reports like the ablations."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from hydra import compose, initialize_config_dir

from experiments.ablations import SMOKE_OVERRIDES
from experiments.arms import ARMS
from experiments.config import load_config
from experiments.plot import load_metrics
from experiments.report import SUMMARY_METRICS, write_report
from experiments.run import build_env, run

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
DEMO_ARMS = ["static_composition", "individual", "alternating"]  # the static baseline, Optuna, the alternation schedule


def compose_config(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def sweep(preset: str) -> tuple[list[str], str]:
    """The arms a preset's multirun launches, and its seeds as written (``0,1`` or ``range(5)``)."""
    params = compose_config(f"experiment={preset}", hydra=True).hydra.sweeper.params
    return str(params["controller"]).split(","), str(params["seed"])


def test_make_demo_runs_the_demo_preset_through_the_app_then_reports_it():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "the Makefile has no demo target"
    lines = recipe.group(1).splitlines()
    assert "-m experiments.run -m experiment=demo " in lines[0] and "hydra.sweep.dir=$(OUT)/runs" in lines[0]
    assert "-m experiments.report $(OUT)/runs" in lines[1]


def test_demo_preset_is_the_c4_comparison_on_the_shifting_world_with_two_seeds():
    arms, seeds = sweep("demo")
    assert arms == DEMO_ARMS and seeds == "0,1"
    c4_arms, _ = sweep("c4_composition")
    assert set(arms) <= set(c4_arms)  # the ablation's arms, not a parallel stack
    cfg = load_config(compose_config("experiment=demo"))
    c4 = load_config(compose_config("experiment=c4_composition"))
    assert cfg.name == "demo" and cfg.evolution.agent == c4.evolution.agent and cfg.reward == c4.reward
    assert [(s.day, s.kind) for s in cfg.world.shifts] == [(1, "segment_mix"), (2, "topic_shock")]
    # both shifts fall inside the evolution: a window is window / concurrency / steps_per_day simulated days
    days_per_window = cfg.evolution.window / cfg.evolution.concurrency / cfg.world.steps_per_day
    assert (cfg.evolution.warmup + cfg.evolution.windows) * days_per_window > 2
    assert cfg.evolution.exploit >= 1  # what each arm found is served after the search
    assert not cfg.logger.wandb.enabled and not cfg.logger.tensorboard.enabled  # the table and the store only
    assert {n for c in cfg.claims for n in (*c.a, *c.b)} <= set(arms)
    for arm in arms:
        assert ARMS[arm].env == "composition"
        build_env(load_config(compose_config("experiment=demo", f"controller={arm}")))  # validates; no simulation


@pytest.mark.slow
def test_shrunk_demo_sweep_runs_through_the_app_and_reports_every_arm(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    arms, seeds = sweep("demo")[0], [0, 1]
    shrink = [o for o in SMOKE_OVERRIDES if not o.startswith("seed=")]  # the ablation suite's reduced settings
    runs = tmp_path / "runs"
    for num, (arm, seed) in enumerate(itertools.product(arms, seeds)):  # the order the multirun launches them
        summary = run(compose_config("experiment=demo", f"controller={arm}", f"seed={seed}", *shrink),
                      runs / f"{num}-{arm}-s{seed}")
        assert (summary["arm"], summary["seed"]) == (arm, seed)

    frame = load_metrics(runs)
    per_run = frame[frame["phase"] != "exploit"].groupby(["arm", "seed"]).size()
    assert set(per_run.index) == set(itertools.product(arms, seeds))
    windows = load_config(compose_config("experiment=demo", *shrink)).evolution.windows
    assert (per_run >= windows).all()  # every decision window (the alternation adds sentinel and gate windows)
    assert (frame[frame["phase"] == "exploit"].groupby(["arm", "seed"]).size() == 1).all()
    for metric in ("reward", *SUMMARY_METRICS, "segment/new/clicks_per_request"):  # the ablations' metric names
        assert metric in frame and frame[metric].notna().all(), metric

    report, results = write_report(runs, tmp_path / "report.md")
    assert [r.claim.name for r in results] == ["D1", "D2", "D3"]
    assert all(r.verdict != "untestable" and r.n == 2 for r in results)  # every arm and seed ran
    text = report.read_text()
    for arm in arms:
        assert re.search(rf"^\| {arm} \| 2 \| ", text, re.M), f"no summary row for {arm}"
    for name in ("reward", "decomposition", "pareto", "segments", "claims"):
        assert f"![{name}](figures/{name}.png)" in text
        assert mpimg.imread(tmp_path / "figures" / f"{name}.png").shape[0] > 300, name
