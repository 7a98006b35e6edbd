"""Offline evaluation on logged data: the step an AutoModel agent takes before it spends live traffic.

The data are the impressions a simulation logged (:class:`~agents.decision.features.LoggedImpressions`, from an
:class:`~agents.decision.features.ImpressionRecorder`), replayed into a feature matrix for a feature set
(:func:`logged_data`: each window's rows from the statistics of the windows before it, as they would have been
served). :func:`time_split` holds out the last windows (a split in time, never a shuffle: the future is not
training data). :func:`fit` trains a ranker of a :class:`~agents.decision.models.ModelDesign` with a
:class:`TrainRecipe` on the training windows; :func:`offline_metrics` scores it on held-out impressions: AUC,
log-loss, NDCG@k of the logged slates re-ordered by the model (the clicks are the logging policy's, position bias
included: the offline view's known weakness), calibration (mean predicted / mean observed) and ECE.
:func:`compare` trains incumbent and candidate on the same data with the same budget (the same recipe: the same
number of gradient steps) and reports both and the gains; :class:`OfflineOnlineLedger` keeps each candidate's
offline gain next to its online one (twins or an A/B test) and says how well the first predicted the second,
so a user sees when offline comparison misleads. :func:`permutation_importance` and :func:`feature_drift` are
AutoFeature's analyses: the AUC lost when a group's columns are shuffled across held-out rows, and each group's
population stability index between two windows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from agents.decision.features import FeatureSet, FeatureState, LoggedImpressions, replay_features
from agents.decision.models import ModelDesign
from agents.decision.params import Choice, ParamSpace, Range
from agents.decision.ranking import TorchRanker
from envs.validation import ConfigError, check_int
from rewards.inner import auc, calibration, ece, log_loss, ndcg
from rewards.stats import psi, spearman

__all__ = ["RECIPE_SPACE", "LoggedData", "OfflineComparison", "OfflineOnlineLedger", "TrainRecipe", "compare",
           "feature_drift", "fit", "logged_data", "offline_metrics", "permutation_importance", "time_split"]

# AutoTrain's training decision space (the ranker's online training parameters keep their own ParamSpace)
RECIPE_SPACE = ParamSpace([
    Choice("lr", (1e-3, 3e-3, 1e-2), 3e-3),
    Choice("batch_size", (256, 1024, 4096), 1024),
    Range("weight_decay", 0.0, 1e-2, 1e-5),
    Choice("updates", (100, 300, 1000), 300),  # gradient steps: the budget
    Range("w_like", 0.0, 2.0, 0.5),  # the like head's loss weight (the ranker's hard-coded 0.5 until now)
    Range("w_dwell", 0.0, 1.0, 0.1),  # the dwell head's (0.1)
])


@dataclass(frozen=True)
class TrainRecipe:
    """How a candidate is trained offline: optimiser (AdamW ``lr``, ``weight_decay``), ``batch_size``, the budget in
    gradient ``updates`` and the heads' loss weights. Validated against :data:`RECIPE_SPACE`."""

    lr: float = 3e-3
    batch_size: int = 1024
    weight_decay: float = 1e-5
    updates: int = 300
    w_like: float = 0.5
    w_dwell: float = 0.1

    def __post_init__(self) -> None:
        RECIPE_SPACE.validate(asdict(self), agent="recipe")

    def ranker_config(self) -> dict[str, Any]:
        """The ranker's training parameters for this recipe (one pass per call to train, the budget given apart)."""
        return {"lr": self.lr, "epochs": 1, "batch_size": self.batch_size, "weight_decay": self.weight_decay,
                "memory": 500_000, "min_updates": 0}

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"like": self.w_like, "dwell": self.w_dwell}


@dataclass
class LoggedData:
    """Logged impressions as a training set: features ``x`` (n, F) of a feature set (``slices``: each group's
    columns), targets ``y`` (n, 3: click, like, log1p dwell of a click), ``segment``, ``window``, ``request`` and
    the shown ``position`` (for NDCG)."""

    x: np.ndarray
    y: np.ndarray
    segment: np.ndarray
    window: np.ndarray
    request: np.ndarray
    position: np.ndarray
    slices: dict[str, slice]
    features: FeatureSet

    def __len__(self) -> int:
        return len(self.x)

    def rows(self, mask: np.ndarray) -> LoggedData:
        return LoggedData(self.x[mask], self.y[mask], self.segment[mask], self.window[mask], self.request[mask],
                          self.position[mask], self.slices, self.features)

    @property
    def click(self) -> np.ndarray:
        return self.y[:, 0] > 0.5


def logged_data(log: LoggedImpressions, features: FeatureSet | None = None, state: FeatureState | None = None
                ) -> LoggedData:
    """The log replayed into ``features`` (default the base groups: the rankers' own layout)."""
    features = FeatureSet() if features is None else features
    x, slices = replay_features(log, features, state)
    dwell = np.where(log.click, np.log1p(log.dwell), 0.0)
    y = np.stack([log.click, log.like, dwell], axis=1).astype(np.float32)
    return LoggedData(x, y, log.segment.astype(np.int64), log.window, log.request, log.position, slices, features)


def time_split(data: LoggedData, valid_windows: int = 1) -> tuple[LoggedData, LoggedData]:
    """(train, valid): the last ``valid_windows`` windows held out, the earlier ones to train on."""
    windows = np.unique(data.window)
    check_int("valid_windows", valid_windows, 1)
    if len(windows) <= valid_windows:
        raise ConfigError(f"`valid_windows` must be below the number of logged windows {len(windows)} to leave "
                          f"training data (got {valid_windows})")
    cut = windows[-valid_windows]
    return data.rows(data.window < cut), data.rows(data.window >= cut)


def fit(design: ModelDesign, data: LoggedData, recipe: TrainRecipe | None = None, seed: int = 0,
        num_segments: int | None = None, num_routes: int = 1) -> TorchRanker:
    """A ranker of ``design`` trained on ``data`` with ``recipe`` (at least ``recipe.updates`` gradient steps);
    ``num_routes`` matters only to serve it online (the width of the layout's route one-hot)."""
    recipe = TrainRecipe() if recipe is None else recipe
    segments = int(data.segment.max()) + 1 if num_segments is None else num_segments
    ranker = TorchRanker(data.x.shape[1], max(segments, 1), num_routes=num_routes, arch=design.arch, hidden=design.hidden,
                         config=recipe.ranker_config(), seed=seed, design=design,
                         loss_weights=recipe.loss_weights)
    ranker.learn_from((data.x, data.y, data.segment), min_updates=recipe.updates)
    return ranker


def offline_metrics(ranker: TorchRanker, data: LoggedData, k: int = 10) -> dict[str, float]:
    """The ranker's click head on held-out impressions: ``auc``, ``log_loss``, ``ndcg@k`` (each logged slate
    re-ordered by the score), ``calibration`` (mean predicted / mean clicked) and ``ece``."""
    check_int("k", k, 1)
    p = ranker.predict(data.x, data.segment)["click"]
    y = data.click
    order = np.lexsort((-p, data.request))  # by request, then score descending
    rank = np.empty(len(p), np.int64)
    req_sorted = data.request[order]
    starts = np.r_[0, np.flatnonzero(req_sorted[1:] != req_sorted[:-1]) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(p)]))
    rank[order] = np.arange(len(p)) - first
    return {"auc": auc(p, y), "log_loss": log_loss(p, y), f"ndcg@{k}": ndcg(data.request, rank, y, k=k),
            "calibration": calibration(p, y), "ece": ece(p, y)}


@dataclass
class OfflineComparison:
    """Incumbent and candidate trained on the same data with the same budget, scored on the same held-out rows."""

    incumbent: dict[str, float]
    candidate: dict[str, float]
    train_rows: int
    valid_rows: int

    @property
    def gain(self) -> dict[str, float]:
        """candidate - incumbent per metric (for log_loss and ece, lower is better: their gain is negative)."""
        return {k: self.candidate[k] - self.incumbent[k] for k in self.incumbent}

    @property
    def auc_gain(self) -> float:
        return self.gain["auc"]


def compare(incumbent: ModelDesign, candidate: ModelDesign, train: LoggedData, valid: LoggedData,
            recipe: TrainRecipe | None = None, candidate_recipe: TrainRecipe | None = None, seed: int = 0,
            k: int = 10) -> OfflineComparison:
    """Train both on ``train`` (the candidate with ``candidate_recipe`` when given, else the same recipe) from the
    same seed and score both on ``valid``."""
    recipe = TrainRecipe() if recipe is None else recipe
    segments = int(max(train.segment.max(), valid.segment.max())) + 1
    a = fit(incumbent, train, recipe, seed, segments)
    b = fit(candidate, train, candidate_recipe or recipe, seed, segments)
    return OfflineComparison(offline_metrics(a, valid, k), offline_metrics(b, valid, k), len(train), len(valid))


def permutation_importance(ranker: TorchRanker, data: LoggedData, repeats: int = 3, seed: int = 0
                           ) -> dict[str, float]:
    """Per feature group: the held-out AUC lost when the group's columns are shuffled (jointly, across rows),
    mean over ``repeats`` shuffles; ~0 for a group the model does not use, negative within noise."""
    check_int("repeats", repeats, 1)
    rng = np.random.default_rng(seed)
    base = auc(ranker.predict(data.x, data.segment)["click"], data.click)
    out = {}
    for name, cols in data.slices.items():
        drops = []
        for _ in range(repeats):
            x = data.x.copy()
            x[:, cols] = x[rng.permutation(len(x))][:, cols]
            drops.append(base - auc(ranker.predict(x, data.segment)["click"], data.click))
        out[name] = float(np.mean(drops))
    return out


def feature_drift(data: LoggedData, before: int, after: int, bins: int = 10) -> dict[str, float]:
    """Per group, the largest population stability index of its columns between windows ``before`` and ``after``."""
    a, b = data.window == before, data.window == after
    if not a.any() or not b.any():
        raise ConfigError(f"`before` and `after` must be logged windows {sorted(set(data.window.tolist()))} "
                          f"(got {before}, {after})")
    out = {}
    for name, cols in data.slices.items():
        values = [psi(data.x[a][:, j], data.x[b][:, j], bins) for j in range(cols.start, cols.stop)]
        finite = [v for v in values if math.isfinite(v)]
        out[name] = max(finite) if finite else math.nan
    return out


@dataclass
class OfflineOnlineLedger:
    """Each candidate's offline gain next to its online gain: how well offline comparison predicted online."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, offline_gain: float, online_gain: float, **extra: Any) -> None:
        self.rows.append({"name": name, "offline_gain": float(offline_gain), "online_gain": float(online_gain), **extra})

    def summary(self) -> dict[str, float | int]:
        """``rank_corr`` (Spearman, offline vs online gains), ``sign_agreement`` (share with the same sign),
        ``misled`` (candidates offline called better that were worse online), ``n``."""
        off = np.array([r["offline_gain"] for r in self.rows])
        on = np.array([r["online_gain"] for r in self.rows])
        n = len(self.rows)
        return {"n": n, "rank_corr": spearman(off, on) if n >= 3 else math.nan,
                "sign_agreement": float(np.mean(np.sign(off) == np.sign(on))) if n else math.nan,
                "misled": int(np.sum((off > 0) & (on <= 0)))}
