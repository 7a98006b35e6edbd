"""Plots of runs: curves with CI bands and shifts, the reward's decomposition, segment bars, the Pareto plot, the CLI."""

from __future__ import annotations

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml

from experiments.plot import (
    CLICKS,
    FLOPS,
    VIOLATIONS,
    day_curves,
    decomposition_figure,
    load_metrics,
    load_shifts,
    main,
    make_figures,
    pareto_figure,
    pareto_front,
    reward_figure,
    segment_figure,
)
from rewards.stats import mean_ci

SHIFTS = [(1, "segment_mix"), (9, "topic_shock")]  # the second lies beyond the data


def synthetic(arms=("static", "optuna"), seeds=(0, 1, 2), steps=6, segments=False) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for k, arm in enumerate(arms):
        for seed in seeds:
            for step in range(steps):
                inner, outer = 0.5 + 0.1 * k + 0.02 * rng.standard_normal(), 0.3 + 0.05 * k + 0.01 * step
                row = {"arm": arm, "seed": seed, "step": step, "day": 0.3 * (step + 1),
                       "layered/rerank/inner": inner, "layered/rerank/outer": outer, "layered/rerank/inner_weight": 0.6,
                       "reward": 0.6 * inner + 0.4 * outer, CLICKS: outer, VIOLATIONS: 0.01 + 0.05 * k + 0.005 * seed}
                row["layered/rerank/total"] = row["reward"]
                if segments:
                    for s, base in (("new", 0.1), ("casual", 0.3), ("heavy", 0.5)):
                        row[f"segment/{s}/ctr"] = base + 0.05 * k
                rows.append(row)
    return pd.DataFrame(rows)


def test_reward_figure_has_mean_curves_ci_bands_and_shift_marks():
    frame = synthetic()
    fig = reward_figure(frame, SHIFTS)
    reward_ax, clicks_ax = fig.axes
    assert (reward_ax.get_xlabel(), reward_ax.get_ylabel()) == ("simulated day", "layered reward (per window)")
    assert clicks_ax.get_ylabel() == "clicks per request"
    assert [t.get_text() for t in reward_ax.get_legend().get_texts()] == ["static (n=3)", "optuna (n=3)"]
    assert len(reward_ax.lines) == 2 + 1 and len(reward_ax.collections) == 2  # curves + the day-1 shift; bands
    curve = reward_ax.lines[0]
    static = frame[frame["arm"] == "static"]
    np.testing.assert_allclose(curve.get_xdata(), 0.3 * np.arange(1, 7))
    np.testing.assert_allclose(curve.get_ydata(), static.groupby("step")["reward"].mean())
    band = reward_ax.collections[0].get_paths()[0].vertices[:, 1]
    lo, hi = mean_ci(static[static["step"] == 0]["reward"])[1:]
    assert np.isclose(band, lo).any() and np.isclose(band, hi).any()  # the band spans each step's 95% t-interval
    shift = reward_ax.lines[2]
    assert list(shift.get_xdata()) == [1, 1] and shift.get_linestyle() == "--"
    plt.close(fig)


def test_one_seed_draws_no_band():
    fig = reward_figure(synthetic(seeds=(0,)))
    assert len(fig.axes[0].collections) == 0 and len(fig.axes[0].lines) == 2
    plt.close(fig)


def test_decomposition_shows_inner_outer_and_total_with_the_mix():
    fig = decomposition_figure(synthetic(), SHIFTS)
    assert [ax.get_title() for ax in fig.axes] == [
        "inner term of rerank (signed metric)", "outer term (platform objective)", "total layered reward"]
    assert all(len(ax.lines) == 3 for ax in fig.axes)
    assert "reward = 0.6 x inner + 0.4 x outer - penalty" in fig._suptitle.get_text()
    plt.close(fig)


def test_segment_bars_only_with_segment_columns():
    assert segment_figure(synthetic()) is None
    fig = segment_figure(synthetic(segments=True))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["new", "casual", "heavy"]
    assert ax.get_xlabel() == "user segment" and len(ax.patches) == 2 * 3
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == [0.1, 0.15, 0.3, 0.35, 0.5, 0.55]
    plt.close(fig)


def test_pareto_front_and_figure():
    points = np.array([[0.1, 0.3], [0.2, 0.5], [0.15, 0.2], [0.3, 0.5], [0.05, 0.1]])
    assert pareto_front(points).tolist() == [4, 0, 1]  # (0.15, 0.2) and (0.3, 0.5) are dominated
    fig = pareto_figure(synthetic())
    ax = fig.axes[0]
    assert ax.get_xlabel() == "policy violations per request (lower is better)"
    assert ax.get_ylabel() == "clicks per request (higher is better)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[-2:] == ["static", "optuna"] and "Pareto front (arm means)" in labels
    plt.close(fig)


def test_make_figures_and_the_cli_on_a_run_dir(tmp_path):
    frame = synthetic(segments=True)
    for arm in ("static", "optuna"):
        run_dir = tmp_path / "multirun" / f"job-{arm}"
        run_dir.mkdir(parents=True)
        frame[frame["arm"] == arm].to_csv(run_dir / "metrics.csv", index=False)
        (run_dir / "config.yaml").write_text(yaml.safe_dump({"world": {"shifts": [{"day": d, "kind": k} for d, k in SHIFTS]}}))
    root = tmp_path / "multirun"
    assert load_shifts(root) == SHIFTS
    loaded = load_metrics(root)
    assert len(loaded) == len(frame) and set(loaded["run"]) == {"job-static", "job-optuna"}
    figures = make_figures(loaded, SHIFTS)
    assert set(figures) == {"reward", "decomposition", "pareto", "segments"}
    for fig in figures.values():
        plt.close(fig)
    main([str(root)])
    for name in figures:
        img = mpimg.imread(root / "figures" / f"{name}.png")
        assert img.shape[0] > 300 and img.shape[1] > 500
    with pytest.raises(FileNotFoundError, match="no metrics"):
        load_metrics(tmp_path / "empty")


def test_day_curves_still_draws_one_line_per_group():
    fig, ax = plt.subplots()
    frame = synthetic(seeds=(0,))
    day_curves(ax, frame, "arm", "reward", "reward", SHIFTS, marker=".")
    assert len(ax.lines) == 2 + 1 and ax.get_xlabel() == "simulated day" and ax.get_title() == "reward"
    plt.close(fig)


def test_a_stationary_run_is_plotted_against_the_window():
    frame = synthetic()
    frame["day"] = 0.4  # every window from the same snapshot
    fig = reward_figure(frame, SHIFTS)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "window" and len(ax.lines) == 2  # no shift marks
    np.testing.assert_allclose(ax.lines[0].get_xdata(), np.arange(6))
    plt.close(fig)


def test_gap_recovered_cumulates_per_regime_and_the_headroom_figure_draws_it():
    from experiments.plot import gap_recovered, headroom_figure

    rows = []
    for seed in (0, 1):
        for step, day in enumerate([0.5, 1.0, 1.5, 2.0]):  # a shift on day 1: windows ending after it are regime 1
            static = 0.5
            oracle = static + (0.1 if step < 2 else 0.2)
            optuna = static + (0.05 if step < 2 else [0.0, 0.2][step - 2])
            for arm, v in (("static", static), ("oracle", oracle), ("optuna", optuna)):
                rows.append({"arm": arm, "seed": seed, "step": step, "day": day, "reward": v,
                             "oracle/gap": oracle - static if arm == "oracle" else np.nan})
    frame = pd.DataFrame(rows)
    rec = gap_recovered(frame, shifts=[(1, "topic_shock")])
    got = rec[rec["seed"] == 0].sort_values("step")["recovered"].to_numpy()
    # regime 0 (days 0.5, 1.0): 0.05 / 0.1 twice; regime 1 (1.5, 2.0): 0 / 0.2, then 0.2 / 0.4
    np.testing.assert_allclose(got, [0.5, 0.5, 0.0, 0.5])
    assert set(rec["arm"]) == {"optuna"}
    assert gap_recovered(frame[frame["arm"] != "oracle"]).empty
    # no headroom, no share: a regime whose gap averages under min_room per window has none (not a huge ratio)
    tiny = frame.assign(reward=np.where(frame["arm"] == "oracle", 0.5001, frame["reward"]))
    assert gap_recovered(tiny, shifts=[(1, "topic_shock")])["recovered"].isna().all()
    # what a window earned on all its traffic: the layered total when the frame has one (reward may be relative)
    served = frame.assign(**{"layered/rerank/total": frame["reward"], "reward": 0.0})
    np.testing.assert_allclose(gap_recovered(served, shifts=[(1, "topic_shock")]).sort_values(["seed", "step"])[
        "recovered"].to_numpy()[:4], [0.5, 0.5, 0.0, 0.5])
    fig = headroom_figure(frame, [(1, "topic_shock")])
    assert fig is not None and len([ax for ax in fig.axes if ax.get_visible()]) == 2
    plt.close(fig)
    assert headroom_figure(frame.drop(columns="oracle/gap")) is None


def test_runs_with_the_resource_model_get_an_engagement_vs_cost_pareto_over_their_exploit_windows():
    frame = synthetic(steps=6)
    frame["phase"] = np.where(frame["step"] >= 4, "exploit", "evolution")
    frame[FLOPS] = np.where(frame["arm"] == "optuna", 2e6, 2e5) * np.where(frame["phase"] == "exploit", 1.0, 5.0)
    figures = make_figures(frame)
    ax = figures["pareto_cost"].axes[0]
    assert ax.get_xlabel() == "ranker FLOPs per request (lower is better)" and "exploit windows" in ax.get_title()
    means = sorted(float(np.ravel(line.get_xdata())[0]) for line in ax.lines if len(np.ravel(line.get_xdata())) == 1)
    assert means[0] == pytest.approx(2e5) and means[-1] == pytest.approx(2e6)  # the exploit windows' FLOPs only
    for fig in figures.values():
        plt.close(fig)
    assert "pareto_cost" not in make_figures(synthetic())
