"""The coordinator: evolution agents submit proposals; it budgets live test traffic, serialises conflicting changes,
enforces global constraints before anything ships, records every proposal, test and decision, and estimates each
shipped change's contribution on twins.

A :class:`Proposal` is a set of config changes (agent -> partial config) and/or agent replacements (agent -> a new
agent object of the same role, e.g. a ranker AutoTrain built) from one evolution agent (AutoPerf, AutoTrain,
AutoFeature, re-rank evolution, the designer), with the traffic share and the windows its A/B test asks
for, and a goal: ``engagement`` (ship when it raises expected clicks per request, the A/B interval above 0) or
``cost`` (ship when it cuts compute per request without losing more than ``max_degradation`` of the clicks: the
interval's lower end above ``-max_degradation x`` the control's mean). Either way the test's violations guardrail
(the experiment designer's) must hold.

Scheduling (:class:`Scheduler`, pure, property-tested): proposals start in submission order as traffic allows; a
proposal starts only when (i) its share fits in what the running tests leave of ``traffic_budget``, (ii) it
conflicts with no running test and (iii) with no proposal submitted before it that still waits (so conflicting
changes are tested one after the other, in the order they came). Two proposals conflict when they touch a common
pipeline (or agent object): their tests would measure each other.

Serving: every window, each running test gets its own users: user ``u`` is in the first running test ``i`` (by start
order) whose fresh salt hashes ``u`` below its share; the users in no test are the shared control. One system routes
each slice to its test's challenger (copies of the touched pipelines with the changes) and the control to the
running system. Each test's :class:`~agents.decision.functional.ExperimentDesigner` sees its slice against the
control.

Global constraints, checked on every finished test before anything ships: the violations guardrail (the designer's),
the degradation bound (for every goal: the clicks interval's lower end must not fall below ``-max_degradation x``
control), ``cost_budget`` (compute ms per request of the candidate slice, from the resource model, when set) and
``flops_budget`` (the ranker's forward-pass FLOPs per request of the candidate slice: exact, where measured
milliseconds vary with the machine's load).
Every event (queued, started, decided: shipped or rejected, with reasons) is kept in :attr:`Coordinator.events` and,
with a store, each decision as a rollout (agent ``coordinator/<source>#<id>``) and each credit estimate as a design.

The degradation bound is global as well as per test: the cost changes shipped in the coordinator's life together may
lose at most ``max_degradation`` of the clicks: each shipped cost change spends its measured relative loss (effect /
its control's mean, when negative) from that budget, and a cost proposal ships only when the relative loss at its
interval's lower end fits in what is left (engagement gains are not spent on cost cuts).

Without coordination (``coordinate=False``, the baseline the coordinator is judged against, ablation C8) every
proposal starts its test at once on its own users (its own salt and share, independent of the other tests: overlapping
layers, as on platforms where each team runs its own experiments), a user in several tests is served the combination
of their challengers, each test is analysed on its own bit (its control includes the other tests' challengers), and
each is judged by its own agent's rule alone: an engagement proposal ships when the clicks interval lies above 0, a
cost proposal when its own test's clicks interval stays within ``max_degradation x`` its own control (both with the
designer's violations guardrail, as every A/B gate of this project has). No traffic budget, no serialisation, no
global bound, no cost or FLOPs budget.

Credit assignment (:meth:`Coordinator.credit`): for the changes shipped since a snapshot, twins of the snapshot
replay each change alone and all together on the same traffic; a change's contribution is its alone - none, and the
interaction is all - none - sum of the contributions.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.decision.functional import ExperimentDesigner, split_hash
from agents.decision.resources import window_costs
from agents.decision.system import Pipeline, System
from agents.evolution.deployment import DeploymentService
from agents.infra.store import KnowledgeStore
from envs.log import InteractionLog
from envs.validation import ConfigError, check_choice, check_int, check_range

__all__ = ["GOALS", "Coordinator", "Event", "Proposal", "Scheduler"]

log = logging.getLogger(__name__)

GOALS = ("engagement", "cost")


@dataclass(frozen=True)
class Proposal:
    """Config changes one evolution agent wants shipped, and the A/B test it asks for."""

    source: str
    changes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # qualified agent name -> partial config
    share: float = 0.2
    windows: int = 2
    goal: str = "engagement"
    note: str = ""
    replace: Mapping[str, Any] = field(default_factory=dict)  # qualified agent name -> the agent object to put there

    def __post_init__(self) -> None:
        if not self.source:
            raise ConfigError(f"`source` must name the evolution agent proposing (got {self.source!r})")
        if not self.changes and not self.replace:
            raise ConfigError("a proposal must change at least one agent's config (`changes`) or replace an agent "
                              "(`replace`) (got neither)")
        both = set(self.changes) & set(self.replace)
        if both:
            raise ConfigError(f"an agent is either reconfigured or replaced in one proposal (got both for {sorted(both)})")
        check_range("share", self.share, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_int("windows", self.windows, 1)
        check_choice("goal", self.goal, GOALS)

    @property
    def touches(self) -> frozenset[str]:
        """The qualified names of the agents it changes or replaces."""
        return frozenset(self.changes) | frozenset(self.replace)

    @property
    def pipelines(self) -> frozenset[str]:
        return frozenset(name.split("/", 1)[0] for name in self.touches)


@dataclass(frozen=True)
class Event:
    """One entry of the coordinator's record."""

    window: int
    proposal: int
    source: str
    kind: str  # queued, started, shipped, rejected
    reason: str = ""


class Scheduler:
    """Which proposals test when: the rules of the module docstring, with ``conflict(a, b)`` given."""

    def __init__(self, traffic_budget: float, conflict: Any) -> None:
        self.budget = check_range("traffic_budget", traffic_budget, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.conflict = conflict
        self.queue: list[tuple[int, Proposal]] = []
        self.active: dict[int, Proposal] = {}

    def submit(self, pid: int, proposal: Proposal) -> None:
        if proposal.share > self.budget:
            raise ConfigError(f"`share` must be <= the coordinator's traffic_budget {self.budget} "
                              f"(got {proposal.share} from {proposal.source})")
        self.queue.append((pid, proposal))

    def start_ready(self) -> list[int]:
        """Start every queued proposal the rules allow now, in submission order; returns their ids."""
        started, waiting = [], []
        for pid, p in self.queue:
            free = self.budget - sum(a.share for a in self.active.values())
            blocked = (p.share > free + 1e-12 or any(self.conflict(p, a) for a in self.active.values())
                       or any(self.conflict(p, w) for _, w in waiting))
            if blocked:
                waiting.append((pid, p))
            else:
                self.active[pid] = p
                started.append(pid)
        self.queue = waiting
        return started

    def finish(self, pid: int) -> None:
        del self.active[pid]


@dataclass
class _Test:
    pid: int
    proposal: Proposal
    salt: int
    pipelines: list[Pipeline]  # the challenger's copies of the touched pipelines
    designer: ExperimentDesigner
    started: int
    served: int = 0  # windows served
    requests: int = 0  # requests its challenger served
    costs: list[float] = field(default_factory=list)  # compute ms per request of its slice, per window
    flops: list[float] = field(default_factory=list)  # the ranker's FLOPs per request of its slice, per window


def _describe(proposal: Proposal) -> dict[str, Any]:
    """A proposal as plain data for the store: the config changes, and each replacement's class and config."""
    out: dict[str, Any] = {k: dict(v) for k, v in proposal.changes.items()}
    for name, new in proposal.replace.items():
        out[name] = {"replaced_by": type(new).__name__, "name": getattr(new, "name", ""),
                     "config": dict(getattr(new, "config", {}) or {})}
    return out


def _swap(pipeline: Pipeline, old: Any, new: Any) -> None:
    """Put ``new`` where ``old`` serves in ``pipeline`` (a recall route or one of its stages)."""
    if any(r is old for r in pipeline.recalls):
        pipeline.recalls[next(i for i, r in enumerate(pipeline.recalls) if r is old)] = new
        if hasattr(old, "route_id"):
            new.route_id = old.route_id
        return
    slot = next(a for a in ("fusion", "preranker", "ranker", "scorer", "reranker") if getattr(pipeline, a) is old)
    setattr(pipeline, slot, new)


class _Router:
    """Each running test's slice to its challenger pipelines, everyone else to the running system's router."""

    name = "coordinator_router"
    role = "router"

    def __init__(self, running: System, tests: list[_Test], offsets: list[dict[str, int]],
                 pipeline_names: list[str]) -> None:
        self.running, self.tests, self.offsets = running, tests, offsets
        self.pipeline_names = pipeline_names  # the running pipelines', then each test's renamed challengers'
        self.index = {p.name: i for i, p in enumerate(running.pipelines)}

    def arms(self, users: np.ndarray) -> np.ndarray:
        arm = np.full(len(users), -1)
        for i, t in enumerate(self.tests):
            mine = (arm == -1) & (split_hash(users, t.salt) < t.proposal.share)
            arm[mine] = i
        return arm

    def act(self, batch: Any) -> np.ndarray:
        route = np.asarray(self.running.router.act(batch)).copy()
        arm = self.arms(batch.users)
        for i, offsets in enumerate(self.offsets):
            for name, at in offsets.items():
                route[(arm == i) & (route == self.index[name])] = at
        return route

    def observe(self, log: InteractionLog) -> None:
        pass


class _LayeredRouter:
    """Uncoordinated serving: each running test draws its users with its own salt, independently of the others; a
    request of pipeline ``r`` goes to the combination of the challengers of the tests touching ``r`` its user is in."""

    name = "layered_router"
    role = "router"

    def __init__(self, running: System, tests: list[_Test], touching: dict[int, list[int]],
                 at: dict[tuple[int, int], int], pipeline_names: list[str]) -> None:
        self.running, self.tests, self.touching, self.at = running, tests, touching, at
        self.pipeline_names = pipeline_names

    def masks(self, users: np.ndarray) -> np.ndarray:
        """Bit ``i`` set where the user is in test ``i``."""
        mask = np.zeros(len(users), dtype=np.int64)
        for i, t in enumerate(self.tests):
            mask |= (split_hash(users, t.salt) < t.proposal.share).astype(np.int64) << i
        return mask

    def act(self, batch: Any) -> np.ndarray:
        route = np.asarray(self.running.router.act(batch)).copy()
        mask = self.masks(batch.users)
        out = route.copy()
        for r, idx in self.touching.items():
            bits = sum(1 << i for i in idx)
            relevant = mask & bits
            for m in range(1, bits + 1):
                if (m & bits) == m and (r, m) in self.at:
                    out[(route == r) & (relevant == m)] = self.at[(r, m)]
        return out

    def observe(self, log: InteractionLog) -> None:
        pass


class Coordinator:
    """Proposals in, decisions out (module docstring). ``store`` with ``exp_id`` records decisions and credits."""

    def __init__(self, service: DeploymentService, *, traffic_budget: float = 0.5, max_degradation: float = 0.01,
                 cost_budget: float | None = None, flops_budget: float | None = None, min_requests: int = 100,
                 alpha: float = 0.05,
                 store: KnowledgeStore | None = None, exp_id: int | None = None, coordinate: bool = True) -> None:
        if (store is None) != (exp_id is None):
            raise ConfigError("give both `store` and `exp_id` (the experiment the records belong to), or neither")
        self.service = service
        self.max_degradation = check_range("max_degradation", max_degradation, 0.0, 1.0)
        self.cost_budget = None if cost_budget is None else check_range("cost_budget", cost_budget, 0.0)
        self.flops_budget = None if flops_budget is None else check_range("flops_budget", flops_budget, 0.0)
        for key in ("cost_budget", "flops_budget"):
            if getattr(self, key) is not None and service.resources is None:
                raise ConfigError(f"`{key}` needs the resource model: call service.calibrate_resources() first")
        self.min_requests, self.alpha = check_int("min_requests", min_requests, 1), check_range("alpha", alpha, 0.0, 0.5)
        self.store, self.exp_id = store, exp_id
        self.scheduler = Scheduler(traffic_budget, self.conflict)
        self.proposals: dict[int, Proposal] = {}
        self.tests: dict[int, _Test] = {}
        self.events: list[Event] = []
        self.shipped: list[int] = []
        self.window = 0  # windows served by the coordinator
        self.overlaps = 0  # windows in which two running tests touched one pipeline (must stay 0)
        self.requests = 0  # requests served while it coordinated
        self.test_requests = 0  # of those, served by a challenger (the traffic spent on tests)
        self.rejected_requests = 0  # served by a challenger that was then rejected (what experimenting cost)
        self.coordinate = bool(coordinate)  # False: the uncoordinated baseline of the module docstring
        self.spent = 0.0  # the relative clicks loss of the shipped cost changes, summed (the global bound's budget used)
        self._clones: dict[tuple[str, frozenset[int]], Any] = {}  # uncoordinated: changed agents per combination

    # ------------------------------------------------------------------ proposals
    def conflict(self, a: Proposal, b: Proposal) -> bool:
        """Two proposals conflict when they touch a common pipeline or agent object."""
        if a.pipelines & b.pipelines:
            return True
        objects = {id(self.service.agent(n)) for n in a.touches}
        return any(id(self.service.agent(n)) in objects for n in b.touches)

    def submit(self, proposal: Proposal) -> int:
        """Queue a proposal (checked now: every agent exists, every change is a valid config); returns its id."""
        for name, change in proposal.changes.items():
            agent = self.service.agent(name)
            agent.params.validate({**agent.config, **change}, agent=name)
        for name, new in proposal.replace.items():
            old = self.service.agent(name)
            if getattr(new, "role", None) != old.role or new is old:
                raise ConfigError(f"`replace[{name}]` must be a new agent of role {old.role!r} (got "
                                  f"{type(new).__name__} of role {getattr(new, 'role', None)!r}"
                                  f"{', the running agent itself' if new is old else ''})")
        pid = len(self.proposals)
        if self.coordinate:
            self.scheduler.submit(pid, proposal)
        else:  # no budget: every proposal starts at the next window
            self.scheduler.queue.append((pid, proposal))
        self.proposals[pid] = proposal
        self._event(pid, "queued", proposal.note)
        return pid

    def _event(self, pid: int, kind: str, reason: str = "") -> None:
        self.events.append(Event(self.window, pid, self.proposals[pid].source, kind, reason))

    def _challenger(self, proposal: Proposal) -> list[Pipeline]:
        """The touched pipelines as the proposal would have them: each a shallow copy sharing every agent it does not
        change with the running pipeline (those serve and learn from both arms, as one system would), with copies of
        the changed agents configured by the proposal. The running pipelines are left alone."""
        running = {p.name: p for p in self.service.system.pipelines}
        copies: dict[str, Pipeline] = {}
        for name in sorted(proposal.pipelines):
            twin = copy.copy(running[name])
            twin.recalls = list(running[name].recalls)
            copies[name] = twin
        for name, change in proposal.changes.items():
            original = self.service.agent(name)
            clone = copy.deepcopy(original)
            clone.configure(clone.params.validate({**clone.config, **change}, agent=name))
            _swap(copies[name.split("/", 1)[0]], original, clone)
        for name, new in proposal.replace.items():
            _swap(copies[name.split("/", 1)[0]], self.service.agent(name), new)
        return list(copies.values())

    # ------------------------------------------------------------------ serving
    def step(self, on_log: Callable[[InteractionLog], None] | None = None) -> InteractionLog:
        """Start what may start, serve one window with every running test on its users, decide the tests that have
        served their windows; returns the window's log. ``on_log(window)`` runs while the window's system (the running
        pipelines and the challengers) is still deployed, e.g. to score it (:meth:`DeploymentService.score`)."""
        ready = self.scheduler.start_ready() if self.coordinate else [pid for pid, _ in self.scheduler.queue]
        if not self.coordinate:
            self.scheduler.queue = []
        for pid in ready:
            designer = ExperimentDesigner(config={"min_requests": self.min_requests, "alpha": self.alpha},
                                          salt=self.service.new_salt())
            challenger = self._challenger(self.proposals[pid]) if self.coordinate else []
            self.tests[pid] = _Test(pid, self.proposals[pid], designer.salt, challenger, designer, self.window)
            self._event(pid, "started", f"share {self.proposals[pid].share}")
        running = self.service.system
        tests = sorted(self.tests.values(), key=lambda t: t.pid)
        touched = [p for t in tests for p in t.proposal.pipelines]
        if len(touched) != len(set(touched)):
            self.overlaps += 1
        split, arms = (self._disjoint if self.coordinate else self._layered)(running, tests)
        with self.service.serving(split) if tests else contextlib.nullcontext():
            window = self.service.serve()
            if on_log is not None:
                on_log(window)
        self.window += 1
        self.requests += len(window.requests["request"])
        pipes = window.requests["pipeline"]
        self.test_requests += int(np.isin(pipes, sorted({i for _, arm in arms for i in arm})).sum())
        for t, (control, arm) in zip(tests, arms):
            t.designer.observe(window, metric="clicks_exp", guardrail="violations", arms=(control, arm))
            mine = np.isin(pipes, arm)
            t.requests += int(mine.sum())
            if self.service.resources is not None:
                costs = window_costs(self.service.resources, split.pipelines, window.where(mine))
                t.costs.append(costs["compute_ms_per_request"])
                t.flops.append(costs["flops_per_request"])
            t.served += 1
        for t in tests:
            if t.served >= t.proposal.windows:
                self._decide(t)
        return window

    def _disjoint(self, running: System, tests: list[_Test]) -> tuple[System, list[tuple[tuple[int, ...], tuple[int, ...]]]]:
        """Coordinated serving: each test's challengers on its own slice of users; per test (control, arm) indices."""
        n, offsets, extra = len(running.pipelines), [], []
        for t in tests:
            offsets.append({q.name: n + len(extra) + j for j, q in enumerate(t.pipelines)})
            extra += [self._renamed(q, t.pid) for q in t.pipelines]
        pipelines = [*running.pipelines, *extra]
        router = _Router(running, tests, offsets, [q.name for q in pipelines])
        arms = [(tuple(router.index[name] for name in off), tuple(off.values())) for off in offsets]
        return System(pipelines, router, running.route_names), arms

    def _layered(self, running: System, tests: list[_Test]) -> tuple[System, list[tuple[tuple[int, ...], tuple[int, ...]]]]:
        """Uncoordinated serving: for each running pipeline, every combination of the tests touching it gets a
        pipeline with their changes together; test ``i``'s arm is every combination with bit ``i``, its control every
        other one (the running pipeline included)."""
        n = len(running.pipelines)
        touching = {r: [i for i, t in enumerate(tests) if p.name in t.proposal.pipelines]
                    for r, p in enumerate(running.pipelines)}
        extra: list[Pipeline] = []
        at: dict[tuple[int, int], int] = {}
        for r, idx in touching.items():
            for size in range(1, len(idx) + 1):
                for combo in itertools.combinations(idx, size):
                    at[(r, sum(1 << i for i in combo))] = n + len(extra)
                    extra.append(self._combined(running.pipelines[r], [tests[i] for i in combo]))
        arms = []
        for i in range(len(tests)):
            rows = [r for r, idx in touching.items() if i in idx]
            control = tuple(rows) + tuple(j for (r, m), j in at.items() if r in rows and not m >> i & 1)
            arms.append((control, tuple(j for (r, m), j in at.items() if m >> i & 1)))
        pipelines = [*running.pipelines, *extra]
        router = _LayeredRouter(running, tests, touching, at, [q.name for q in pipelines])
        return System(pipelines, router, running.route_names), arms

    def _combined(self, pipeline: Pipeline, tests: list[_Test]) -> Pipeline:
        """``pipeline`` with the changes of ``tests`` together (later tests' values win on a common key): a shallow
        copy sharing every agent none of them changes; a changed agent is one clone per agent and combination, kept
        while that combination is tested (it learns as it serves)."""
        twin = copy.copy(pipeline)
        twin.recalls = list(pipeline.recalls)
        twin.name = f"{pipeline.name}/tests{'+'.join(str(t.pid) for t in tests)}"
        merged: dict[str, dict[str, Any]] = {}
        who: dict[str, set[int]] = {}
        replaced: dict[str, Any] = {}
        for t in tests:
            for name, change in t.proposal.changes.items():
                if name.split("/", 1)[0] == pipeline.name:
                    merged[name] = {**merged.get(name, {}), **change}
                    who.setdefault(name, set()).add(t.pid)
            for name, new in t.proposal.replace.items():
                if name.split("/", 1)[0] == pipeline.name:
                    replaced[name] = new
        for name, new in replaced.items():
            if name not in merged:
                _swap(twin, self.service.agent(name), new)
        for name, change in merged.items():
            key = (name, frozenset(who[name] | {t.pid for t in tests if name in t.proposal.replace}))
            if key not in self._clones:
                clone = copy.deepcopy(replaced.get(name, self.service.agent(name)))
                clone.configure(clone.params.validate({**clone.config, **change}, agent=name))
                self._clones[key] = clone
            _swap(twin, self.service.agent(name), self._clones[key])
        return twin

    @staticmethod
    def _renamed(pipeline: Pipeline, pid: int) -> Pipeline:
        twin = copy.copy(pipeline)
        twin.name = f"{pipeline.name}/test{pid}"
        return twin

    def _decide(self, test: _Test) -> None:
        p = test.proposal
        decision = test.designer.decide("clicks_exp", 0.05)
        control_mean = float(np.mean(np.concatenate(test.designer.outcomes[0])))
        reasons = list(decision.reasons)
        floor = -self.max_degradation * control_mean
        if p.goal == "engagement":
            ok = decision.accepted
        else:  # cost: keep the clicks within the bound; the saving is checked with the budget below
            ok = (decision.ci_low >= floor and decision.guardrail_ok
                  and min(decision.n_incumbent, decision.n_candidate) >= self.min_requests)
            reasons = [r for r in reasons if not r.startswith("interval lower end")]
        if decision.ci_low < floor:
            ok = False
            reasons.append(f"degradation bound: clicks interval low {decision.ci_low:+.4f} < -{self.max_degradation} "
                           f"x control {control_mean:.4f}")
        if self.coordinate:  # the global constraints
            loss = -decision.ci_low / control_mean if control_mean > 0 else 0.0  # relative, at the interval's end
            if p.goal == "cost" and loss > self.max_degradation - self.spent:
                ok = False
                reasons.append(f"global degradation bound: a loss of up to {loss:.2%} of the clicks exceeds the "
                               f"{self.max_degradation - self.spent:.2%} left of {self.max_degradation:.2%} after the "
                               f"cost changes shipped ({self.spent:.2%} spent)")
            if self.cost_budget is not None:
                cost = float(np.mean(test.costs)) if test.costs else float("inf")
                if cost > self.cost_budget:
                    ok = False
                    reasons.append(f"cost budget: {cost:.4f} ms per request > {self.cost_budget}")
            if self.flops_budget is not None:
                flops = float(np.mean(test.flops)) if test.flops else float("inf")
                if flops > self.flops_budget:
                    ok = False
                    reasons.append(f"FLOPs budget: {flops:.4g} ranker FLOPs per request > {self.flops_budget:.4g}")
        if ok:
            for name, change in p.changes.items():
                self.service.deploy_config(name, dict(change))
            running = {q.name: q for q in self.service.system.pipelines}
            for name, new in p.replace.items():
                _swap(running[name.split("/", 1)[0]], self.service.agent(name), new)
            self.shipped.append(test.pid)
            if p.goal == "cost" and control_mean > 0:
                self.spent += max(0.0, -decision.effect / control_mean)
            self._clones = {k: v for k, v in self._clones.items() if k[0] not in p.touches}  # rebuilt on the new state
        if not ok:
            self.rejected_requests += test.requests
        kind = "shipped" if ok else "rejected"
        why = "; ".join(reasons) or f"clicks effect {decision.effect:+.4f} [{decision.ci_low:+.4f}, {decision.ci_high:+.4f}]"
        self._event(test.pid, kind, why)
        log.info("proposal %d from %s %s: %s", test.pid, p.source, kind, why)
        if self.store is not None and self.exp_id is not None:
            self.store.add_rollout(self.exp_id, self.window, f"coordinator/{p.source}#{test.pid}",
                                   _describe(p), "accepted" if ok else "rejected",
                                   effect=decision.effect, ci_low=decision.ci_low, ci_high=decision.ci_high,
                                   p_value=decision.p_value, n_incumbent=decision.n_incumbent,
                                   n_candidate=decision.n_candidate, reasons=reasons)
        del self.tests[test.pid]
        self._clones = {k: v for k, v in self._clones.items() if test.pid not in k[1]}
        if self.coordinate:
            self.scheduler.finish(test.pid)

    def run(self, windows: int) -> None:
        """Serve ``windows`` windows (:meth:`step` each)."""
        for _ in range(check_int("windows", windows, 1)):
            self.step()

    def summary(self) -> dict[str, float]:
        """``coordinator/`` figures: proposals, shipped, rejected, the share of requests spent on tests and on tests
        whose challenger was rejected, the relative clicks loss of the shipped cost changes together
        (``degradation_spent``, coordinated only), the windows in which two tests touched one pipeline
        (``overlapping_windows``: 0 when coordinated) and whether it coordinated."""
        kinds = [e.kind for e in self.events]
        return {"coordinator/proposals": float(len(self.proposals)), "coordinator/shipped": float(kinds.count("shipped")),
                "coordinator/rejected": float(kinds.count("rejected")),
                "coordinator/test_share": self.test_requests / max(self.requests, 1),
                "coordinator/rejected_share": self.rejected_requests / max(self.requests, 1),
                "coordinator/degradation_spent": self.spent,
                "coordinator/overlapping_windows": float(self.overlaps),
                "coordinator/coordinated": float(self.coordinate)}

    @property
    def pending(self) -> int:
        """Proposals queued or under test."""
        return len(self.scheduler.queue) + len(self.tests)

    # ------------------------------------------------------------------ credit assignment
    def credit(self, snapshot: Any, shipped: list[int] | None = None, windows: int = 2) -> dict[str, float]:
        """Each shipped change's contribution since ``snapshot`` (a :meth:`~DeploymentService.snapshot` taken
        before them): twins of the snapshot serve, on the same traffic and without learning, no change, each change
        alone and all of them; returns ``credit/<id>`` (alone - none, expected clicks per request), ``credit/all``
        and ``credit/interaction`` (all - none - the sum). Stored as a design of agent ``coordinator/credit``."""
        ids = self.shipped if shipped is None else shipped
        check_int("windows", windows, 1)

        def value(changes: list[Proposal]) -> float:
            twin = snapshot.fork()
            for p in changes:
                for name, change in p.changes.items():
                    twin.deploy_config(name, dict(change))
                running = {q.name: q for q in twin.system.pipelines}
                for name, new in p.replace.items():
                    _swap(running[name.split("/", 1)[0]], twin.agent(name), copy.deepcopy(new))
            logs = [twin.serve(learn=False) for _ in range(windows)]
            return float(np.mean([lg.requests["clicks_exp"].mean() for lg in logs]))

        none = value([])
        out = {f"credit/{pid}": value([self.proposals[pid]]) - none for pid in ids}
        out["credit/all"] = value([self.proposals[pid] for pid in ids]) - none
        out["credit/interaction"] = out["credit/all"] - sum(out[f"credit/{pid}"] for pid in ids)
        if self.store is not None and self.exp_id is not None:
            self.store.add_design(self.exp_id, "coordinator/credit",
                                  {"shipped": [{"id": pid, "source": self.proposals[pid].source,
                                                "changes": _describe(self.proposals[pid]),
                                                "contribution": out[f"credit/{pid}"]} for pid in ids],
                                   "all": out["credit/all"], "interaction": out["credit/interaction"]},
                                  "twins replay each shipped change alone", "twins", True, None, out["credit/all"])
        return out
