"""Evolution controllers behind one interface: ``propose(obs) -> config`` then ``tell(config, reward, obs)``.

``RandomSearch`` (the floor), ``OptunaSearch`` (TPE by default; NSGA-II for several objectives) over
the agent's decision space, and ``PolicyController`` (a trained SB3 policy: regime -> config).
``evolve`` is the loop that runs any of them on an :class:`EvolutionEnv`, window after window.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import optuna

from agents.decision.params import Choice, ParamSpace
from agents.evolution.codec import SpaceCodec
from envs.validation import ConfigError, check_choice, check_int

__all__ = ["CONTROLLERS", "Controller", "EvolutionHistory", "Halving", "OptunaSearch", "PolicyController",
           "RandomSearch", "StaticController", "evolve", "halving_rounds", "leaders", "successive_halving"]

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)


class Controller(Protocol):
    """Proposes configurations of one agent and learns from their rewards."""

    name: str

    def propose(self, obs: np.ndarray) -> dict[str, Any]: ...

    def tell(self, config: dict[str, Any], reward: float | list[float], obs: np.ndarray) -> None: ...


class StaticController:
    """Keeps one config (typically the system's hand-tuned one): the baseline arm."""

    name = "static"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)

    def propose(self, obs: np.ndarray) -> dict[str, Any]:
        return dict(self.config)

    def tell(self, config: dict[str, Any], reward: float | list[float], obs: np.ndarray) -> None:
        pass


class RandomSearch:
    """Uniform random points of the decision space."""

    name = "random"

    def __init__(self, params: ParamSpace, seed: int = 0) -> None:
        self.codec = SpaceCodec(params, "box")
        self.rng = np.random.default_rng(seed)

    def propose(self, obs: np.ndarray) -> dict[str, Any]:
        return self.codec.decode(self.rng.uniform(-1.0, 1.0, self.codec.size).astype(np.float32))

    def tell(self, config: dict[str, Any], reward: float | list[float], obs: np.ndarray) -> None:
        pass


class OptunaSearch:
    """Black-box search with Optuna's ask/tell: TPE for one objective, NSGA-II for several."""

    name = "optuna"

    def __init__(self, params: ParamSpace, seed: int = 0, directions: list[str] | None = None, storage: str | None = None,
                 study_name: str | None = None) -> None:
        directions = directions or ["maximize"]
        for d in directions:
            check_choice("directions", d, ["maximize", "minimize"])
        sampler = (optuna.samplers.TPESampler(seed=seed) if len(directions) == 1
                   else optuna.samplers.NSGAIISampler(seed=seed))
        self.params = params
        self.study = optuna.create_study(directions=directions, sampler=sampler, storage=storage,
                                         study_name=study_name, load_if_exists=storage is not None)
        self._pending: dict[int, optuna.trial.Trial] = {}

    def propose(self, obs: np.ndarray) -> dict[str, Any]:
        trial = self.study.ask()
        config = {}
        for p in self.params.params:
            if isinstance(p, Choice):
                config[p.name] = trial.suggest_categorical(p.name, list(p.options))
            else:
                config[p.name] = trial.suggest_float(p.name, p.low, p.high)
        self._pending[id(config)] = trial
        return config

    def tell(self, config: dict[str, Any], reward: float | list[float], obs: np.ndarray) -> None:
        trial = self._pending.pop(id(config), None)
        if trial is None:
            raise ConfigError("`tell` must receive a config returned by this controller's `propose` (got an unknown one)")
        self.study.tell(trial, reward)

    def warm_start(self, configs: list[dict[str, Any]], rewards: list[float], replay: int = 1) -> None:
        """Seed the study with past trials (e.g. from the knowledge store, for a similar regime), and propose the
        ``replay`` best of them first (single objective): TPE fitted to a handful of good trials samples around
        them, not at them, so without a replay a warm start's first windows are near the best known config but
        seldom at it."""
        check_int("replay", replay, 0)
        dists = {p.name: (optuna.distributions.CategoricalDistribution(list(p.options)) if isinstance(p, Choice)
                          else optuna.distributions.FloatDistribution(p.low, p.high)) for p in self.params.params}
        seeded = []
        for config, reward in zip(configs, rewards):
            if not set(self.params.by_name) <= set(config):
                continue  # a trial of another decision space (e.g. an agent with fewer free parameters)
            params = self.params.validate({k: v for k, v in config.items() if k in self.params.by_name})
            self.study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=reward))
            seeded.append((reward, params))
        if len(self.study.directions) == 1 and replay:
            maximize = self.study.direction == optuna.study.StudyDirection.MAXIMIZE
            for _, params in sorted(seeded, key=lambda t: t[0], reverse=maximize)[:replay]:
                self.study.enqueue_trial(params, skip_if_exists=False)

    def warm_start_from(self, store: Any, agent: str, regime: Any, k: int = 10,
                        exclude_experiment: int | None = None, replay: int = 1,
                        experiments: Any = None) -> int:
        """Seed the study with the ``k`` best past trials of ``agent`` from the regimes nearest ``regime``
        (``KnowledgeStore.similar_trials``, of ``experiments`` when given), proposing the ``replay`` best first;
        returns how many were offered (a trial of another decision space is skipped)."""
        near = store.similar_trials(agent, regime, k=k, exclude_experiment=exclude_experiment, experiments=experiments)
        self.warm_start([n.trial.config for n in near], [n.trial.reward for n in near], replay=replay)
        return len(near)


class PolicyController:
    """A trained SB3 policy as a controller: the regime observation maps to a config (no online update)."""

    name = "policy"

    def __init__(self, model: Any, codec: SpaceCodec, deterministic: bool = True) -> None:
        self.model, self.codec, self.deterministic = model, codec, deterministic

    def propose(self, obs: np.ndarray) -> dict[str, Any]:
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return self.codec.decode(action)

    def tell(self, config: dict[str, Any], reward: float | list[float], obs: np.ndarray) -> None:
        pass


CONTROLLERS = ("random", "optuna")


@dataclass
class EvolutionHistory:
    """What an evolution run tried and got, window by window, and where it restarted after a shift."""

    configs: list[dict[str, Any]] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    shifts: list[int] = field(default_factory=list)  # windows after which a shift was detected (and the controller restarted)
    sentinels: list[tuple[int, float]] = field(default_factory=list)
    reference: tuple[dict[str, Any], float] | None = None  # the incumbent and its last sentinel reward

    @property
    def best(self) -> tuple[dict[str, Any], float]:
        """The best config since the last detected shift (older ones belong to another regime)."""
        start = self.shifts[-1] + 1 if self.shifts else 0
        if start >= len(self.rewards):
            raise ValueError("no window since the last shift: nothing to recommend yet")
        i = start + int(np.argmax(self.rewards[start:]))
        return self.configs[i], self.rewards[i]


def leaders(history: EvolutionHistory, names: Any, k: int) -> list[dict[str, Any]]:
    """Up to ``k`` distinct configs (restricted to ``names``) with the best window rewards since the last detected
    shift, best first: the candidates a re-test compares."""
    check_int("k", k, 1)
    start = history.shifts[-1] + 1 if history.shifts else 0
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i in sorted(range(start, len(history.rewards)), key=lambda j: -history.rewards[j]):
        config = {n: v for n, v in history.configs[i].items() if n in names}
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(config)
        if len(out) == k:
            break
    return out


@dataclass
class Halving:
    """A successive-halving re-test: every leader's measurements (in the order taken) and the winner's index."""

    values: list[list[float]]
    winner: int

    @property
    def means(self) -> list[float]:
        return [float(np.mean(v)) if v else math.nan for v in self.values]


def halving_rounds(n: int) -> list[int]:
    """How many leaders each round of a successive halving over ``n`` leaders re-tests (``n``, ``ceil(n/2)``, ..., 2;
    ``[1]`` for one leader)."""
    sizes = [n]
    while sizes[-1] > 2:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def successive_halving(n: int, budget: int, measure: Callable[[int], float]) -> Halving:
    """Re-test ``n`` leaders within ``budget`` measurements (e.g. windows), at least ``sum(halving_rounds(n))``: each
    round spends an equal share of what is left, split evenly among the leaders still in (at least one measurement
    each), and keeps the better half by the mean of all their measurements so far. ``measure(i)`` takes one
    measurement of leader ``i`` (one re-test window). The winner is the last round's best by mean: chosen by
    repeated measurement, never by one lucky draw."""
    check_int("n", n, 1)
    sizes = halving_rounds(n)
    check_int("budget", budget, sum(sizes))
    values: list[list[float]] = [[] for _ in range(n)]
    alive, left = list(range(n)), budget
    for r, size in enumerate(sizes):
        alive = alive[:size]
        later = sum(sizes[r + 1:])  # what the later rounds need at least
        each = max((left - later) // (len(sizes) - r) // size, 1)
        for _ in range(each):
            for i in alive:
                values[i].append(float(measure(i)))
        left -= each * size
        alive.sort(key=lambda i: -float(np.mean(values[i])))
    return Halving(values, alive[0])


def evolve(env: Any, controller: Controller, windows: int, seed: int | None = None, on_window: Any = None,
           reset: bool = True, shift: Any = None, restart: Any = None,
           history: EvolutionHistory | None = None) -> EvolutionHistory:
    """Run ``controller`` on ``env`` for ``windows`` windows: propose -> deploy and serve -> tell.

    ``on_window(step, config, reward, info)`` (optional) is called after each window, e.g. to commit
    the trial to the knowledge store. ``reset=False`` continues on the env as it is (e.g. after
    ``env.advance``), appending to ``history``. With ``shift`` (a ``ShiftTest``), every
    ``shift.check_every`` windows production (the best config at the previous check) serves a sentinel
    window; when its reward moved beyond the test's tolerance from the reward it had then, a shift is
    recorded, older windows stop counting for ``best`` and the controller is replaced by ``restart()``
    (a fresh one; the same one if None). Then production becomes the best config since the last shift.
    """
    check_int("windows", windows, 1)
    if reset:
        obs, _ = env.reset(seed=seed)
    else:
        obs = env.get_wrapper_attr("regime")()
    codec = env.get_wrapper_attr("codec")
    history = history if history is not None else EvolutionHistory()
    for step in range(len(history.rewards), len(history.rewards) + windows):
        config = controller.propose(obs)
        action = codec.encode(config)
        next_obs, reward, terminated, truncated, info = env.step(action)
        controller.tell(config, reward, obs)
        history.configs.append(info["config"])
        history.rewards.append(float(reward))
        history.infos.append(info)
        if on_window is not None:
            on_window(step, info["config"], float(reward), info)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
        if shift is not None and (step + 1) % shift.check_every == 0:
            sentinel = None
            if history.reference is not None:  # serve production (the incumbent of the last check) again
                production, value = history.reference
                free = {k: v for k, v in production.items() if k in codec.params.by_name}
                obs, sentinel, *_ = env.step(codec.encode(free))
                history.sentinels.append((step, float(sentinel)))
                if shift(value, sentinel):
                    log.info("shift detected after window %d: production's reward %.4f -> %.4f", step, value, sentinel)
                    history.shifts.append(step)
                    controller = restart() if restart is not None else controller
                    history.reference = None
                    continue
            incumbent, value = history.best
            same = history.reference is not None and history.reference[0] == incumbent
            history.reference = (incumbent, float(sentinel) if same else value)
    return history
