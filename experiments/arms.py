"""The arm registry: named ways to run the evolution loop, one function each.

An arm is a function ``arm(ctx: ArmContext) -> EvolutionHistory`` registered with :func:`register_arm`.
It drives ``ctx.env`` (an :class:`~agents.evolution.env.EvolutionEnv`, wrapped so that every window it
serves is recorded, logged and committed to the knowledge store) for ``ctx.windows`` windows starting
from ``ctx.env.reset(seed=ctx.seed)``, and returns what it tried. To add an arm::

    @dataclass
    class GreedyOptions:               # optional: the arm's options (``controller.options`` in the config)
        epsilon: float = 0.1

        def __post_init__(self) -> None:
            check_probability("controller.options.epsilon", self.epsilon)

    @register_arm("greedy", options=GreedyOptions)
    def greedy(ctx: ArmContext) -> EvolutionHistory:
        \"\"\"Epsilon-greedy over past trials.\"\"\"
        return evolve(ctx.env, MyGreedy(ctx.env.target_params(), ctx.options.epsilon, ctx.seed), ctx.windows, seed=ctx.seed)

and a ``conf/controller/greedy.yaml`` with ``name: greedy`` and its ``options``. An arm that runs windows
outside ``ctx.env`` (several envs, a rollout loop) reports each one through ``ctx.on_window(step, config,
reward, info)``; ``ctx.store`` / ``ctx.exp_id`` let it read and write the knowledge store (designs, rollouts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from agents.decision.configs import build_system
from agents.evolution.controllers import EvolutionHistory, OptunaSearch, RandomSearch, evolve
from envs.validation import ConfigError, check_int, check_range

if TYPE_CHECKING:
    from agents.infra.store import KnowledgeStore
    from experiments.config import ExperimentConfig

__all__ = ["ARMS", "Arm", "ArmContext", "OnWindow", "PPOOptions", "StaticController", "WindowRecorder",
           "register_arm", "run_arm"]

log = logging.getLogger(__name__)

OnWindow = Callable[[int, dict[str, Any], float, dict[str, Any]], None]


@dataclass
class ArmContext:
    """Everything an arm may use. ``env`` records every window it serves (see :class:`WindowRecorder`)."""

    cfg: ExperimentConfig
    env: WindowRecorder
    store: KnowledgeStore
    exp_id: int
    on_window: OnWindow
    options: Any  # the arm's options dataclass (None for an arm without options)

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def windows(self) -> int:
        return self.cfg.evolution.windows


ArmFn = Callable[[ArmContext], EvolutionHistory]


@dataclass(frozen=True)
class Arm:
    name: str
    run: ArmFn
    options: type | None
    description: str


ARMS: dict[str, Arm] = {}


def register_arm(name: str, options: type | None = None) -> Callable[[ArmFn], ArmFn]:
    """Register ``fn`` as the arm ``name`` (with an optional options dataclass, validated at start-up)."""

    def add(fn: ArmFn) -> ArmFn:
        if name in ARMS:
            raise ConfigError(f"arm {name!r} is already registered (by {ARMS[name].run.__module__}.{ARMS[name].run.__name__})")
        doc = (fn.__doc__ or "").strip().splitlines()
        ARMS[name] = Arm(name, fn, options, doc[0] if doc else "")
        return fn

    return add


def run_arm(ctx: ArmContext) -> EvolutionHistory:
    """Run the arm named by ``ctx.cfg.controller.name``."""
    return ARMS[ctx.cfg.controller.name].run(ctx)


class WindowRecorder(gym.Wrapper):
    """Calls ``on_window(step, config, reward, info)`` after each step; ``info['regime']`` is the observation acted on.

    Forwards what controllers use (``codec``, ``target_params()``, ``target``, ``role``) and keeps the history.
    """

    def __init__(self, env: gym.Env, on_window: OnWindow) -> None:
        super().__init__(env)
        self.on_window = on_window
        self.steps = 0
        self.history = EvolutionHistory()
        self._obs: np.ndarray | None = None

    @property
    def codec(self) -> Any:
        return self.env.get_wrapper_attr("codec")

    def target_params(self) -> Any:
        return self.env.get_wrapper_attr("target_params")()

    @property
    def target(self) -> Any:
        return self.env.get_wrapper_attr("target")

    @property
    def role(self) -> str:
        return self.env.get_wrapper_attr("role")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = obs
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = {**info, "regime": self._obs}
        self._obs = obs
        self.history.configs.append(info["config"])
        self.history.rewards.append(float(reward))
        self.history.infos.append(info)
        self.on_window(self.steps, info["config"], float(reward), info)
        self.steps += 1
        return obs, reward, terminated, truncated, info


# --------------------------------------------------------------------------- the arms


class StaticController:
    """Keeps one config (by default the system's hand-tuned one): the baseline arm."""

    name = "static"

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)

    def propose(self, obs: np.ndarray) -> dict[str, Any]:
        return dict(self.config)

    def tell(self, config: dict[str, Any], reward: float | list[float], obs: np.ndarray) -> None:
        pass


def initial_config(env: Any) -> dict[str, Any]:
    """The evolved agent's config as the system config sets it, restricted to the evolved parameters."""
    inner = env.unwrapped
    agent = next(a for a in build_system(inner.system_cfg, inner.world_cfg).agents if a.name == inner.agent_name)
    names = {p.name for p in inner.codec.params.params}
    return {k: v for k, v in agent.config.items() if k in names}


@register_arm("static")
def static(ctx: ArmContext) -> EvolutionHistory:
    """The hand-tuned config of the system, never changed."""
    evolve(ctx.env, StaticController(initial_config(ctx.env)), ctx.windows, seed=ctx.seed)
    return ctx.env.history


@register_arm("random")
def random_search(ctx: ArmContext) -> EvolutionHistory:
    """A uniformly random config every window (the floor)."""
    evolve(ctx.env, RandomSearch(ctx.env.target_params(), seed=ctx.seed), ctx.windows, seed=ctx.seed)
    return ctx.env.history


@register_arm("optuna")
def optuna_search(ctx: ArmContext) -> EvolutionHistory:
    """Optuna's TPE proposes a config every window and learns from its reward."""
    evolve(ctx.env, OptunaSearch(ctx.env.target_params(), seed=ctx.seed), ctx.windows, seed=ctx.seed)
    return ctx.env.history


@dataclass
class PPOOptions:
    """SB3 PPO trained online: one env step is one window, so keep the rollouts short."""

    n_steps: int = 4  # windows per rollout (one PPO update each)
    batch_size: int = 4
    n_epochs: int = 4
    learning_rate: float = 3e-4
    gamma: float = 0.9
    gae_lambda: float = 0.95
    ent_coef: float = 0.0
    hidden: int = 32  # width of the two hidden layers of policy and value nets

    def __post_init__(self) -> None:
        check_int("controller.options.n_steps", self.n_steps, 2)
        check_int("controller.options.batch_size", self.batch_size, 2, self.n_steps)
        check_int("controller.options.n_epochs", self.n_epochs, 1)
        check_range("controller.options.learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_range("controller.options.gamma", self.gamma, 0.0, 1.0)
        check_range("controller.options.gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_range("controller.options.ent_coef", self.ent_coef, 0.0)
        check_int("controller.options.hidden", self.hidden, 1)


@register_arm("ppo", options=PPOOptions)
def ppo(ctx: ArmContext) -> EvolutionHistory:
    """SB3 PPO learns online over the run's windows; its (stochastic) policy picks every window's config."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    opts: PPOOptions = ctx.options
    windows = ctx.windows

    class StopAfter(BaseCallback):  # PPO collects whole rollouts: stop exactly after the run's windows
        def _on_step(self) -> bool:
            return self.num_timesteps < windows

    model = PPO("MlpPolicy", ctx.env, n_steps=opts.n_steps, batch_size=opts.batch_size, n_epochs=opts.n_epochs,
                learning_rate=opts.learning_rate, gamma=opts.gamma, gae_lambda=opts.gae_lambda, ent_coef=opts.ent_coef,
                policy_kwargs={"net_arch": [opts.hidden, opts.hidden]}, seed=ctx.seed, device="cpu", verbose=0)
    model.learn(total_timesteps=windows, callback=StopAfter())  # the first reset uses `seed`, like the other arms
    return ctx.env.history
