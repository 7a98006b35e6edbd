"""Plots of experiment runs: curves over simulated days with the world's shifts marked, CI bands, decomposition, Pareto.

``python -m experiments.plot <run or multirun dir>`` reads every ``metrics.parquet`` (or ``metrics.csv``) under
the directory and writes PNGs to ``<dir>/figures``: ``reward.png`` (mean and 95% CI band across seeds per arm),
``decomposition.png`` (the reward's inner and outer terms over time), ``pareto.png`` (clicks vs policy
violations per request, one point per run, arm means with CIs and their Pareto front), ``pareto_cost.png`` (clicks
vs the ranker's FLOPs per request over the exploit windows, for runs with the resource model) and, when the metrics
have per-segment columns (``segment/<name>/<metric>``), ``segments.png``; given the claims' metrics,
``claims.png`` (each claim metric the reward figure does not show, over time per arm with its CI band); with an
``oracle`` arm, ``headroom.png`` (its per-window gap over the hand-tuned config, and each arm's share of that gap
recovered since the last shift).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from envs.config import shift_days
from rewards.outer import EXPECTED_SUFFIX
from rewards.stats import mean_ci

__all__ = ["FLOPS", "GAP", "LABELS", "ci_curves", "claims_figure", "curve_figure", "curves_figure", "day_curves",
           "decomposition_figure", "gap_recovered", "headroom_figure", "load_curves", "load_metrics", "load_shifts",
           "json_safe", "main", "make_figures", "pareto_figure", "pareto_front", "reward_figure", "run_dirs", "run_store",
           "run_summary", "save_figures", "segment_figure", "served_column", "use_agg"]

CLICKS = "outer/engagement/clicks_per_request"
VIOLATIONS = "outer/risk/violations_per_request"
FLOPS = "outer/cost/flops_per_request"
LABELS: dict[str, str] = {  # axis labels with units
    FLOPS: "ranker FLOPs per request",
    "outer/cost/compute_ms_per_request": "compute ms per request (resource model)",
    "outer/cost/latency_p99_ms": "p99 request latency, ms (resource model)",
    "coordinator/test_share": "share of requests served by challengers under test",
    "reward": "layered reward (per window)",
    CLICKS: "clicks per request",
    VIOLATIONS: "policy violations per request",
    "outer/engagement/dwell_min_per_request": "dwell minutes per request",
    "outer/long_term/return_rate": "next-day return rate",
    "outer/long_term/churn_rate": "churn rate",
    "outer/ecosystem/item_gini": "item exposure Gini",
    "outer/ecosystem/tail_share": "long-tail share of impressions",
    "evolution/best_reward": "best reward so far",
    "inner/rerank/intra_list_diversity": "intra-list diversity (re-ranker's inner metric)",
    # per-segment metrics (segment/<name>/<metric>) are labelled by their last part
    "clicks_per_request": "clicks per request",
    "violations_per_request": "policy violations per request",
    "request_share": "share of requests",
}


def _pyplot() -> Any:
    import matplotlib.pyplot as plt

    return plt


def use_agg() -> None:
    """Draw off-screen (jobs, CLIs) unless ``MPLBACKEND`` says otherwise."""
    if "MPLBACKEND" not in os.environ:
        import matplotlib

        matplotlib.use("Agg")


def label_of(column: str) -> str:
    if column.endswith(EXPECTED_SUFFIX) and column not in LABELS:  # an expected version of a metric
        return f"{label_of(column.removesuffix(EXPECTED_SUFFIX))} (expected)"
    if column.startswith("segment/") and column.count("/") == 2 and column not in LABELS:
        _, segment, metric = column.split("/")
        return f"{LABELS.get(metric, metric)}, {segment} users"
    return LABELS.get(column, column)


# --------------------------------------------------------------------------- loading


def run_dirs(path: str | os.PathLike[str]) -> list[Path]:
    """The run directories under ``path`` (itself included): those holding ``metrics.parquet`` or ``metrics.csv``."""
    root = Path(path)
    found = {p.parent for pattern in ("metrics.parquet", "metrics.csv") for p in root.rglob(pattern)}
    return sorted(d for d in found if "wandb" not in d.relative_to(root).parts)


def load_metrics(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Every run's metrics under ``path`` in one table (parquet preferred over CSV); a ``run`` column names the dir."""
    frames = []
    root = Path(path)
    for d in run_dirs(root):
        f = pd.read_parquet(d / "metrics.parquet") if (d / "metrics.parquet").exists() else pd.read_csv(d / "metrics.csv")
        frames.append(f.assign(run=str(d.relative_to(root))))
    if not frames:
        raise FileNotFoundError(f"no metrics.parquet or metrics.csv under {root}")
    return pd.concat(frames, ignore_index=True)


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON data: numpy scalars and arrays as Python numbers and lists, mapping keys as strings,
    nan and inf as null (what every summary, report and benchmark table the experiments write goes through)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def run_summary(run: Path) -> dict[str, Any]:
    """A run's ``summary.json`` ({} before it is written), read as JSON (a YAML reader takes NaN for a string)."""
    path = run / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_store(run: Path) -> tuple[str, int | None]:
    """The knowledge store a run wrote to and its experiment's id there, from its ``summary.json`` (a URL with its
    password hidden); a run from before summaries named them: its own ``store.db`` and None (the whole store).
    FileNotFoundError when the run has neither."""
    summary = run_summary(run)
    if "store" in summary and "experiment_id" in summary:
        return str(summary["store"]), int(summary["experiment_id"])
    if (run / "store.db").exists():
        return str(run / "store.db"), None
    raise FileNotFoundError(f"{run}: no summary.json naming its knowledge store, and no store.db")


def load_curves(path: str | os.PathLike[str], name: str = "pretrain") -> pd.DataFrame:
    """Every run's ``<name>.csv`` (an arm's own curve, e.g. PPO's pre-training) under ``path`` in one table, with the
    run's ``arm`` and ``seed`` (from its ``summary.json``) and the row's ``index`` within the run; empty if none."""
    frames = []
    for d in run_dirs(path):
        if not (d / f"{name}.csv").exists():
            continue
        summary = run_summary(d)  # (only for runs with a curve: every other run's summary stays unread)
        if summary:
            f = pd.read_csv(d / f"{name}.csv")
            frames.append(f.assign(arm=summary["arm"], seed=summary["seed"], index=np.arange(len(f))))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


SHIFT_HORIZON = 3650  # days up to which a recurring shift (``every``) is listed


def load_shifts(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """The world's shift schedule (day, kind) from the runs' ``config.yaml``, without duplicates; a recurring shift
    (``every`` > 0) once per occurrence up to :data:`SHIFT_HORIZON` days."""
    shifts: dict[tuple[int, str], None] = {}
    for d in run_dirs(path):
        cfg = d / "config.yaml"
        if cfg.exists():
            world = (yaml.safe_load(cfg.read_text()) or {}).get("world") or {}
            for s in world.get("shifts") or []:
                for day in shift_days(int(s["day"]), int(s.get("every") or 0), SHIFT_HORIZON):
                    shifts[(day, str(s["kind"]))] = None
    return sorted(shifts)


# --------------------------------------------------------------------------- drawing helpers


def _mark_shifts(ax: Any, shifts: Iterable[tuple[int, str]], last_day: float = np.inf) -> None:
    """Dashed verticals at the shift days after day 0 and up to ``last_day`` (the data's range)."""
    for day, kind in shifts:
        if 0 < day <= last_day:
            ax.axvline(day, color="grey", ls="--", lw=0.8)
            ax.text(day, 1.0, f" {kind}", rotation=90, va="top", ha="right", fontsize=7, color="grey",
                    transform=ax.get_xaxis_transform())


def day_curves(ax: Any, frame: pd.DataFrame, by: str, column: str, label: str,
               shifts: Iterable[tuple[int, str]], **style: Any) -> None:
    """One line per ``by`` group of ``column`` against ``day``; dashed verticals at the shift days (after day 0)."""
    for name, g in frame.groupby(by, sort=False):
        ax.plot(g["day"], g[column], label=name, **style)
    _mark_shifts(ax, shifts, float(frame["day"].max()))
    ax.set_xlabel("simulated day")
    ax.set_ylabel(label)
    ax.set_title(label)
    ax.legend()


def ci_curves(ax: Any, frame: pd.DataFrame, column: str, shifts: Iterable[tuple[int, str]] = (), by: str = "arm",
              label: str | None = None, title: str | None = None) -> None:
    """Per ``by`` group: the mean of ``column`` across seeds against the simulated day, with its 95% t-band."""
    days = frame.groupby("step")["day"].mean()
    x = "day" if days.nunique() > 1 and days.is_monotonic_increasing else "step"  # a stationary env stays on one day
    for name, g in frame.groupby(by, sort=False):
        stats = g.groupby("step").agg(day=("day", "mean"), values=(column, list)).reset_index()
        ci = np.array([mean_ci(v) for v in stats["values"]])
        n = g["seed"].nunique()
        (line,) = ax.plot(stats[x], ci[:, 0], marker=".", label=f"{name} (n={n})")
        if n > 1:
            ax.fill_between(stats[x], ci[:, 1], ci[:, 2], color=line.get_color(), alpha=0.2, lw=0)
    if x == "day":
        _mark_shifts(ax, shifts, float(frame["day"].max()))
    if "phase" in frame and (frame["phase"] == "exploit").any():  # where the arms stop searching
        first = int(frame.loc[frame["phase"] == "exploit", "step"].min())
        start = first - 0.5 if x == "step" else float(frame.loc[frame["step"] == first - 1, "day"].median())
        ax.axvline(start, color="black", ls=":", lw=0.9)
        ax.text(start, 0.02, " exploit", va="bottom", ha="left", fontsize=7, transform=ax.get_xaxis_transform())
    ax.set_xlabel("simulated day" if x == "day" else "window")
    ax.set_ylabel(label or label_of(column))
    ax.set_title(title or label or label_of(column))
    ax.legend(fontsize=8)


# --------------------------------------------------------------------------- figures


def reward_figure(frame: pd.DataFrame, shifts: Iterable[tuple[int, str]] = (),
                  metrics: tuple[str, ...] = ("reward", CLICKS)) -> Any:
    """Reward (and clicks per request) over time: mean and 95% CI across seeds per arm, shifts marked."""
    plt = _pyplot()
    metrics = tuple(m for m in metrics if m in frame)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    for ax, column in zip(axes[0], metrics):
        ci_curves(ax, frame, column, shifts)
    fig.suptitle("mean and 95% CI across seeds per arm; dashed: world shifts; dotted: the exploit windows start", fontsize=9)
    fig.tight_layout()
    return fig


def curve_figure(table: pd.DataFrame, name: str = "pretrain") -> Any:
    """A training curve (an arm's ``<name>.csv``, e.g. :class:`~experiments.arms.Checkpoints`' rows): every training
    window's ``gain`` over the incumbent on the same traffic (or its ``reward`` when there is no gain column) and a
    running mean, episodes marked."""
    plt = _pyplot()
    column = "gain" if "gain" in table else "reward"
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(table))
    span = max(len(table) // 10, 1)
    ax.plot(x, table[column], lw=0.6, alpha=0.4, label="training window")
    ax.plot(x, table[column].rolling(span, min_periods=1).mean(), lw=2, label=f"running mean ({span} windows)")
    for start in np.flatnonzero(np.diff(table["episode"].to_numpy())) + 1:
        ax.axvline(start, color="grey", lw=0.5, ls=":")
    return _finish_curve(fig, ax, column, f"{name} window (dotted: a new simulated world)",
                         f"{name}: {table['episode'].nunique()} episodes, {len(table)} windows")


def _finish_curve(fig: Any, ax: Any, column: str, xlabel: str, title: str) -> Any:
    """A training curve's axes: the zero line of a gain, labels, legend."""
    if column == "gain":
        ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("reward - the incumbent's\non the same traffic" if column == "gain" else "reward")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def curves_figure(curves: pd.DataFrame, name: str = "pretrain") -> Any:
    """The runs' training curves (:func:`load_curves`): per arm, the mean ``gain`` over the incumbent (or ``reward``)
    of each training episode (a simulated run: every episode crosses the same checkpoints, so episodes compare like
    with like), mean and 95% t-band across seeds."""
    plt = _pyplot()
    column = "gain" if "gain" in curves else "reward"
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, g in curves.groupby("arm", sort=False):
        per_seed = g.groupby(["episode", "seed"])[column].mean().groupby("episode")
        ci = np.array([mean_ci(list(v)) for _, v in per_seed])
        x = np.array(list(per_seed.groups)) + 1
        (line,) = ax.plot(x, ci[:, 0], marker="o", label=f"{arm} (n={g['seed'].nunique()})")
        if g["seed"].nunique() > 1:
            ax.fill_between(x, ci[:, 1], ci[:, 2], color=line.get_color(), alpha=0.2, lw=0)
    return _finish_curve(fig, ax, column, f"{name} episode (a fresh simulated run each; its mean)",
                         f"{name}: training curves, mean and 95% CI across seeds")


def decomposition_figure(frame: pd.DataFrame, shifts: Iterable[tuple[int, str]] = ()) -> Any:
    """The layered reward's terms over time: the (signed) inner metric, the outer objective and the total."""
    plt = _pyplot()
    terms = [c for c in frame.columns if c.startswith("layered/") and c.rsplit("/", 1)[-1] in ("inner", "outer", "total")]
    terms.sort(key=lambda c: ("inner", "outer", "total").index(c.rsplit("/", 1)[-1]))
    fig, axes = plt.subplots(1, max(len(terms), 1), figsize=(5 * max(len(terms), 1), 4), squeeze=False)
    for ax, column in zip(axes[0], terms):
        role, part = column.split("/")[1], column.rsplit("/", 1)[-1]
        label = {"inner": f"inner term of {role} (signed metric)", "outer": "outer term (platform objective)",
                 "total": "total layered reward"}[part]
        ci_curves(ax, frame, column, shifts, label=label)
    weight = f"layered/{terms[0].split('/')[1]}/inner_weight" if terms else ""
    if weight in frame:
        w = float(frame[weight].iloc[0])
        fig.suptitle(f"reward = {w:g} x inner + {1 - w:g} x outer - penalty; mean and 95% CI across seeds", fontsize=9)
    fig.tight_layout()
    return fig


def segment_figure(frame: pd.DataFrame) -> Any | None:
    """Bars per segment and arm of each ``segment/<name>/<metric>`` column (mean over windows and seeds); None if none."""
    cols = [c for c in frame.columns if c.startswith("segment/") and c.count("/") >= 2]
    if not cols:
        return None
    plt = _pyplot()
    metrics = list(dict.fromkeys(c.split("/", 2)[2] for c in cols))
    segments = list(dict.fromkeys(c.split("/")[1] for c in cols))
    arms = list(dict.fromkeys(frame["arm"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    width = 0.8 / len(arms)
    x = np.arange(len(segments))
    for ax, metric in zip(axes[0], metrics):
        for i, arm in enumerate(arms):
            g = frame[frame["arm"] == arm]
            vals = [g[f"segment/{s}/{metric}"].mean() if f"segment/{s}/{metric}" in g else np.nan for s in segments]
            ax.bar(x + (i - (len(arms) - 1) / 2) * width, vals, width, label=arm)
        ax.set_xticks(x, segments)
        ax.set_xlabel("user segment")
        ax.set_ylabel(label_of(metric))
        ax.set_title(f"{label_of(metric)} by segment")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated when minimising column 0 and maximising column 1, by column 0."""
    keep = [i for i, (x, y) in enumerate(points)
            if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for x2, y2 in points)]
    return np.array(sorted(keep, key=lambda i: points[i, 0]), dtype=np.int64)


def pareto_figure(frame: pd.DataFrame, x: str = VIOLATIONS, y: str = CLICKS, title: str | None = None) -> Any:
    """Two outer objectives (x lower is better, y higher is better): one point per run, arm means with 95% CIs,
    and the Pareto front of the arm means."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    per_run = frame.groupby(["arm", "seed"], sort=False)[[x, y]].mean()
    means = []
    for arm in dict.fromkeys(frame["arm"]):
        runs = per_run.loc[arm]
        mx, lx, hx = mean_ci(runs[x].to_numpy())
        my, ly, hy = mean_ci(runs[y].to_numpy())
        pts = ax.scatter(runs[x], runs[y], alpha=0.35, s=18)
        err = None if np.isnan(lx) else ([[mx - lx], [hx - mx]], [[my - ly], [hy - my]])
        ax.errorbar(mx, my, xerr=None if err is None else err[0], yerr=None if err is None else err[1], fmt="o",
                    ms=8, color=pts.get_facecolor()[0][:3], capsize=3, label=arm)
        means.append((mx, my))
    pts = np.array(means)
    front = pareto_front(pts)
    if len(front) > 1:
        ax.plot(pts[front, 0], pts[front, 1], "k:", lw=1, label="Pareto front (arm means)")
    ax.set_xlabel(f"{label_of(x)} (lower is better)")
    ax.set_ylabel(f"{label_of(y)} (higher is better)")
    ax.set_title(title or f"trade-off: {label_of(y)} vs {label_of(x)}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def claims_figure(frame: pd.DataFrame, metrics: Iterable[str], shifts: Iterable[tuple[int, str]] = ()) -> Any | None:
    """One panel per metric (mean and 95% CI across seeds per arm over time, shifts marked); None if none is in
    ``frame``."""
    metrics = [m for m in dict.fromkeys(metrics) if m in frame]
    if not metrics:
        return None
    plt = _pyplot()
    cols = min(len(metrics), 3)
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
    for ax, column in zip(axes.flat, metrics):
        ci_curves(ax, frame, column, shifts)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle("the claims' metrics: mean and 95% CI across seeds per arm; dashed: world shifts", fontsize=9)
    fig.tight_layout()
    return fig


GAP = "oracle/gap"  # the oracle arm's per-window headroom: its best twin minus the hand-tuned config's twin


def served_column(frame: pd.DataFrame) -> str:
    """The column of what each window earned on all the traffic it served: the evolved agent's layered total
    (``layered/<role>/total``, the same for every arm), else ``reward`` (which an arm judged against a concurrent
    control, e.g. ``optuna_ab``, records relative to it)."""
    totals = [c for c in frame.columns if c.startswith("layered/") and c.endswith("/total") and c.count("/") == 2]
    return totals[0] if len(totals) == 1 else "reward"


def gap_recovered(frame: pd.DataFrame, column: str | None = None, oracle: str = "oracle", static: str = "static",
                  shifts: Iterable[tuple[int, str]] = (), min_room: float = 0.02) -> pd.DataFrame:
    """Per arm, seed and window: the share of the oracle's gap over ``static`` an arm has recovered, cumulated since the
    last shift (and since the first window): ``sum(arm - static) / sum(oracle - static)`` over the windows of the
    current regime so far, windows aligned by step within a seed (columns ``arm``, ``seed``, ``step``, ``day``,
    ``recovered``; 1: as good as the clairvoyant oracle, 0: no better than static, < 0: worse), on ``column``
    (default :func:`served_column`). Undefined (nan) while the regime's gap averages less than ``min_room`` per
    window: a share of no headroom is noise over nothing. Empty without both reference arms."""
    column = served_column(frame) if column is None else column
    if column not in frame or not {oracle, static} <= set(frame["arm"]):
        return pd.DataFrame(columns=["arm", "seed", "step", "day", "recovered"])
    wide = frame.pivot_table(index=["seed", "step"], columns="arm", values=column)
    day = frame.groupby(["seed", "step"])["day"].mean()
    starts = sorted(d for d, _ in shifts)
    regime = np.searchsorted(np.array(starts, dtype=np.float64), day.to_numpy(), side="left")  # a window ending on a
    # shift's day belongs to the regime before it (the shift applies at the start of that day)
    room = (wide[oracle] - wide[static]).to_frame("room").assign(regime=regime)
    rows = []
    for arm in wide.columns:
        if arm in (oracle, static):
            continue
        part = room.assign(gain=wide[arm] - wide[static]).dropna()
        cum = part.groupby(["seed", "regime"])[["gain", "room"]].cumsum()
        windows = part.groupby(["seed", "regime"]).cumcount().to_numpy() + 1
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(cum["room"].to_numpy() >= min_room * windows, cum["gain"] / cum["room"], np.nan)
        rows.append(pd.DataFrame({"arm": arm, "seed": part.index.get_level_values("seed"),
                                  "step": part.index.get_level_values("step"), "day": day.loc[part.index].to_numpy(),
                                  "recovered": share}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["arm", "seed", "step", "day", "recovered"])


def headroom_figure(frame: pd.DataFrame, shifts: Iterable[tuple[int, str]] = ()) -> Any | None:
    """With the oracle arm's rows: its per-window headroom over the hand-tuned config (``oracle/gap``, on identical
    traffic), and per arm the share of the oracle's gap recovered since the last shift (:func:`gap_recovered`);
    None without an oracle arm."""
    if GAP not in frame or not frame[GAP].notna().any():
        return None
    plt = _pyplot()
    shifts = list(shifts)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), squeeze=False)
    ci_curves(axes[0][0], frame[frame[GAP].notna()], GAP, shifts, label="oracle gap (best of grid - hand-tuned)",
              title="headroom per window: what adapting could gain")
    axes[0][0].axhline(0.0, color="grey", lw=0.8)
    recovered = gap_recovered(frame, shifts=shifts)
    if len(recovered):
        ci_curves(axes[0][1], recovered, "recovered", shifts, label="share of the oracle gap recovered",
                  title="share of the oracle gap recovered, cumulated since the last shift")
        axes[0][1].axhline(0.0, color="grey", lw=0.8)
        axes[0][1].axhline(1.0, color="grey", lw=0.8, ls=":")
    else:
        axes[0][1].set_visible(False)
    fig.suptitle("mean and 95% CI across seeds; dashed: world shifts", fontsize=9)
    fig.tight_layout()
    return fig


def make_figures(frame: pd.DataFrame, shifts: Iterable[tuple[int, str]] = (),
                 claim_metrics: Iterable[str] = ()) -> dict[str, Any]:
    """All figures that apply to the metrics (name -> matplotlib figure); ``claim_metrics`` adds ``claims``."""
    shifts = list(shifts)
    figures: dict[str, Any] = {"reward": reward_figure(frame, shifts), "decomposition": decomposition_figure(frame, shifts)}
    if VIOLATIONS in frame and CLICKS in frame:
        figures["pareto"] = pareto_figure(frame, title="trade-off: engagement vs policy violations")
    if FLOPS in frame and CLICKS in frame and frame[FLOPS].notna().any():  # runs with the resource model
        served = frame[frame["phase"] == "exploit"] if "phase" in frame and (frame["phase"] == "exploit").any() else frame
        figures["pareto_cost"] = pareto_figure(served[served[FLOPS].notna()], FLOPS, CLICKS,
                                               "engagement vs cost" + (" (exploit windows)" if served is not frame else ""))
    seg = segment_figure(frame)
    if seg is not None:
        figures["segments"] = seg
    room = headroom_figure(frame, shifts)
    if room is not None:
        figures["headroom"] = room
    claims = claims_figure(frame, [m for m in claim_metrics if m not in ("reward", CLICKS)], shifts)
    if claims is not None:
        figures["claims"] = claims
    return figures


def save_figures(figures: dict[str, Any], out: str | os.PathLike[str], close: bool = True) -> dict[str, Path]:
    """Save each figure as ``<out>/<name>.png``; returns the paths."""
    plt = _pyplot()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in figures.items():
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=110)
        if close:
            plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Plot the runs under a run or multirun directory.")
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=None, help="where the PNGs go (default <run_dir>/figures)")
    args = parser.parse_args(argv)
    use_agg()
    frame = load_metrics(args.run_dir)
    paths = save_figures(make_figures(frame, load_shifts(args.run_dir)), args.out or Path(args.run_dir) / "figures")
    for path in paths.values():
        print(path)


if __name__ == "__main__":
    main()
