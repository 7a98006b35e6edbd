"""AutoFeature: analyse the logged data, propose feature-set edits, screen them offline, test the winners online.

Each round works on the impressions a deployment recorded (:class:`~agents.decision.features.LoggedImpressions`):

1. :meth:`AutoFeature.analyse`: the current feature set's per-group importance (held-out AUC lost when a group is
   shuffled, :func:`~agents.evolution.offline.permutation_importance`, from a model trained on the earlier windows),
   drift (each group's largest population stability index between the first and last logged windows), and for
   every group of the pool its coverage (the share of held-out rows where it is not all zero) and a leakage check
   (:func:`~agents.decision.features.leakage_check`: a group whose values move when its rows' own outcomes are
   shuffled is computed from the outcome it predicts);
2. :meth:`AutoFeature.propose`: ``add`` each pool group the set lacks that does not leak and covers enough rows,
   ``drop`` each group whose importance is below ``drop_below`` (a group the model does not use costs width and
   drift exposure); a leaking group is never proposed, it is reported with its reason;
3. :meth:`AutoFeature.screen`: each edit's feature set replayed from the same log, a model of the same design
   trained with the same recipe and seed on the same windows, scored on the same held-out rows: the offline gains;
4. :meth:`AutoFeature.online`: incumbent and edited sets each deployed as a
   :class:`~agents.decision.ranking.FeatureRanker` trained offline on the log (its statistics replayed to the log's
   end) into copies of the running system, on twins of the deployment: the online gain in expected clicks per
   request; the :class:`~agents.evolution.offline.OfflineOnlineLedger` keeps offline next to online.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from agents.decision.features import (
    FEATURE_GROUPS,
    FeatureGroup,
    FeatureSet,
    FeatureState,
    LeakReport,
    LoggedImpressions,
    leakage_check,
)
from agents.decision.models import ModelDesign
from agents.decision.ranking import FeatureRanker
from agents.decision.resources import stage_units
from agents.decision.system import input_dims
from agents.evolution.deployment import DeploymentService
from agents.evolution.offline import (
    LoggedData,
    OfflineOnlineLedger,
    TrainRecipe,
    feature_drift,
    fit,
    logged_data,
    offline_metrics,
    permutation_importance,
    time_split,
)
from agents.evolution.twins import evaluate
from agents.infra.store import KnowledgeStore
from envs.validation import ConfigError, check_int, check_range

__all__ = ["AutoFeature", "EditResult", "FeatureEdit", "FeatureReport", "deployable_ranker", "ranker_flops"]


def deployable_ranker(service: DeploymentService, features: FeatureSet, design: ModelDesign, log: LoggedImpressions,
                      *, config: dict, loss_weights: dict[str, float], updates: int, seed: int = 0, pipeline: int = 0
                      ) -> FeatureRanker:
    """A :class:`FeatureRanker` over ``features`` of ``design`` for ``service``'s running ``pipeline`` (its sizes and
    its ranker's name), trained on the whole log with ``config`` and at least ``updates`` gradient steps, its
    statistics replayed to the log's end: what goes online."""
    running = service.system.pipelines[pipeline].ranker
    state = FeatureState()
    data = logged_data(log, features, state)  # replays the statistics through every window
    ranker = FeatureRanker(features, input_dims(service.world_cfg), running.num_segments, running.num_routes,
                           arch=design.arch, hidden=design.hidden, config=config, seed=seed,
                           design=design, loss_weights=loss_weights)
    ranker.state = state
    ranker.learn_from((data.x, data.y, data.segment), min_updates=updates)
    ranker.name = running.name
    return ranker


def ranker_flops(service: DeploymentService, features: FeatureSet, design: ModelDesign, pipeline: int = 0) -> float:
    """The ranking FLOPs per request ``service``'s running ``pipeline`` would cost with a ranker of ``design`` over
    ``features`` in its ranker's place (:func:`~agents.decision.resources.stage_units` of an untrained one, so a
    cascade's pre-ranker and ``keep`` count as they will: what the resource model will report once it serves)."""
    running = service.system.pipelines[pipeline]
    twin = copy.copy(running)
    twin.ranker = FeatureRanker(features, input_dims(service.world_cfg), running.ranker.num_segments,
                                running.ranker.num_routes, arch=design.arch, hidden=design.hidden,
                                config=dict(running.ranker.config), design=design)
    return stage_units(twin, 1, 1)["ranking"]


@dataclass
class FeatureReport:
    """What :meth:`AutoFeature.analyse` found: per group of the current set its ``importance`` and ``drift``; per
    group of the pool its ``coverage`` and ``leaks`` report; ``incumbent``: the current set's offline metrics."""

    importance: dict[str, float]
    drift: dict[str, float]
    coverage: dict[str, float]
    leaks: dict[str, LeakReport]
    incumbent: dict[str, float]

    @property
    def leaking(self) -> list[str]:
        return [g for g, r in self.leaks.items() if r.leaks]


@dataclass(frozen=True)
class FeatureEdit:
    """Add or drop one group: ``features`` is the edited set."""

    kind: str  # add | drop
    group: str
    features: FeatureSet
    why: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind} {self.group}"


@dataclass
class EditResult:
    """An edit's offline metrics and gains over the incumbent set (same data, model, recipe, seed) and, if tested,
    its online gain."""

    edit: FeatureEdit
    offline: dict[str, float]
    gain: dict[str, float]
    online_gain: float | None = None
    online: dict[str, float] = field(default_factory=dict)

    @property
    def auc_gain(self) -> float:
        return self.gain["auc"]


class AutoFeature:
    """Feature evolution for the rankers (see the module docstring). ``pool``: the groups it may add (registered
    names, or :class:`FeatureGroup` objects); ``drop_below``: the importance under which a group is proposed for
    dropping; ``coverage_min``: the share of rows a group must cover to be added; ``min_gain``: the held-out AUC
    gain an edit needs to go online."""

    name = "autofeature"

    def __init__(self, features: FeatureSet | None = None, design: ModelDesign | None = None,
                 recipe: TrainRecipe | None = None, *, pool: Sequence[str | FeatureGroup] | None = None,
                 drop_below: float = 0.001, coverage_min: float = 0.01, min_gain: float = 0.0, valid_windows: int = 1,
                 repeats: int = 3, seed: int = 0, store: KnowledgeStore | None = None, exp_id: int | None = None) -> None:
        if (store is None) != (exp_id is None):
            raise ConfigError("give both `store` and `exp_id` (the experiment the records belong to), or neither")
        self.features = features or FeatureSet()
        self.design = design or ModelDesign(arch="mlp")
        self.recipe = recipe or TrainRecipe()
        self.pool = list(FEATURE_GROUPS) if pool is None else list(pool)
        self.drop_below = check_range("drop_below", drop_below, 0.0, 1.0)
        self.coverage_min = check_range("coverage_min", coverage_min, 0.0, 1.0)
        self.min_gain, self.valid_windows = float(min_gain), check_int("valid_windows", valid_windows, 1)
        self.repeats, self.seed = check_int("repeats", repeats, 1), check_int("seed", seed, 0)
        self.store, self.exp_id = store, exp_id
        self.ledger = OfflineOnlineLedger()
        self.results: list[EditResult] = []
        self.rejected: dict[str, str] = {}  # group -> why it was never proposed

    def _split(self, log: LoggedImpressions, features: FeatureSet) -> tuple[LoggedData, LoggedData]:
        return time_split(logged_data(log, features), self.valid_windows)

    def _fit_score(self, log: LoggedImpressions, features: FeatureSet) -> tuple[dict[str, float], LoggedData, object]:
        train, valid = self._split(log, features)
        ranker = fit(self.design, train, self.recipe, self.seed, int(log.num_segments))
        return offline_metrics(ranker, valid), valid, ranker

    def analyse(self, log: LoggedImpressions) -> FeatureReport:
        """Importance and drift of the current set's groups; coverage and leakage of the pool's."""
        incumbent, valid, ranker = self._fit_score(log, self.features)
        importance = permutation_importance(ranker, valid, self.repeats, self.seed)
        windows = np.unique(log.window)
        drift = feature_drift(logged_data(log, self.features), int(windows[0]), int(windows[-1]))
        names = [g if isinstance(g, str) else g.name for g in self.pool]
        everything = FeatureSet(self.pool)
        _, v = self._split(log, everything)
        coverage = {n: float(np.mean(np.any(v.x[:, v.slices[n]] != 0, axis=1))) for n in names}
        leaks = {g if isinstance(g, str) else g.name: leakage_check(g, log, self.seed) for g in self.pool}
        return FeatureReport(importance, drift, coverage, leaks, incumbent)

    def propose(self, report: FeatureReport) -> list[FeatureEdit]:
        """The edits the report supports (adds first, in pool order; then drops)."""
        current = set(self.features.names)
        edits = []
        for g in self.pool:
            name = g if isinstance(g, str) else g.name
            if name in current:
                continue
            if report.leaks[name].leaks:
                self.rejected[name] = report.leaks[name].reason
                continue
            if report.coverage[name] < self.coverage_min:
                self.rejected[name] = f"`{name}` covers {report.coverage[name]:.1%} of rows (< {self.coverage_min:.1%})"
                continue
            edits.append(FeatureEdit("add", name, self.features.with_groups(add=[g]),
                                     f"unused, covers {report.coverage[name]:.0%} of rows, no leak"))
        for name, imp in report.importance.items():
            if imp < self.drop_below and len(self.features.names) > 1:
                edits.append(FeatureEdit("drop", name, self.features.with_groups(drop=[name]),
                                         f"importance {imp:+.4f} < {self.drop_below:g}"))
        return edits

    def screen(self, edits: Sequence[FeatureEdit], log: LoggedImpressions,
               incumbent: dict[str, float] | None = None) -> list[EditResult]:
        """Each edit's offline metrics and gains over the incumbent set (same windows, model, recipe, seed)."""
        base = incumbent if incumbent is not None else self._fit_score(log, self.features)[0]
        out = []
        for edit in edits:
            metrics = self._fit_score(log, edit.features)[0]
            out.append(EditResult(edit, metrics, {k: metrics[k] - base[k] for k in base}))
        self.results += out
        return out

    def winners(self, results: Sequence[EditResult] | None = None) -> list[EditResult]:
        pool = self.results if results is None else results
        return sorted([r for r in pool if r.auc_gain > self.min_gain], key=lambda r: -r.auc_gain)

    def ranker(self, features: FeatureSet, log: LoggedImpressions, service: DeploymentService, pipeline: int = 0
               ) -> FeatureRanker:
        """A :class:`FeatureRanker` over ``features`` trained on the whole log with the recipe, its statistics
        replayed to the log's end: what would go online."""
        return deployable_ranker(service, features, self.design, log, config=self.recipe.ranker_config(),
                                 loss_weights=self.recipe.loss_weights, updates=self.recipe.updates, seed=self.seed,
                                 pipeline=pipeline)

    def online(self, service: DeploymentService, result: EditResult, log: LoggedImpressions, *, windows: int = 2,
               pipeline: int = 0, learn: bool = True) -> float:
        """The edit's online gain on twins: the incumbent set and the edited set, each as :meth:`ranker`, deployed
        into copies of the running system (expected clicks per request, edited - incumbent)."""
        systems = []
        for features in (self.features, result.edit.features):
            system = copy.deepcopy(service.system)
            system.pipelines[pipeline].ranker = self.ranker(features, log, service, pipeline)
            systems.append(system)
        values = evaluate(service, systems, windows=windows, learn=learn)
        result.online = {"incumbent": values[0].value, "candidate": values[1].value}
        result.online_gain = values[1].value - values[0].value
        self.ledger.add(result.edit.label, result.auc_gain, result.online_gain)
        return result.online_gain

    def record(self, results: Sequence[EditResult] | None = None) -> list[int]:
        """Write each screened edit (and each group rejected before screening) to the knowledge store."""
        if self.store is None or self.exp_id is None:
            raise ConfigError("`record` needs a knowledge store (AutoFeature(store=..., exp_id=...))")
        ids = []
        for r in self.results if results is None else results:
            doc = {"edit": r.edit.label, "features": list(r.edit.features.names), "why": r.edit.why,
                   "offline": r.offline, "gain": r.gain, "online": r.online or None}
            ids.append(self.store.add_design(self.exp_id, self.name, doc, r.edit.why or r.edit.label, "analysis",
                                             True, None, r.online_gain))
        for group, why in self.rejected.items():
            ids.append(self.store.add_design(self.exp_id, self.name, {"edit": f"add {group}", "features": None},
                                             "rejected before screening", "analysis", False, why, None))
        return ids
