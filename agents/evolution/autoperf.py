"""AutoPerf: spend less compute per request at an explicitly bounded engagement loss (LWGR-style primal-dual).

The decision space is what trades quality for resources in a running pipeline (:func:`resource_knobs`): the fusion
size (candidates passed to the ranker), each recall route's candidate count, a cascade's ``keep`` (how many the cheap
pre-ranker passes on to the expensive ranker: ``PipelineConfig.prerank_keep``), the re-ranker's MMR pool and, when
asked for (``keys`` with ``"width"``), the ranker's width: a narrower MLP (each of :data:`~agents.decision.models.WIDTHS`
below the running one) trained once per width on the impressions the running ranker remembered, with its gradient
steps so far (capped at :data:`WIDTH_UPDATES`), then served on twins like any other point. The objective, as in
LWGR, is

    minimise  cost(x)   subject to   clicks(x) >= (1 - max_degradation) x clicks(incumbent)

with ``cost`` the compute milliseconds per request predicted by the resource model (:mod:`agents.decision.resources`,
calibrated on the serving code) and ``clicks`` the expected clicks per request, both measured on twins of the
running deployment (the same state and traffic for every candidate, learning off). It is solved by a Lagrangian
primal-dual method over rounds: with the multiplier ``lam``, a round evaluates a few new configs (neighbours of the
current primal point and random draws), the primal point becomes the evaluated config minimising
``cost / cost_0 + lam x g`` with ``g = ((1 - d) clicks_0 - clicks) / (d clicks_0)`` (the constraint in units of the
allowed loss), and the dual step is ``lam <- max(0, lam + dual_lr x g(primal))``. Both trajectories are kept
(:attr:`AutoPerfResult.trajectory`). The answer is the cheapest evaluated config that met the bound (the incumbent
when none did); :meth:`AutoPerf.apply` deploys it.

The experimentation policy is a decision space too (:func:`tune_experiments`): the share, duration and level of the
coordinator's tests, each policy judged on a twin by the expected clicks over a horizon in which it tests a given
stream of proposals, so the traffic served by worse challengers and the windows before a good change ships both count.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.decision.models import WIDTHS
from agents.decision.ranking import TorchRanker
from agents.evolution.coordinator import Coordinator
from agents.evolution.deployment import DeploymentService
from envs.validation import ConfigError, check_choice, check_int, check_range

__all__ = ["EXPERIMENT_POLICIES", "KEYS", "RESOURCE_PARAMS", "WIDTH", "AutoPerf", "AutoPerfResult", "ExperimentPolicy",
           "Knob", "PerfPoint", "PolicyOutcome", "resource_knobs", "tune_experiments"]

log = logging.getLogger(__name__)

CLICKS = "outer/engagement/clicks_per_request/exp"
COST = "outer/cost/compute_ms_per_request"
P99 = "outer/cost/latency_p99_ms"


@dataclass(frozen=True)
class Knob:
    """One resource parameter: an agent's choice parameter and its options."""

    agent: str
    key: str
    options: tuple[Any, ...]


RESOURCE_PARAMS = ("size", "k", "keep", "mmr_pool")  # fusion size, recall k, a cascade's keep, the MMR pool
WIDTH = "width"  # the ranker's hidden width: a structural knob (a retrained model per option), asked for by name
KEYS = (*RESOURCE_PARAMS, WIDTH)
WIDTH_UPDATES = 3000  # a narrower ranker's gradient steps on the running ranker's memory, at most


def resource_knobs(service: DeploymentService, pipeline: str | None = None,
                   keys: tuple[str, ...] = RESOURCE_PARAMS) -> list[Knob]:
    """The resource parameters of ``pipeline`` (default: the first): fusion ``size``, every recall route's ``k``,
    a cascade pre-ranker's ``keep``, the re-ranker's ``mmr_pool``, the ranker's ``width`` (those of ``keys``; the
    width only for an MLP ranker: its options are the widths up to the running one)."""
    for key in keys:
        check_choice("keys", key, KEYS)
    name = pipeline or service.system.pipelines[0].name
    knobs = []
    for agent in service.agent_names():
        if not agent.startswith(f"{name}/"):
            continue
        params = service.agent(agent).params.by_name
        for key in keys:
            if key in params and hasattr(params[key], "options"):
                knobs.append(Knob(agent, key, tuple(params[key].options)))
    if WIDTH in keys:
        pipe = next((p for p in service.system.pipelines if p.name == name), None)
        ranker = getattr(pipe, "ranker", None)
        if type(ranker) is not TorchRanker or ranker.arch != "mlp":
            raise ConfigError(f"the `width` knob needs pipeline {name!r} to rank with an MLP TorchRanker (got "
                              f"{type(ranker).__name__} {getattr(ranker, 'arch', '')!r}): other rankers have no width "
                              "to narrow")
        agent = next(a for a in service.agent_names() if a.startswith(f"{name}/") and service.agent(a) is ranker)
        knobs.append(Knob(agent, WIDTH, tuple(w for w in WIDTHS if w <= ranker.hidden)))
    if not knobs:
        raise ConfigError(f"`pipeline` {name!r} has no resource parameters among {list(keys)} (fusion size, recall k, "
                          f"a cascade's keep, mmr_pool)")
    return knobs


Point = tuple[Any, ...]  # one option per knob


@dataclass(frozen=True)
class PerfPoint:
    """A config (one value per knob) and what it did on its twin."""

    values: Point
    clicks: float
    cost: float
    p99_ms: float = float("nan")  # the predicted 99th percentile of request latency


@dataclass
class AutoPerfResult:
    knobs: list[Knob]
    incumbent: PerfPoint
    best: PerfPoint  # the cheapest evaluated point that met the bound (the incumbent if none did)
    bound: float  # the clicks per request a point must keep
    evaluated: list[PerfPoint] = field(default_factory=list)
    trajectory: list[dict[str, float]] = field(default_factory=list)  # per round: lambda, g, cost and clicks of the primal

    @property
    def cost_reduction(self) -> float:
        """1 - best cost / incumbent cost."""
        return 1.0 - self.best.cost / self.incumbent.cost

    @property
    def clicks_degradation(self) -> float:
        """1 - best clicks / incumbent clicks (on their twins)."""
        return 1.0 - self.best.clicks / self.incumbent.clicks

    def config(self, point: PerfPoint | None = None) -> dict[str, dict[str, Any]]:
        """A point as agent -> partial config (the best one by default), without the ranker's width (not a config:
        :attr:`width`)."""
        out: dict[str, dict[str, Any]] = {}
        for knob, value in zip(self.knobs, (point or self.best).values):
            if knob.key != WIDTH:
                out.setdefault(knob.agent, {})[knob.key] = value
        return out

    def width(self, point: PerfPoint | None = None) -> int | None:
        """The ranker width of a point (the best one by default); None without the width knob."""
        for knob, value in zip(self.knobs, (point or self.best).values):
            if knob.key == WIDTH:
                return int(value)
        return None


class AutoPerf:
    """The primal-dual search of the module docstring on one pipeline of ``service``.

    ``keys`` restricts the decision space to some of :data:`RESOURCE_PARAMS`.
    ``max_degradation``: the allowed relative loss of expected clicks per request; ``rounds`` x ``per_round`` new
    configs are evaluated, each on a twin for ``windows`` windows; ``dual_lr`` the multiplier's step size.
    """

    def __init__(self, service: DeploymentService, *, max_degradation: float = 0.01, rounds: int = 6,
                 per_round: int = 4, windows: int = 2, dual_lr: float = 0.5, seed: int = 0,
                 pipeline: str | None = None, keys: tuple[str, ...] = RESOURCE_PARAMS) -> None:
        self.service = service
        self.max_degradation = check_range("max_degradation", max_degradation, 1e-6, 0.5)
        self.rounds, self.per_round = check_int("rounds", rounds, 1), check_int("per_round", per_round, 1)
        self.windows = check_int("windows", windows, 1)
        self.dual_lr = check_range("dual_lr", dual_lr, 0.0)
        self.rng = np.random.default_rng([check_int("seed", seed, 0), 0xA0F])
        self.knobs = resource_knobs(service, pipeline, keys)
        self.seed = seed
        self._seen: dict[Point, PerfPoint] = {}
        self._narrow: dict[int, TorchRanker] = {}  # a trained ranker per width below the running one

    # ------------------------------------------------------------------ evaluation on twins
    def current(self) -> Point:
        return tuple(self.service.agent(k.agent).hidden if k.key == WIDTH else self.service.agent(k.agent).config[k.key]
                     for k in self.knobs)

    def ranker_of_width(self, width: int) -> TorchRanker:
        """The running MLP ranker narrowed to ``width``: a new ranker of that width trained on what the running one
        remembered, with as many gradient steps as it has taken (capped), once per width; the running one itself at
        its own width."""
        knob = next(k for k in self.knobs if k.key == WIDTH)
        running: TorchRanker = self.service.agent(knob.agent)
        if width == running.hidden:
            return running
        if width not in self._narrow:
            ranker = TorchRanker(running.in_dim, running.num_segments, running.num_routes, arch=running.arch,
                                 hidden=width, per_segment=running.per_segment, name=running.name,
                                 config=dict(running.config), seed=self.seed, loss_weights=running.loss_weights)
            ranker.learn_from(running.memory(), min_updates=min(running.updates, WIDTH_UPDATES))
            self._narrow[width] = ranker
        return self._narrow[width]

    def _deploy(self, service: DeploymentService, values: Point) -> None:
        """Set ``values`` on ``service``: the configs, and a narrower ranker in the running one's place."""
        for knob, value in zip(self.knobs, values):
            if knob.key != WIDTH:
                service.deploy_config(knob.agent, {knob.key: value})
            elif value != service.agent(knob.agent).hidden:
                system = copy.deepcopy(service.system)
                name = service.pipeline_of(knob.agent)
                pipe = next(p for p in system.pipelines if p.name == name)
                pipe.ranker = copy.deepcopy(self.ranker_of_width(int(value)))
                service.deploy_system(system)

    def evaluate(self, values: Point) -> PerfPoint:
        """Serve ``values`` on a twin of the service (learning off): expected clicks and compute per request."""
        if values in self._seen:
            return self._seen[values]
        twin = self.service.fork()
        if twin.resources is None:
            raise ConfigError("AutoPerf needs a resource profile: call service.calibrate_resources() first")
        self._deploy(twin, values)
        clicks, cost, p99 = [], [], []
        for _ in range(self.windows):
            served = twin.serve(learn=False)
            _, terms = twin.score(served)
            clicks.append(terms[CLICKS])
            cost.append(terms[COST])
            p99.append(terms[P99])
        point = PerfPoint(values, float(np.mean(clicks)), float(np.mean(cost)), float(np.mean(p99)))
        self._seen[values] = point
        return point

    def _proposals(self, around: Point, n: int) -> list[Point]:
        """``n`` configs not evaluated yet: half neighbours of ``around`` (one or two knobs moved one option), half
        uniform draws (a few tries each; fewer when the space runs out)."""
        out: list[Point] = []
        for i in range(20 * n):
            if len(out) == n:
                break
            if i % 2 == 0:
                values = list(around)
                for j in self.rng.choice(len(self.knobs), size=self.rng.integers(1, min(2, len(self.knobs)) + 1),
                                         replace=False):
                    options = self.knobs[j].options
                    at = options.index(values[j])
                    values[j] = options[int(np.clip(at + self.rng.choice((-1, 1)), 0, len(options) - 1))]
            else:
                values = [k.options[self.rng.integers(len(k.options))] for k in self.knobs]
            point = tuple(values)
            if point not in self._seen and point not in out:
                out.append(point)
        return out

    # ------------------------------------------------------------------ the primal-dual loop
    def run(self) -> AutoPerfResult:
        if self.service.resources is None:
            self.service.calibrate_resources()
        incumbent = self.evaluate(self.current())
        bound = (1.0 - self.max_degradation) * incumbent.clicks
        allowed = self.max_degradation * incumbent.clicks

        def g(p: PerfPoint) -> float:  # the constraint, in units of the allowed loss (<= 0: met)
            return (bound - p.clicks) / allowed

        lam, primal = 0.0, incumbent
        trajectory = []
        for t in range(self.rounds):
            for values in self._proposals(primal.values, self.per_round):
                self.evaluate(values)
            primal = min(self._seen.values(), key=lambda p: (p.cost / incumbent.cost + lam * g(p), p.cost))
            lam = max(0.0, lam + self.dual_lr * g(primal))
            trajectory.append({"round": float(t), "lambda": lam, "constraint": g(primal), "cost": primal.cost,
                               "clicks": primal.clicks, "evaluated": float(len(self._seen))})
            log.info("AutoPerf round %d: lambda %.3f, primal cost %.4f ms (x%.2f), clicks %.4f (g %+.2f)", t, lam,
                     primal.cost, primal.cost / incumbent.cost, primal.clicks, g(primal))
        feasible = [p for p in self._seen.values() if p.clicks >= bound]
        best = min(feasible, key=lambda p: (p.cost, -p.clicks)) if feasible else incumbent
        return AutoPerfResult(self.knobs, incumbent, best, bound, list(self._seen.values()), trajectory)

    def apply(self, result: AutoPerfResult) -> dict[str, dict[str, Any]]:
        """Deploy the result's best point on the service (a narrower ranker too); returns the configs set."""
        self._deploy(self.service, result.best.values)
        return result.config()


# --------------------------------------------------------------------------- the experimentation policy
@dataclass(frozen=True)
class ExperimentPolicy:
    """How the coordinator tests every proposal: the ``share`` of users its challenger serves, for ``windows``
    windows, decided at level ``alpha``."""

    share: float = 0.2
    windows: int = 2
    alpha: float = 0.05

    def __post_init__(self) -> None:
        check_range("share", self.share, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_int("windows", self.windows, 1)
        check_range("alpha", self.alpha, 0.0, 0.5, low_inclusive=False)


EXPERIMENT_POLICIES = tuple(ExperimentPolicy(s, w, a) for s in (0.1, 0.25, 0.5) for w in (1, 2, 4)
                            for a in (0.01, 0.05))  # the default decision space of tune_experiments


@dataclass(frozen=True)
class PolicyOutcome:
    """What one policy did over the horizon on its twin."""

    policy: ExperimentPolicy
    clicks: float  # expected clicks per request over every request of the horizon (the tests' traffic included)
    test_share: float  # of the requests, served by challengers
    rejected_share: float  # served by challengers that were then rejected: the traffic experimenting cost
    shipped: tuple[int, ...]  # the proposals (by position) it shipped


def tune_experiments(service: DeploymentService, proposals: list[Any], horizon: int,
                     policies: tuple[ExperimentPolicy, ...] = EXPERIMENT_POLICIES,
                     **coordinator: Any) -> list[PolicyOutcome]:
    """The experimentation policy as a decision space: every policy runs the same ``proposals`` (each a
    :class:`~agents.evolution.coordinator.Proposal`, its share and windows replaced by the policy's) through a
    coordinator (``coordinator`` its other options, e.g. ``max_degradation``) on its own twin of ``service`` for
    ``horizon`` windows, learning on; the outcomes, best first by expected clicks per request over all the horizon's
    traffic: a policy pays for the traffic its tests serve with worse challengers and for shipping good changes late
    (or never: too little traffic to decide). The answer depends on the proposals: large short tests pay when most
    are good, small ones when most are bad."""
    check_int("horizon", horizon, 1)
    if not proposals or not policies:
        raise ConfigError(f"`proposals` and `policies` must not be empty (got {len(proposals)} and {len(policies)})")
    options = dict(coordinator)
    budget = options.pop("traffic_budget", 0.5)
    out = []
    for policy in policies:
        twin = service.fork()
        coord = Coordinator(twin, traffic_budget=max(policy.share, budget), alpha=policy.alpha, **options)
        ids = [coord.submit(dataclasses.replace(p, share=policy.share, windows=policy.windows,
                                                replace={k: copy.deepcopy(v) for k, v in p.replace.items()}))
               for p in proposals]
        logs = [coord.step() for _ in range(horizon)]
        clicks = float(np.concatenate([lg.requests["clicks_exp"] for lg in logs]).mean())
        summary = coord.summary()
        out.append(PolicyOutcome(policy, clicks, summary["coordinator/test_share"], summary["coordinator/rejected_share"],
                                 tuple(i for i, pid in enumerate(ids) if pid in coord.shipped)))
        log.info("experiment policy %s: clicks %.4f, test share %.3f, shipped %s", policy, clicks,
                 summary["coordinator/test_share"], out[-1].shipped)
    return sorted(out, key=lambda o: -o.clicks)
