"""Controlled rollout: a candidate config reaches production only through an A/B test with guardrails.

``ab_rollout`` copies the pipeline that holds the target agent, deploys the candidate config in the
copy, and lets the experiment designer split users between the incumbent (arm 0) and the candidate
(arm 1) for a few windows of traffic. Its decision rule (see ``ExperimentDesigner``) accepts the
candidate only if the interval for the effect on the metric lies above ``min_effect`` and the
guardrail (policy violations per request) does not worsen beyond its tolerance. On acceptance the
candidate pipeline replaces the incumbent; otherwise the incumbent stays. The decision, the effect
and its interval are returned (and can be committed with ``KnowledgeStore.add_rollout``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from agents.decision.context import RequestBatch
from agents.decision.functional import ABDecision, ExperimentDesigner
from agents.decision.system import Pipeline, Simulation, System
from agents.infra.log import InteractionLog
from envs.validation import ConfigError, check_choice, check_int

__all__ = ["ABRouter", "ab_rollout", "ab_rollout_pipeline"]


class ABRouter:
    """Routes each user to arm 0 or 1 by the experiment designer's hash (not an evolvable agent)."""

    name = "ab_router"
    role = "router"

    def __init__(self, designer: ExperimentDesigner, pipeline_names: list[str]) -> None:
        self.designer, self.pipeline_names = designer, list(pipeline_names)

    def act(self, batch: RequestBatch) -> np.ndarray:
        return self.designer.arm(batch.users)

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
) -> ABDecision:
    """A/B-test ``candidate`` (a config of ``agent``) against the running config; deploy it only if it wins."""
    system = sim.system
    if len(system.pipelines) != 1:
        raise ConfigError(f"ab_rollout runs on a single-pipeline system (got {len(system.pipelines)} pipelines)")
    incumbent = system.pipelines[0]
    check_choice("agent", agent, [a.name for a in incumbent.agents])
    challenger = copy.deepcopy(incumbent)
    next(a for a in challenger.agents if a.name == agent).configure(candidate)
    return ab_rollout_pipeline(sim, challenger, designer, windows, window, metric, guardrail_tolerance)


def ab_rollout_pipeline(
    sim: Simulation,
    challenger: Pipeline,
    designer: ExperimentDesigner | None = None,
    windows: int = 2,
    window: int = 2000,
    metric: str = "clicks",
    guardrail_tolerance: float | None = 0.05,
) -> ABDecision:
    """A/B-test a whole candidate pipeline (e.g. a new structure) against the running single pipeline.

    The challenger may differ in anything (routes, ranker, stages); its recall routes must be among the
    system's route names. On acceptance it replaces the incumbent under the incumbent's name.
    """
    check_int("windows", windows, 1)
    system = sim.system
    if len(system.pipelines) != 1:
        raise ConfigError(f"ab_rollout runs on a single-pipeline system (got {len(system.pipelines)} pipelines)")
    for r in challenger.recalls:
        check_choice("challenger route", r.name, list(system.route_names))
    incumbent = system.pipelines[0]
    name = incumbent.name
    challenger.name = f"{name}/candidate"
    designer = designer or ExperimentDesigner()
    designer.reset()
    sim.system = System([incumbent, challenger], ABRouter(designer, [incumbent.name, challenger.name]),
                        system.route_names)
    try:
        for _ in range(windows):
            log = sim.window(window)
            designer.observe(log, metric=metric, guardrail="violations" if guardrail_tolerance is not None else None)
        decision = designer.decide(metric, guardrail_tolerance)
    finally:
        sim.system = system
    challenger.name = name
    if decision.accepted:
        system.pipelines[0] = challenger
        for r in challenger.recalls:  # route ids are positions in the system's route names
            r.route_id = system.route_names.index(r.name)
    return decision
