"""Controlled rollout: a candidate config reaches production only through an A/B test with guardrails.

``ab_rollout`` copies the pipeline that holds the target agent, deploys the candidate config in the
copy, and lets the experiment designer split that pipeline's users between the incumbent (arm 0) and
the candidate (arm 1) for a few windows of traffic (``ab_rollout_pipeline`` does the same for any
candidate pipeline, e.g. a new structure). Its decision rule (see ``ExperimentDesigner``) accepts the
candidate only if the interval for the effect on the metric lies above ``min_effect`` and the
guardrail (policy violations per request) does not worsen beyond its tolerance. On acceptance the
candidate pipeline replaces the incumbent; otherwise the incumbent stays. The decision, the effect
and its interval are returned (and can be committed with ``KnowledgeStore.add_rollout``).

Every helper works on a :class:`~agents.evolution.deployment.DeploymentService`: the split is served through
``service.serving`` (the running system is back in place afterwards) and each test splits users with a fresh
salt from ``service.new_salt()`` unless one is given, so successive tests do not put the same users in the
candidate arm.

With a designer whose ``method`` is ``interleaving`` the gate interleaves instead of splitting users: for ``windows``
windows every request of the tested traffic sees the interleaving of the incumbent's and the candidate's slates
(:meth:`~agents.evolution.deployment.Deployment.serve_interleaved`, agents not learning), and the designer judges the
per-request credit difference of ``metric`` (``clicks``, ``clicks_exp``: expected clicks where the log has them,
``dwell``; the guardrail: violations credited to each team). The decision and what follows it are the same.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from agents.decision.functional import ABDecision, ExperimentDesigner
from agents.decision.system import Pipeline, System
from agents.evolution.deployment import ABRouter, DeploymentService, split_systems
from envs.log import InteractionLog
from envs.validation import ConfigError, check_choice, check_int

__all__ = ["INTERLEAVING_METRICS", "ab_rollout", "ab_rollout_pipeline", "ab_test_systems"]

# an A/B metric (a request column) -> the interleaving credit metric of the same outcome
INTERLEAVING_METRICS = {"clicks": "clicks", "clicks_exp": "expected_clicks", "dwell": "dwell", "violations": "violations"}


def ab_rollout(
    service: DeploymentService,
    agent: str,
    candidate: dict[str, Any],
    designer: ExperimentDesigner | None = None,
    windows: int = 2,
    metric: str = "clicks_exp",
    guardrail_tolerance: float | None = 0.05,
    deploy: bool = True,
    on_log: Callable[[InteractionLog], None] | None = None,
    salt: int | None = None,
) -> ABDecision:
    """A/B-test ``candidate`` (a config of ``agent``, a qualified name ``pipeline/role/name``) against the running
    config; deploy it only if it wins (``deploy=False``: only decide, e.g. when the caller owns deployment).
    ``on_log`` receives each A/B window's log (both arms' traffic)."""
    target = service.pipeline_of(agent)
    running = service.agent(agent)
    pipelines = {p.name: p for p in service.system.pipelines}
    incumbent = pipelines[check_choice(f"pipeline of `{agent}` (it must be wired into the running system)", target,
                                       list(pipelines))]
    challenger = copy.deepcopy(incumbent)
    index = next(i for i, a in enumerate(incumbent.agents) if a is running)
    challenger.agents[index].configure(candidate)
    return ab_rollout_pipeline(service, challenger, designer, windows, metric, guardrail_tolerance,
                               target=target, deploy=deploy, on_log=on_log, salt=salt)


def ab_rollout_pipeline(
    service: DeploymentService,
    challenger: Pipeline,
    designer: ExperimentDesigner | None = None,
    windows: int = 2,
    metric: str = "clicks_exp",
    guardrail_tolerance: float | None = 0.05,
    target: str | None = None,
    deploy: bool = True,
    on_log: Callable[[InteractionLog], None] | None = None,
    salt: int | None = None,
) -> ABDecision:
    """A/B-test a whole candidate pipeline (e.g. a new structure) against the running pipeline ``target``.

    ``target`` names the incumbent pipeline (default: the first). Only the traffic the system routes to
    it is split; other pipelines serve as before. The challenger may differ in anything (routes, ranker,
    stages); its recall routes must be among the system's route names. On acceptance it replaces the
    incumbent under the incumbent's name.
    """
    check_int("windows", windows, 1)
    system = service.system
    names = [p.name for p in system.pipelines]
    target = names[0] if target is None else check_choice("target", target, names)
    for r in challenger.recalls:
        check_choice("challenger route", r.name, list(system.route_names))
    index = names.index(target)
    challenger.name = f"{target}/candidate"
    designer = _fresh(service, designer, salt)
    if designer.interleaving:
        pipelines = list(system.pipelines)
        pipelines[index], challenger.name = challenger, target
        decision = _run_interleaved(service, System(pipelines, system.router, system.route_names), designer, windows,
                                    metric, guardrail_tolerance, on_log)
    else:
        decision = _split_pipeline(service, system, challenger, designer, index, windows, metric, guardrail_tolerance,
                                   on_log)
    challenger.name = target
    if decision.accepted and deploy:
        pipelines = list(system.pipelines)
        pipelines[index] = challenger
        service.deploy_system(System(pipelines, system.router, system.route_names))
    return decision


def _split_pipeline(service: DeploymentService, system: System, challenger: Pipeline, designer: ExperimentDesigner,
                    index: int, windows: int, metric: str, guardrail_tolerance: float | None,
                    on_log: Callable[[InteractionLog], None] | None) -> ABDecision:
    """The A/B test of one pipeline: the users the system routes to pipeline ``index`` split by the designer."""
    names = [p.name for p in system.pipelines]
    arms = (index, len(names))
    split = System([*system.pipelines, challenger],
                   ABRouter(designer, system.router, index, [*names, challenger.name]), system.route_names)
    return _run_split(service, split, designer, arms, windows, metric, guardrail_tolerance, on_log)


def ab_test_systems(
    service: DeploymentService,
    challenger: System,
    designer: ExperimentDesigner | None = None,
    windows: int = 2,
    metric: str = "clicks_exp",
    guardrail_tolerance: float | None = 0.05,
    on_log: Callable[[InteractionLog], None] | None = None,
    salt: int | None = None,
) -> ABDecision:
    """A/B-test a whole system (another composition: pipelines and routing) against the running one.

    Users are split by the designer's hash; each arm's system routes its users to its own pipelines.
    Nothing is deployed: the caller deploys on acceptance (``service.deploy_system``). Agents the two
    systems share (the same objects) serve and learn in both arms.
    """
    check_int("windows", windows, 1)
    system = service.system
    designer = _fresh(service, designer, salt)
    if designer.interleaving:
        return _run_interleaved(service, challenger, designer, windows, metric, guardrail_tolerance, on_log)
    n = len(system.pipelines)
    arms = (tuple(range(n)), tuple(range(n, n + len(challenger.pipelines))))
    split = split_systems(system, challenger, designer)
    return _run_split(service, split, designer, arms, windows, metric, guardrail_tolerance, on_log)


def _fresh(service: DeploymentService, designer: ExperimentDesigner | None, salt: int | None) -> ExperimentDesigner:
    """The test's designer, emptied, with a fresh salt (or the one given)."""
    designer = designer or ExperimentDesigner()
    designer.reset()
    designer.salt = service.new_salt() if salt is None else int(salt)
    return designer


def _run_split(service: DeploymentService, split: System, designer: ExperimentDesigner, arms: tuple, windows: int,
               metric: str, guardrail_tolerance: float | None,
               on_log: Callable[[InteractionLog], None] | None = None) -> ABDecision:
    """Serve ``windows`` windows with the split system, feed each arm's outcomes to the designer, decide;
    the running system is back in place afterwards (also on error)."""
    with service.serving(split):
        for _ in range(windows):
            log = service.serve()
            designer.observe(log, metric=metric, guardrail="violations" if guardrail_tolerance is not None else None,
                             arms=arms)
            if on_log is not None:
                on_log(log)
    return designer.decide(metric, guardrail_tolerance)


def _run_interleaved(service: DeploymentService, challenger: System, designer: ExperimentDesigner, windows: int,
                     metric: str, guardrail_tolerance: float | None,
                     on_log: Callable[[InteractionLog], None] | None = None) -> ABDecision:
    """Serve ``windows`` interleaved windows of the running system and ``challenger``, feed each request's credit
    difference (challenger - running) of ``metric``, adjusted for the interleaving's randomised first picks
    (:func:`~agents.evolution.interleaving.adjust_for_design`), and of violations (the guardrail) to the designer,
    decide."""
    check_int("windows", windows, 1)
    if metric not in INTERLEAVING_METRICS:
        raise ConfigError(f"`metric` of an interleaved test must be one of {list(INTERLEAVING_METRICS)} (got {metric!r})")
    for _ in range(windows):
        window = service.serve_interleaved(challenger, learn=False)
        users, diff = window.differences(INTERLEAVING_METRICS[metric])  # adjusted for the coins' first picks
        guard = window.differences("violations", adjust=False)[1] if guardrail_tolerance is not None else None
        designer.observe_paired(diff, users, guard)
        if on_log is not None:
            on_log(window.log)
    return designer.decide(metric, guardrail_tolerance)
