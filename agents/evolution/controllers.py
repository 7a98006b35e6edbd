"""Evolution controllers behind one interface: ``propose(obs) -> config`` then ``tell(config, reward, obs)``.

``RandomSearch`` (the floor), ``OptunaSearch`` (TPE by default; NSGA-II for several objectives) over
the agent's decision space, and ``PolicyController`` (a trained SB3 policy: regime -> config).
``evolve`` is the loop that runs any of them on an :class:`EvolutionEnv`, window after window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import optuna

from agents.decision.params import Choice, ParamSpace
from agents.evolution.codec import SpaceCodec
from envs.validation import ConfigError, check_choice, check_int

__all__ = ["CONTROLLERS", "Controller", "EvolutionHistory", "OptunaSearch", "PolicyController", "RandomSearch", "evolve"]

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)


class Controller(Protocol):
    """Proposes configurations of one agent and learns from their rewards."""

    name: str

    def propose(self, obs: np.ndarray) -> dict[str, Any]: ...

    def tell(self, config: dict[str, Any], reward: float | list[float], obs: np.ndarray) -> None: ...


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

    def warm_start(self, configs: list[dict[str, Any]], rewards: list[float]) -> None:
        """Seed the study with past trials (e.g. from the knowledge store, for a similar regime)."""
        dists = {p.name: (optuna.distributions.CategoricalDistribution(list(p.options)) if isinstance(p, Choice)
                          else optuna.distributions.FloatDistribution(p.low, p.high)) for p in self.params.params}
        for config, reward in zip(configs, rewards):
            self.study.add_trial(optuna.trial.create_trial(params=self.params.validate(config), distributions=dists, value=reward))


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
    """What an evolution run tried and got, window by window."""

    configs: list[dict[str, Any]] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> tuple[dict[str, Any], float]:
        i = int(np.argmax(self.rewards))
        return self.configs[i], self.rewards[i]


def evolve(env: Any, controller: Controller, windows: int, seed: int | None = None, on_window: Any = None) -> EvolutionHistory:
    """Run ``controller`` on ``env`` for ``windows`` windows: propose -> deploy and serve -> tell.

    ``on_window(step, config, reward, info)`` (optional) is called after each window, e.g. to commit
    the trial to the knowledge store.
    """
    check_int("windows", windows, 1)
    obs, _ = env.reset(seed=seed)
    history = EvolutionHistory()
    for step in range(windows):
        config = controller.propose(obs)
        action = env.codec.encode(config)
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
    return history
