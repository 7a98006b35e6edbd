"""The alternation schedule: evolve one agent until gains saturate or a shift is detected, then explore
compositions, then resume; every phase's winner reaches production only through an A/B gate.

Tests used (stated, and configurable):

* **saturation** (:class:`SaturationTest`): a phase has saturated when the best reward of its last
  ``patience`` windows beats the best reward before them by less than ``min_gain`` (relative to the
  magnitude of the earlier best), after at least ``min_windows`` windows.
* **shift** (:class:`ShiftTest`): every ``check_every`` windows a sentinel window serves the incumbent
  (production) decisions; a shift is declared when its outer reward differs by more than ``tolerance``
  (relative) from the reference: the mean of the two sentinels before it, once they agree within the
  tolerance. Only sentinels at least ``settle`` windows after production (re)started count (the
  run's start, an accepted gate, a detected shift), so the learning that follows a (re)start (an
  untrained system's first windows climb far more than 20%) is never compared with a settled system;
  a slow drift of the settled reward is followed, an abrupt change is caught. The tolerance must exceed
  the sentinel window's noise by a few standard errors (clicks per request over 200 requests: ~10%
  relative). A detected shift ends the phase and is recorded in the store.

The loop (``alternate``) reads top to bottom: propose -> serve a window -> tell -> commit the trial;
at a phase end, A/B the phase's best candidate against production (``ab_rollout`` for an agent config,
``ab_test_systems`` for a composition), deploy only an accepted one, commit the decision; switch phase.

With ``share`` < 1 every exploration window is itself a test: the candidate (the agent's config, or the wiring)
serves ``share`` of the users and production the rest (the env's concurrent control, a fresh split per window,
:meth:`~agents.evolution.composition.CompositionEnv.explore`), the controller is told the candidate's reward minus
production's, and ``ship`` (optional, e.g. a ship test) may move production to the candidate after the window.
Sentinels and gates serve as before (a sentinel serves production to everyone); the saturation test reads the
candidate's own reward (``evolution/candidate_reward``: a relative reward near 0 has no scale to be relative to).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.decision.functional import ExperimentDesigner
from agents.evolution.composition import CompositionEnv
from agents.evolution.rollout import ab_rollout, ab_test_systems
from envs.validation import ConfigError, check_choice, check_int, check_range

__all__ = ["PHASES", "AlternationHistory", "SaturationTest", "ShiftTest", "alternate"]

log = logging.getLogger(__name__)

PHASES = ("individual", "compositional")


@dataclass
class SaturationTest:
    """Gains saturate when the last ``patience`` windows improve the phase's best by < ``min_gain`` (relative)."""

    patience: int = 6
    min_gain: float = 0.01
    min_windows: int = 8

    def __post_init__(self) -> None:
        check_int("saturation.patience", self.patience, 1)
        check_range("saturation.min_gain", self.min_gain, 0.0)
        check_int("saturation.min_windows", self.min_windows, self.patience + 1)

    def __call__(self, rewards: list[float]) -> bool:
        if len(rewards) < self.min_windows:
            return False
        before, recent = max(rewards[: -self.patience]), max(rewards[-self.patience :])
        return recent - before < self.min_gain * max(abs(before), 1e-9)


@dataclass
class ShiftTest:
    """A sentinel window of production every ``check_every`` windows; a shift when its outer reward leaves
    the band of ``tolerance`` (relative) around the reference (:meth:`reference`: the mean of the last
    ``REFERENCE`` settled sentinels, once they agree within the tolerance).

    A sentinel is settled when it comes at least ``settle`` windows after production (re)started (the run's
    start, an accepted gate, a detected shift): before that the system is still learning (an untrained
    system's clicks per request climb far more than 20% in its first windows) and its sentinels are only
    recorded. Calling the test, ``test(reference, sentinel)``, is the band alone; :meth:`detect` is the
    whole test on the settled sentinels of one deployment.
    """

    REFERENCE = 2  # settled sentinels that form the reference

    check_every: int = 5
    tolerance: float = 0.2
    settle: int = 8  # windows after production (re)started before its sentinels count

    def __post_init__(self) -> None:
        check_int("shift.check_every", self.check_every, 1)
        check_range("shift.tolerance", self.tolerance, 0.0, low_inclusive=False)
        check_int("shift.settle", self.settle, 0)

    def __call__(self, reference: float, sentinel: float) -> bool:
        return abs(sentinel - reference) > self.tolerance * max(abs(reference), 1e-9)

    def settled(self, windows: int) -> bool:
        """Whether a sentinel served after ``windows`` windows of production (since it (re)started) counts."""
        return windows >= self.settle

    def reference(self, sentinels: Sequence[float]) -> float | None:
        """The mean of the last ``REFERENCE`` settled sentinels when they agree within the tolerance
        (relative to their mean); None before (too few, or still moving: learning has not settled)."""
        if len(sentinels) < self.REFERENCE:
            return None
        last = [float(x) for x in sentinels[-self.REFERENCE :]]
        mean = sum(last) / len(last)
        agree = max(last) - min(last) <= self.tolerance * max(abs(mean), 1e-9)
        return mean if agree else None

    def detect(self, sentinels: Sequence[float]) -> bool:
        """Whether the last of ``sentinels`` (production's settled ones, in order, since it last (re)started)
        leaves the band around the reference of the ones before it; never before a reference exists."""
        reference = self.reference(sentinels[:-1])
        return reference is not None and self(reference, sentinels[-1])


@dataclass
class AlternationHistory:
    """Every window served, in order: exploration windows (phase ``individual``/``compositional``), sentinel
    windows of production (``sentinel``) and A/B gate windows (``gate``); the phase switches, shifts and gate
    decisions. ``window`` in rows, switches, shifts and gates counts exploration windows; a row's ``served``
    counts every window served."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    switches: list[tuple[int, str, str]] = field(default_factory=list)  # (window, new phase, why)
    shifts: list[int] = field(default_factory=list)  # windows at which a shift was detected
    gates: list[dict[str, Any]] = field(default_factory=list)

    @property
    def served(self) -> int:
        return len(self.rows)


def alternate(
    env: CompositionEnv,
    agent: str,
    individual: Callable[[Any], Any],
    compositional: Callable[[CompositionEnv], Any],
    windows: int,
    seed: int | None = None,
    saturation: SaturationTest | None = None,
    shift: ShiftTest | None = None,
    designer: Callable[[], ExperimentDesigner] | None = None,
    gate_windows: int = 2,
    store: Any = None,
    exp_id: int | None = None,
    on_window: Callable[[dict[str, Any]], None] | None = None,
    share: float = 1.0,
    ship: Callable[[], dict[str, float]] | None = None,
) -> AlternationHistory:
    """Alternate individual evolution of ``agent`` (a pooled agent of ``env``) and compositional evolution.

    ``individual(params)`` and ``compositional(env)`` build fresh controllers (``propose``/``tell``) at
    each phase start; the individual controller is told the agent's layered reward, the compositional
    one the system's (outer) reward. ``windows`` counts every window served: exploration, sentinel and A/B gate
    windows alike, so the schedule serves as much traffic over as many simulated days as an arm that explores every
    window (it ends on the same day, and what it found is served from there); a sentinel or a gate that would not
    fit in what is left is skipped. Every window served is a row of the history, passed to ``on_window``
    (``env.service.last_log`` is its log) and, with a ``store``, committed as a trial of ``exp_id`` at step
    ``served`` (agent: ``agent``, ``composition``, ``production`` for a sentinel, ``gate`` for an A/B window, whose
    reward is the whole window's outer reward, both arms together).

    ``share`` < 1: exploration windows explore on that share of the users, production serving the rest (see the
    module's docstring); ``ship()``, called after each such window, returns figures for its row and, when its
    ``ship/shipped`` is 1, has moved production to the window's candidate (through the env's ``deploy_control``).
    """
    check_int("windows", windows, 1)
    check_int("gate_windows", gate_windows, 1)
    check_range("share", share, 0.0, 1.0, low_inclusive=False)
    if ship is not None and share >= 1.0:
        raise ConfigError(f"a ship test compares the candidate with production on one window, so it needs `share` < 1 "
                          f"(got share={share})")
    saturation, shift = saturation or SaturationTest(), shift or ShiftTest()
    designer = designer or (lambda: ExperimentDesigner(config={"min_requests": 1000}))
    obs, _ = env.reset(seed=seed)
    service = env.service
    target = service.agent(agent)
    check_choice("agent role", target.role, ["rerank", "fusion", "ranking"])  # agents with one instance per slot
    history = AlternationHistory()
    done = set(store.completed_steps(exp_id)) if store is not None else set()

    def record(step: int, phase: str, reward: float, outer: float, terms: dict[str, Any], served: dict[str, Any],
               ctrl_name: str, regime: np.ndarray) -> None:
        row = {"window": step, "served": history.served, "phase": phase, "reward": float(reward), "outer": float(outer),
               "day": service.now, "composition": served["composition"].key(),
               **{f"config/{k}": v for k, v in served["config"].items()},
               **{k: v for k, v in terms.items() if k.startswith(("outer/", "layered/", "inner/", "evolution/", "ship/"))}}
        history.rows.append(row)
        if store is not None and row["served"] not in done:
            who = {"individual": agent, "compositional": "composition", "sentinel": "production"}.get(phase, phase)
            store.add_trial(exp_id, row["served"], who, f"{phase}/{ctrl_name}",
                            {"config": served["config"], "composition": row["composition"]},
                            [float(x) for x in regime[:4]],
                            {k: v for k, v in row.items() if k.startswith("inner/")},
                            {k: v for k, v in row.items() if k.startswith("outer/")}, float(reward))
        if on_window is not None:
            on_window(row)

    def sentinel(step: int) -> float:
        """One window of the production decisions; returns its outer reward."""
        env.configure_agent(agent, production["config"])
        regime, outer, _, _, info = env.step(env.encode(production["composition"]))
        record(step, "sentinel", outer, outer, info, production, "production", regime)
        return float(outer)

    def gate_window(step: int, phase: str) -> Callable[[Any], None]:
        def on_log(window_log: Any) -> None:
            outer, terms = env.service.score(window_log)
            record(step, "gate", outer, outer, terms, production, phase, obs)
        return on_log

    production = {"config": dict(target.config), "composition": env.composition}
    if share < 1.0:
        env.explore(agent)  # the control's copy of the agent, at production's config

    def explore_window(candidate_config: dict[str, Any], composition: Any, explored: str) -> tuple:
        """Serve one exploration window (split with production when ``share`` < 1); returns the env's step."""
        env.configure_agent(agent, candidate_config)
        if share >= 1.0:
            return env.step(env.encode(composition))
        env.explore(explored)
        env.set_control_share(round(1.0 - share, 6))
        try:
            return env.step(env.encode(composition))
        finally:
            env.set_control_share(0.0)

    def synced() -> dict[str, Any]:
        """Production as the env's control holds it (after a ship moved it)."""
        return {"config": env.control_config(agent), "composition": env.control}

    sentinel(0)  # recorded; the system is untrained, so it is no reference
    sentinels: list[float] = []  # production's settled sentinels since it last (re)started, at window `start`
    start = 0
    phase, ctrl = PHASES[0], individual(target.params)
    phase_rewards: list[float] = []
    phase_best: tuple[float, Any] | None = None
    history.switches.append((0, phase, "start"))

    for step in itertools.count():
        if history.served >= windows:
            break
        # ---- propose and serve one exploration window
        candidate = ctrl.propose(obs)
        if phase == "individual":
            next_obs, told, _, _, info = explore_window(candidate, production["composition"], agent)
            served = {"config": dict(target.config), "composition": production["composition"]}
        else:
            next_obs, told, _, _, info = explore_window(production["config"], env.from_config(candidate), "")
            served = {"config": production["config"], "composition": env.from_config(candidate)}
        outer, whole = service.score(service.last_log)  # the system's reward, the whole window
        terms = {}
        if phase == "individual":  # the agent's layered reward (with a share the env told it: candidate - control)
            reward, terms = service.score(service.last_log, agent)
            told = told if share < 1.0 else reward
        own = float(info.get("evolution/candidate_reward", told))  # the candidate's reward (its users' with a share)
        ctrl.tell(candidate, told, obs)
        shipped = ship() if ship is not None else {}
        if share < 1.0:
            env.explore("")  # sentinels score the system
        record(step, phase, told, outer, {**whole, **info, **terms, **shipped}, served,
               getattr(ctrl, "name", type(ctrl).__name__), obs)
        obs = next_obs
        phase_rewards.append(own)
        if phase_best is None or told > phase_best[0]:
            phase_best = (float(told), served)
        if shipped.get("ship/shipped"):
            production = synced()
            sentinels, start = [], step + 1  # a new production: its reference settles anew

        # ---- end of phase? saturation, or a shift seen by the sentinel
        why = None
        if saturation(phase_rewards):
            why = "saturated"
        elif (step + 1) % shift.check_every == 0 and history.served < windows:
            value = sentinel(step)
            if shift.settled(step + 1 - start):
                sentinels.append(value)
            if shift.detect(sentinels):
                why = "shift"
                history.shifts.append(step)
                if store is not None:
                    store.add_shift(exp_id, service.day, "detected", detected_at_step=step)
                log.info("shift detected at window %d: sentinel %.4f vs reference %.4f", step, sentinels[-1],
                         shift.reference(sentinels[:-1]))
                sentinels, start = [], step + 1  # the system relearns: the new regime's reference settles anew
        if why is None:
            continue

        # ---- gate the phase's best candidate, then switch phase
        if phase_best is not None and why == "saturated" and history.served + gate_windows <= windows:
            production, accepted = _gate(env, agent, phase, production, phase_best[1], designer(), gate_windows,
                                         history, store, exp_id, step, gate_window(step, phase))
            if accepted:  # a new production (recorded at once, if the budget has room): it settles anew
                if history.served < windows:
                    sentinel(step)
                sentinels, start = [], step + 1
        # individual -> compositional on saturation or shift; compositional -> individual on saturation,
        # and a fresh compositional phase after a shift
        phase = PHASES[1] if phase == PHASES[0] or why == "shift" else PHASES[0]
        ctrl = individual(target.params) if phase == "individual" else compositional(env)
        phase_rewards, phase_best = [], None
        history.switches.append((step + 1, phase, why))
    env.configure_agent(agent, production["config"])
    env.service.deploy_composition(production["composition"])
    return history


def _gate(env: CompositionEnv, agent: str, phase: str, production: dict[str, Any], best: dict[str, Any],
          designer: ExperimentDesigner, windows: int, history: AlternationHistory, store: Any, exp_id: int | None,
          step: int, on_log: Callable[[Any], None]) -> tuple[dict[str, Any], bool]:
    """A/B the phase's best against production on live traffic; return the (possibly new) production."""
    env.configure_agent(agent, production["config"])
    env.service.deploy_composition(production["composition"])
    if phase == "individual":
        if best["config"] == production["config"]:
            return production, False
        decision = ab_rollout(env.service, agent, best["config"], designer, windows=windows, deploy=False,
                              on_log=on_log)
        what, record = agent, best["config"]
    else:
        if best["composition"].key() == production["composition"].key():
            return production, False
        challenger, _ = env.service.pool.system(best["composition"])
        decision = ab_test_systems(env.service, challenger, designer, windows=windows, on_log=on_log)
        env.service.deploy_composition(production["composition"])
        what, record = "composition", {"composition": best["composition"].key()}
    history.gates.append({"window": step, "phase": phase, "candidate": record, "accepted": decision.accepted,
                          "effect": decision.effect, "ci_low": decision.ci_low, "ci_high": decision.ci_high})
    if store is not None:
        store.add_rollout(exp_id, step, what, record, "accepted" if decision.accepted else "rejected",
                          effect=decision.effect, ci_low=decision.ci_low, ci_high=decision.ci_high,
                          p_value=decision.p_value, n_incumbent=decision.n_incumbent,
                          n_candidate=decision.n_candidate, reasons=decision.reasons)
    if not decision.accepted:
        return production, False
    new = dict(production)
    if phase == "individual":
        new["config"] = dict(best["config"])
        env.deploy_control_agent(agent, new["config"])  # the control's copy (if any) serves it from now on
    else:
        new["composition"] = best["composition"]
        env.control = best["composition"]
    env.configure_agent(agent, new["config"])
    env.service.deploy_composition(new["composition"])
    return new, True
