"""Counterfactual twins: K candidates evaluated on identical traffic from one state, an oracle, regret and headroom.

A twin is a fork of a running deployment (:meth:`~agents.evolution.deployment.Deployment.fork`): the same world,
system, learned state and random streams. Serving K twins, each with one candidate deployed, for the same windows
gives each candidate's value on exactly the traffic the others saw (synchronised streams, ``envs.streams``): the
differences between twins are the candidates' effects, not the noise of who happened to arrive.

* :func:`evaluate` - the values of K candidates (configs of one agent, whole systems or compositions) from the
  service's current state, with learning on or off; the service itself is left as it was;
* :func:`oracle` - the best candidate of a grid for the current regime, and the regret of any candidate against it;
* :func:`headroom` - how much a static config loses to the per-regime oracle now; :func:`shift_headroom` the same
  before and after each scheduled shift of the world, the check an evolution claim needs before it can be tested;
* the value :func:`evaluate` returns for a policy is its exact counterfactual value on this traffic: the ground
  truth against which off-policy estimators are judged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.decision.system import System
from agents.evolution.deployment import DeploymentService
from envs.log import InteractionLog
from envs.validation import ConfigError, check_choice, check_int
from rewards.outer import OUTCOMES, outcome_key, outer_metrics

__all__ = ["HeadroomCheck", "OracleResult", "TwinValue", "evaluate", "headroom", "oracle", "shift_headroom"]

DEFAULT_METRIC = "outer/engagement/clicks_per_request"


@dataclass
class TwinValue:
    """One candidate's twin: its value (the metric over the twin's windows), both outcome versions and its logs."""

    candidate: Any
    value: float
    expected: float
    realised: float
    logs: list[InteractionLog] = field(repr=False)


@dataclass
class OracleResult:
    """The best of a grid on identical traffic (the per-regime oracle) and every candidate's value."""

    best: int
    values: list[TwinValue]
    day: float

    @property
    def best_value(self) -> float:
        return self.values[self.best].value

    @property
    def best_candidate(self) -> Any:
        return self.values[self.best].candidate

    def regret(self, value: float | int) -> float:
        """The oracle's value minus ``value`` (a number, or the index of a candidate of the grid)."""
        v = self.values[value].value if isinstance(value, (int, np.integer)) else float(value)
        return self.best_value - v


@dataclass
class HeadroomCheck:
    """How much a static candidate loses to the oracle of a grid at one point of a run."""

    label: str  # e.g. "day 3.9 (before segment_mix on day 4)"
    day: float
    static: float
    oracle: float
    best: Any

    @property
    def gap(self) -> float:
        return self.oracle - self.static


def _value(logs: list[InteractionLog], metric: str, outcome: str) -> tuple[float, float, float]:
    m = outer_metrics(InteractionLog.concat(logs))
    expected, realised = m[outcome_key(metric, "expected")], m[metric]
    return (expected if outcome == "expected" else realised), float(expected), float(realised)


def evaluate(service: DeploymentService, candidates: Sequence[Any], *, agent: str | None = None, windows: int = 1,
             learn: bool = False, metric: str = DEFAULT_METRIC, outcome: str = "expected",
             score: Callable[[DeploymentService, InteractionLog], float] | None = None) -> list[TwinValue]:
    """Serve each candidate on its own twin of ``service`` for ``windows`` windows from the current state.

    A candidate is a config dict of ``agent`` (merged over its current config, :meth:`deploy_config`), a
    :class:`~agents.decision.system.System`, or a composition (with a component pool). ``learn``: whether the
    twins' agents learn from the windows they serve (the value then includes what each candidate teaches the
    system; over one window it changes nothing, as agents learn after the window). ``metric``: an outer metric
    (``rewards.outer.OUTER_KEYS``), judged in its ``outcome`` version (``expected`` by default; both are returned).
    ``score(twin, log)``, when given, is the value instead (e.g. a run's reward: ``twin.score(log, agent)[0]``;
    ``expected`` and ``realised`` stay the metric's). The service is not changed.
    """
    check_int("windows", windows, 1)
    check_choice("outcome", outcome, OUTCOMES)
    if not candidates:
        raise ConfigError("`candidates` must hold at least one candidate (got none)")
    out = []
    for cand in candidates:
        twin = service.fork()
        if isinstance(cand, dict):
            if agent is None:
                raise ConfigError("config candidates need `agent` (the qualified name of the agent they configure)")
            twin.deploy_config(agent, cand)
        elif isinstance(cand, System):
            twin.deploy_system(cand)
        else:
            twin.deploy_composition(cand)
        logs = [twin.serve(learn=learn) for _ in range(windows)]
        value, expected, realised = _value(logs, metric, outcome)
        if score is not None:
            value = float(score(twin, InteractionLog.concat(logs)))
        out.append(TwinValue(cand, value, expected, realised, logs))
    return out


def oracle(service: DeploymentService, grid: Sequence[Any], **kwargs: Any) -> OracleResult:
    """The best candidate of ``grid`` on identical traffic from the current state (see :func:`evaluate`)."""
    values = evaluate(service, grid, **kwargs)
    scores = [v.value if math.isfinite(v.value) else -math.inf for v in values]
    return OracleResult(int(np.argmax(scores)), values, service.now)


def headroom(service: DeploymentService, static: Any, grid: Sequence[Any], label: str = "", **kwargs: Any) -> HeadroomCheck:
    """The gap between the oracle of ``grid`` and the ``static`` candidate, on identical traffic from now."""
    result = oracle(service, [static, *grid], **kwargs)
    return HeadroomCheck(label or f"day {service.now:.2f}", service.now, result.values[0].value, result.best_value,
                         result.best_candidate)


def shift_headroom(service: DeploymentService, static: Any, grid: Sequence[Any], shifts: Sequence[Any], *,
                   steps_per_day: int, steps_per_window: int, margin_days: float = 0.5,
                   **kwargs: Any) -> list[HeadroomCheck]:
    """Headroom before and after every scheduled shift (``shifts``: the world config's ``shifts``, each with
    ``day`` and ``kind``): the service is advanced (with the running system, learning as configured) to
    ``margin_days`` before each shift, checked, advanced to ``margin_days`` after it, checked again. The service is
    advanced in place (fork it first to keep it)."""
    checks = []
    for shift in sorted(shifts, key=lambda s: s.day):
        for when, day in (("before", shift.day - margin_days), ("after", shift.day + margin_days)):
            steps = math.ceil((day - service.now) * steps_per_day / steps_per_window)
            if steps > 0:
                service.advance(steps)
            checks.append(headroom(service, static, grid, f"day {service.now:.2f} ({when} {shift.kind} on day {shift.day})",
                                   **kwargs))
    return checks
