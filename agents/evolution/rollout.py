"""Controlled rollout: a candidate config reaches production only through an A/B test with guardrails.

``ab_rollout`` copies the pipeline that holds the target agent, deploys the candidate config in the
copy, and lets the experiment designer split that pipeline's users between the incumbent (arm 0) and
the candidate (arm 1) for a few windows of traffic (``ab_rollout_pipeline`` does the same for any
candidate pipeline, e.g. a new structure). Its decision rule (see ``ExperimentDesigner``) accepts the
candidate only if the interval for the effect on the metric lies above ``min_effect`` and the
guardrail (policy violations per request) does not worsen beyond its tolerance. On acceptance the
candidate pipeline replaces the incumbent; otherwise the incumbent stays. The decision, the effect
and its interval are returned (and can be committed with ``KnowledgeStore.add_rollout``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from agents.decision.context import RequestBatch
from agents.decision.functional import ABDecision, ExperimentDesigner
from agents.decision.system import Pipeline, Simulation, System
from envs.log import InteractionLog
from envs.validation import check_choice, check_int

__all__ = ["ABRouter", "ABSystemRouter", "ab_rollout", "ab_rollout_pipeline", "ab_test_systems"]


class ABRouter:
    """Sends the candidate's share of one pipeline's users to its challenger copy (not an evolvable agent).

    The system's own router picks each request's pipeline; requests routed to pipeline ``target`` whose
    user the experiment designer's hash puts in arm 1 go to the challenger, appended as pipeline
    ``challenger`` (the last one).
    """

    name = "ab_router"
    role = "router"

    def __init__(self, designer: ExperimentDesigner, base: Any, target: int, pipeline_names: list[str]) -> None:
        self.designer, self.base, self.target = designer, base, target
        self.pipeline_names = list(pipeline_names)
        self.challenger = len(self.pipeline_names) - 1

    def act(self, batch: RequestBatch) -> np.ndarray:
        pipe = np.asarray(self.base.act(batch)).copy()
        pipe[(pipe == self.target) & (self.designer.arm(batch.users) == 1)] = self.challenger
        return pipe

    def observe(self, log: InteractionLog) -> None:
        pass


def ab_rollout(
    sim: Simulation,
    agent: str,
    candidate: dict[str, Any],
    designer: ExperimentDesigner | None = None,
    windows: int = 2,
    window: int = 2000,
    metric: str = "clicks",
    guardrail_tolerance: float | None = 0.05,
    deploy: bool = True,
    on_log: Callable[[InteractionLog], None] | None = None,
) -> ABDecision:
    """A/B-test ``candidate`` (a config of ``agent``) against the running config; deploy it only if it wins
    (``deploy=False``: only decide, e.g. when the caller owns deployment). ``on_log`` receives each A/B
    window's log (both arms' traffic)."""
    system = sim.system
    owners = {a.name: p for p in system.pipelines for a in p.agents}
    check_choice("agent", agent, list(owners))
    incumbent = owners[agent]
    challenger = copy.deepcopy(incumbent)
    next(a for a in challenger.agents if a.name == agent).configure(candidate)
    return ab_rollout_pipeline(sim, challenger, designer, windows, window, metric, guardrail_tolerance,
                               target=incumbent.name, deploy=deploy, on_log=on_log)


def ab_rollout_pipeline(
    sim: Simulation,
    challenger: Pipeline,
    designer: ExperimentDesigner | None = None,
    windows: int = 2,
    window: int = 2000,
    metric: str = "clicks",
    guardrail_tolerance: float | None = 0.05,
    target: str | None = None,
    deploy: bool = True,
    on_log: Callable[[InteractionLog], None] | None = None,
) -> ABDecision:
    """A/B-test a whole candidate pipeline (e.g. a new structure) against the running pipeline ``target``.

    ``target`` names the incumbent pipeline (default: the first). Only the traffic the system routes to
    it is split; other pipelines serve as before. The challenger may differ in anything (routes, ranker,
    stages); its recall routes must be among the system's route names. On acceptance it replaces the
    incumbent under the incumbent's name.
    """
    check_int("windows", windows, 1)
    system = sim.system
    names = [p.name for p in system.pipelines]
    target = names[0] if target is None else check_choice("target", target, names)
    for r in challenger.recalls:
        check_choice("challenger route", r.name, list(system.route_names))
    index = names.index(target)
    challenger.name = f"{target}/candidate"
    designer = designer or ExperimentDesigner()
    designer.reset()
    arms = (index, len(names))
    split = System([*system.pipelines, challenger],
                   ABRouter(designer, system.router, index, [*names, challenger.name]), system.route_names)
    decision = _run_split(sim, split, designer, arms, windows, window, metric, guardrail_tolerance, on_log)
    challenger.name = target
    if decision.accepted and deploy:
        system.pipelines[index] = challenger
        for r in challenger.recalls:  # route ids are positions in the system's route names
            r.route_id = system.route_names.index(r.name)
    return decision


class ABSystemRouter:
    """Arm 0 users are served by the incumbent system's pipelines, arm 1 users by the challenger's."""

    name = "ab_system_router"
    role = "router"

    def __init__(self, designer: ExperimentDesigner, incumbent: System, challenger: System) -> None:
        self.designer, self.incumbent, self.challenger = designer, incumbent, challenger
        self.offset = len(incumbent.pipelines)
        self.pipeline_names = [p.name for p in incumbent.pipelines] + [f"{p.name}/candidate" for p in challenger.pipelines]

    def act(self, batch: RequestBatch) -> np.ndarray:
        arm = self.designer.arm(batch.users)
        return np.where(arm == 1, self.offset + np.asarray(self.challenger.router.act(batch)),
                        np.asarray(self.incumbent.router.act(batch)))

    def observe(self, log: InteractionLog) -> None:
        pass


def ab_test_systems(
    sim: Simulation,
    challenger: System,
    designer: ExperimentDesigner | None = None,
    windows: int = 2,
    window: int = 2000,
    metric: str = "clicks",
    guardrail_tolerance: float | None = 0.05,
    on_log: Callable[[InteractionLog], None] | None = None,
) -> ABDecision:
    """A/B-test a whole system (another composition: pipelines and routing) against the running one.

    Users are split by the designer's hash; each arm's system routes its users to its own pipelines.
    Nothing is deployed: the caller swaps systems on acceptance. Agents the two systems share (the same
    objects) serve and learn in both arms.
    """
    check_int("windows", windows, 1)
    system = sim.system
    renamed = []
    for p in challenger.pipelines:
        q = copy.copy(p)
        q.name = f"{p.name}/candidate"
        renamed.append(q)
    designer = designer or ExperimentDesigner()
    designer.reset()
    router = ABSystemRouter(designer, system, challenger)
    n = len(system.pipelines)
    arms = (tuple(range(n)), tuple(range(n, n + len(renamed))))
    split = System([*system.pipelines, *renamed], router, system.route_names)
    return _run_split(sim, split, designer, arms, windows, window, metric, guardrail_tolerance, on_log)


def _run_split(sim: Simulation, split: System, designer: ExperimentDesigner, arms: tuple, windows: int, window: int,
               metric: str, guardrail_tolerance: float | None,
               on_log: Callable[[InteractionLog], None] | None = None) -> ABDecision:
    """Serve ``windows`` windows with the split system, feed each arm's outcomes to the designer, decide;
    the running system is back in place afterwards (also on error)."""
    system = sim.system
    sim.system = split
    try:
        for _ in range(windows):
            log = sim.window(window)
            designer.observe(log, metric=metric, guardrail="violations" if guardrail_tolerance is not None else None,
                             arms=arms)
            if on_log is not None:
                on_log(log)
        return designer.decide(metric, guardrail_tolerance)
    finally:
        sim.system = system
