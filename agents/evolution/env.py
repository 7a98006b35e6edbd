"""The evolution environment (individual evolution): choose one agent's configuration, window by window.

One step deploys the action (a point of the target agent's decision space, flattened by
:class:`~agents.evolution.codec.SpaceCodec`) into the running system, serves a window of simulated
traffic through the whole pipeline (every agent keeps learning), and returns the target agent's
layered reward. The observation summarises the data regime: segment mix of requests, engagement and
its trend, return and churn, risk and its slack to a bound, freshness, time, and the current config.
The world's shift schedule plays out across an episode, so a policy must adapt to it.

Both envs are thin adapters over a :class:`~agents.evolution.deployment.Deployment` (``env.deployment``,
created at ``reset``; reach it through wrappers with ``env.get_wrapper_attr("deployment")``): they encode and
decode actions, and observe and reward through the service; everything else (A/B tests, schedules, designs,
forks) uses the service directly.

With ``stationary=True`` every step starts from the same snapshot of world and system (taken after the
warm-up): the reward becomes a deterministic function of the config (common random numbers), which is
what a known-optimum test or a fair comparison of controllers needs; ``advance(n)`` moves the snapshot
on by ``n`` windows (e.g. past a scheduled shift) to change the regime.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agents.decision.configs import SystemConfig, build_system, static_baseline_config
from agents.decision.functional import HashSplit
from agents.decision.params import ParamSpace
from agents.decision.system import System
from agents.evolution.codec import SpaceCodec
from agents.evolution.deployment import (
    REGIME_SCALARS,
    ABRouter,
    Deployment,
    check_concurrency,
    qualified_agents,
    replicate_seed,
)
from envs.config import WorldConfig, known_keys, world_size
from envs.log import InteractionLog
from envs.validation import ConfigError, check_choice, check_int, check_range
from rewards.layered import LayeredRewardConfig
from rewards.stats import trend_test

__all__ = ["TWIN_PREFIX", "EvolutionEnv", "WindowEnv"]

BOUND = 10.0
MAX_CONTROL_SHARE = 0.95  # a concurrent control may hold up to this share of the users (a candidate on >= 5%)
TWIN_PREFIX = "twin/"  # a window's metric with the action served minus with the incumbent's, on twins
SETTLED_ALPHA = 0.05  # the warm-up's trend test: an upward slope with p below this means "not settled yet"


class WindowEnv(gym.Env[np.ndarray, np.ndarray]):
    """What evolution envs share: a deployment (world + running system), a step = one window of traffic.

    Subclasses set the action and observation spaces and define ``_build_system()`` (the system a fresh
    deployment runs, and its component pool if any), ``_apply(action)`` (deploy a decision through the
    service, return the config record for ``info``), ``_score(log, control)`` (a log's reward and terms, for the
    candidate or the concurrent control), ``_config_features()`` and ``_current()``.

    A concurrent control (:meth:`set_control_share`, non-stationary only) is shared bookkeeping: each window with a
    control share draws a fresh salt and serves the subclass's ``_control_system()`` (the running system with the
    control's pipelines appended after its own, the control's users split off by a salted hash of their id), and
    :meth:`_reward` tells the candidate's reward minus the control's. Subclasses say what the control is and how
    production changes (``deploy_control``, ``candidate_config``).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        world: WorldConfig | dict[str, Any] | None,
        reward: LayeredRewardConfig | dict[str, Any] | None,
        window: int,
        concurrency: int,
        warmup: int,
        risk_bound: float,
        learn: bool,
        stationary: bool,
        render_mode: str | None,
        replicate: int = 0,
        resources: bool = False,
        warmup_pipeline: str = "",
    ) -> None:
        if world is None:
            world = world_size("small")
        self.world_cfg = world if isinstance(world, WorldConfig) else WorldConfig(**known_keys("world", world, WorldConfig))
        if reward is None or isinstance(reward, LayeredRewardConfig):
            self.reward_cfg = reward or LayeredRewardConfig()
        else:
            self.reward_cfg = LayeredRewardConfig(**known_keys("reward", reward, LayeredRewardConfig))
        self.window = check_int("window", window, 1)
        self.concurrency = check_concurrency(concurrency, self.world_cfg)  # before any simulation
        self.warmup = check_int("warmup", warmup, 0)
        self.risk_bound = check_range("risk_bound", risk_bound, 0.0)
        if render_mode is not None:
            check_choice("render_mode", render_mode, self.metadata["render_modes"])
        self.render_mode = render_mode
        self.learn, self.stationary = bool(learn), bool(stationary)
        # A/A replicate: > 0 re-seeds the system's own randomness (its models' initial weights, exploration draws,
        # logged candidates, A/B salts) while the world and its traffic stay those of the reset's seed
        self.replicate = check_int("replicate", replicate, 0)
        # a shared warm-up: every segment is served by this pipeline during the warm-up, then the system's own
        # routing takes over (Deployment.route hands each segment over with what its pipeline remembered of it) and
        # an A/A replicate's randomness is re-seeded only there; "" serves the warm-up with the system's routing
        self.warmup_pipeline = str(warmup_pipeline)
        if self.warmup_pipeline and not self.warmup:
            raise ConfigError(f"`warmup_pipeline` needs warm-up windows: set `warmup` >= 1 (got warmup_pipeline="
                              f"{self.warmup_pipeline!r}, warmup=0)")
        # True: at every reset the new deployment's serving code is timed (calibrate_resources) so every window's
        # terms carry the resource model's cost and latency (outer/cost/flops_per_request, latency_p99_ms, ...)
        self.resources = bool(resources)
        self.deployment: Deployment | None = None
        self._snapshot: Deployment | None = None
        self._last: dict[str, Any] = {}
        self.control_share, self.relative = 0.0, True  # a concurrent control: off (set_control_share)
        self._salt = 0  # the control's hash salt (redrawn every window served with a control)

    @property
    def built_replicate(self) -> int:
        """The replicate whose seeds the system is built with: its own (``replicate``), or 0 with a shared warm-up
        (``warmup_pipeline``: the replicate takes its own randomness only after it)."""
        return 0 if self.warmup_pipeline else self.replicate

    # ------------------------------------------------------------------ for subclasses
    def _build_system(self) -> tuple[System, Any]:
        raise NotImplementedError

    def _apply(self, action: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def _score(self, log: InteractionLog, control: bool = False) -> tuple[float, dict[str, float]]:
        """The reward and terms of ``log`` for the candidate (what the action deploys) or, with ``control``, for the
        concurrent control."""
        raise NotImplementedError

    def _control_system(self) -> System:
        """The running system with the concurrent control's pipelines appended after its own (the control serving
        the users ``HashSplit(control_share, _salt)`` puts in arm 1)."""
        raise NotImplementedError

    def _config_features(self) -> np.ndarray:
        raise NotImplementedError

    def _current(self) -> dict[str, Any]:
        raise NotImplementedError

    def current_action(self) -> np.ndarray:
        """The action that decodes to what the system serves now (the incumbent's decisions)."""
        raise NotImplementedError

    def _after_build(self) -> None:
        """Hook run after the deployment is created at reset, before the warm-up."""

    # ------------------------------------------------------------------ shared
    @property
    def service(self) -> Deployment:
        """The deployment (``ResetNeeded`` before the first reset)."""
        if self.deployment is None:
            raise gym.error.ResetNeeded("call reset() before using the environment")
        return self.deployment

    def regime(self) -> np.ndarray:
        """The observation of the current regime (the last window served, or the one :meth:`advance` ended on)
        and the current config, without serving anything: what a controller acting now sees."""
        return np.clip(np.concatenate([self.service.regime(), self._config_features()]), -BOUND, BOUND).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        world_seed, sim_seed = (int(x) for x in self.np_random.integers(2**31, size=2))
        system, pool = self._build_system()
        self.deployment = Deployment.start(self.world_cfg, system, world_seed=world_seed, sim_seed=sim_seed,
                                           concurrency=self.concurrency, window=self.window, learn=self.learn,
                                           reward=self.reward_cfg, risk_bound=self.risk_bound, pool=pool,
                                           system_seed=replicate_seed(sim_seed, self.built_replicate))
        self._after_build()
        if self.resources:
            self.deployment.calibrate_resources()
        if self.warmup_pipeline:  # a shared warm-up: every segment on that pipeline, the system's routing kept aside
            own = self.deployment.route({s: self.warmup_pipeline for s in self.deployment.routing}, hand_over=False)
        settled = self._warm_up()
        if self.warmup_pipeline:
            if self.replicate:  # the replicate shared the warm-up: its own randomness from here
                self.deployment.reseed(replicate_seed(sim_seed, self.replicate))
            self.deployment.route(own)
        if self.stationary:
            self._snapshot = self.deployment.snapshot()
        self._last = {"config": self._current()}
        return self.regime(), {"day": self.deployment.now, "config": self._current(), **settled}

    def _warm_up(self) -> dict[str, float]:
        """Serve the ``warmup`` windows with the system as configured (learning on) and test whether it has settled:
        the slope of the system's reward over the warm-up's last half (at least its last 3 windows: the first ones
        are the take-off, which any trend test over the whole warm-up finds; :func:`~rewards.stats.trend_test`,
        per window) and its p-value; ``warmup/settled`` is 1 when there is no significant upward trend there
        (p >= 0.05 or a slope <= 0), 0 when the system was still improving as evolution began (a window's reward
        then also measures when it ran), nan with fewer than 3 warm-up windows; ``warmup/tested`` counts the
        windows tested."""
        if not self.warmup:
            return {}
        service = self.deployment
        rewards = [service.score(service.serve(learn=True))[0] for _ in range(self.warmup)]
        service.restart_trend()
        tested = rewards[-max(3, len(rewards) // 2):]
        trend = trend_test(tested)
        settled = math.nan if trend.n < 3 else float(trend.p >= SETTLED_ALPHA or trend.slope <= 0)
        return {"warmup/windows": float(self.warmup), "warmup/tested": float(len(tested)), "warmup/slope": trend.slope,
                "warmup/slope_p": trend.p, "warmup/settled": settled, "warmup/reward_last": float(rewards[-1])}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        service = self.service
        if self.stationary:  # every step starts from the same state: common random numbers across configs
            service.restore(self._snapshot)
        config = self._apply(action)
        log = self._serve_window()
        reward, terms = self._reward(log)
        info = {**terms, "config": config, "day": service.now}
        self._last = info
        return self.regime(), reward, False, False, info

    def _serve_window(self) -> InteractionLog:
        """Serve one window of the step (after ``_apply``). A stationary step serves it without learning: agents
        learn only after a window (its reward is the same), and the next step restores the snapshot anyway. With a
        concurrent control the window is split by a fresh salt (no user is every candidate's control)."""
        if not self.control_share:
            return self.service.serve(learn=False if self.stationary else None)
        self._salt = self.service.new_salt()
        with self.service.serving(self._control_system()):
            return self.service.serve()

    # ------------------------------------------------------------------ concurrent control
    def set_control_share(self, share: float, relative: bool = True) -> None:
        """Serve ``share`` of the users (by a salted hash of their id, a fresh salt every window) with a concurrent
        control (the subclass's: production, learning from its own traffic) and tell the rest's reward minus the
        control's (``relative``): a reward free of the trend a learning system's reward has over time.
        ``relative=False`` tells the whole window's reward (what the platform earned) and leaves the comparison in
        ``info``. 0 turns it off."""
        check_range("control_share", share, 0.0, MAX_CONTROL_SHARE)
        if share and self.stationary:
            raise ConfigError(f"`control_share` needs a non-stationary env: a stationary one restores every window "
                              f"(got control_share={share} with stationary=True)")
        self.control_share, self.relative = float(share), bool(relative)

    def _in_control(self, log: InteractionLog) -> np.ndarray:
        """The mask of a window's requests the concurrent control served (its pipelines come after the running
        system's)."""
        return log.requests["pipeline"] >= len(self.service.system.pipelines)

    def test_arms(self, log: InteractionLog) -> tuple[np.ndarray, np.ndarray]:
        """Masks of a window's requests served by the candidate and by the concurrent control."""
        control = self._in_control(log)
        return ~control, control

    def _reward(self, log: InteractionLog) -> tuple[float, dict[str, float]]:
        reward, terms = self._score(log)
        if not self.control_share:
            return reward, terms
        # with a concurrent control: the terms are the whole window's (all the traffic served), the reward is
        # the candidate users' minus the control users'
        in_control = self._in_control(log)
        candidate, candidate_terms = self._score(log.where(~in_control))
        control, _ = self._score(log.where(in_control), control=True)
        told = candidate - control if self.relative else reward
        return told, {**terms, "evolution/window_reward": reward, "evolution/candidate_reward": candidate,
                      "evolution/control_reward": control, "evolution/candidate_share": float(1.0 - in_control.mean()),
                      **{f"evolution/candidate/{k}": v for k, v in candidate_terms.items() if k.startswith("outer/")}}

    def advance(self, windows: int, action: np.ndarray | None = None) -> InteractionLog:
        """Serve ``windows`` windows with the current decisions, or with ``action``'s if given (the world moves on:
        days pass, shifts fire).

        In ``stationary`` mode this is how the regime changes: the state after the last window becomes
        the new snapshot every later step starts from.
        """
        service = self.service
        check_int("windows", windows, 1)
        if self.stationary:
            service.restore(self._snapshot)
        if action is not None:
            self._apply(action)
        log = service.advance(windows)
        if self.stationary:
            self._snapshot = service.snapshot()
        return log

    def twin_window(self, action: np.ndarray) -> tuple[float, dict[str, float]]:
        """The reward and terms the coming window would earn with ``action``: served on a twin of the deployment (a
        fork: the same state, world and traffic as the next :meth:`step` will see; learning off, as agents learn only
        after a window), so two actions' twins differ only by the action (common random numbers). The reward is this
        env's own (:meth:`_reward`, before any wrapper's penalty). The deployment is left as it was. Refused while a
        concurrent control is set (a twin serves all its users with one action)."""
        if self.control_share:
            raise ConfigError(f"a twin window serves all its users with one action: it cannot reproduce a window split "
                              f"with a concurrent control (control_share={self.control_share}); set it to 0 first")
        real = self.service
        twin = (self._snapshot if self.stationary else real).fork()
        self.deployment = twin
        try:
            self._apply(action)
            return self._reward(twin.serve(learn=False))
        finally:
            self.deployment = real

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        cfg = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in self._last.get("config", {}).items())
        total = next((v for k, v in self._last.items() if k.startswith("layered/") and k.endswith("/total")), float("nan"))
        ctr = self._last.get("outer/engagement/clicks_per_request", float("nan"))
        return f"{type(self).__name__} | {cfg} | reward {total:.4f} | clicks/request {ctr:.3f}"


class EvolutionEnv(WindowEnv):
    """Evolve one decision agent of a running system; a step is a window of traffic.

    ``agent`` is a qualified name ``pipeline/role/name`` (e.g. ``baseline/rerank/mmr``; the names of a system are
    :func:`~agents.evolution.deployment.qualified_agents`). With ``control_share`` > 0 (non-stationary only) that
    share of the users (split by a salted hash, a fresh salt per window) is served, every window, by a copy of
    the agent as the system config sets it (a concurrent control that learns from its own traffic); the reward is
    then the candidate users' reward minus the control users', free of the trend a learning system's reward has
    over time; the info terms stay the whole window's, plus ``evolution/window_reward`` (what the platform earned),
    ``evolution/candidate_reward``, ``evolution/control_reward`` and ``evolution/candidate_share`` (of the requests).
    """

    def __init__(
        self,
        world: WorldConfig | dict[str, Any] | None = None,
        system: SystemConfig | dict[str, Any] | None = None,
        agent: str = "baseline/rerank/mmr",
        window: int = 2000,
        concurrency: int = 400,
        warmup: int = 1,
        codec: str = "box",
        bins: int = 11,
        reward: LayeredRewardConfig | dict[str, Any] | None = None,
        risk_bound: float = 0.1,
        fixed: dict[str, Any] | None = None,
        learn: bool = True,
        stationary: bool = False,
        render_mode: str | None = None,
        control_share: float = 0.0,
        replicate: int = 0,
        resources: bool = False,
        warmup_pipeline: str = "",
    ) -> None:
        super().__init__(world, reward, window, concurrency, warmup, risk_bound, learn, stationary, render_mode, replicate,
                         resources, warmup_pipeline)
        self.control: Any = None  # the concurrent control's copy of the agent (with control_share > 0)
        self.set_control_share(control_share)
        if system is None:
            system = static_baseline_config(fast=True)  # a ranker that trains briefly per window
        if not isinstance(system, SystemConfig):
            system = SystemConfig(**known_keys("system", system, SystemConfig))
        self.system_cfg = system
        if self.warmup_pipeline:
            check_choice("warmup_pipeline", self.warmup_pipeline, [p.name for p in system.pipelines])
        probe = qualified_agents(build_system(self.system_cfg, self.world_cfg))  # validates the name before any simulation
        check_choice("agent", agent, [n for n, a in probe.items() if hasattr(a, "params") and a.role != "router"])
        self.agent_name = agent
        self.role = probe[agent].role
        self.initial_config = dict(probe[agent].config)  # the agent as the system config sets it
        space = probe[agent].params
        # parameters held fixed are set once at reset and left out of the action
        if fixed is not None and not isinstance(fixed, Mapping):
            raise ConfigError(f"`fixed` must be a mapping of parameter -> value (got {type(fixed).__name__} {fixed!r:.80})")
        checked = space.validate(dict(fixed or {}), agent=agent)
        self.fixed = {k: checked[k] for k in (fixed or {})}
        free = ParamSpace([p for p in space.params if p.name not in self.fixed])
        if not free.params:
            raise ConfigError(f"`fixed` leaves no parameter of `{agent}` to evolve (fixed {sorted(self.fixed)})")
        self.codec = SpaceCodec(free, codec, bins)
        self.action_space = self.codec.space
        dim = len(self.world_cfg.segments) + len(REGIME_SCALARS) + self.codec.size
        self.observation_space = spaces.Box(-BOUND, BOUND, shape=(dim,), dtype=np.float32)

    def target_params(self) -> ParamSpace:
        """The target agent's free decision space (a ``ParamSpace``), for controllers."""
        return self.codec.params

    @property
    def target(self) -> Any:
        """The running target agent."""
        return self.service.agent(self.agent_name)

    def _build_system(self) -> tuple[System, Any]:
        cfg = self.system_cfg
        if self.built_replicate:
            cfg = dataclasses.replace(cfg, seed=replicate_seed(cfg.seed, self.built_replicate))
        return build_system(cfg, self.world_cfg), None

    def _after_build(self) -> None:
        self.service.deploy_config(self.agent_name, self.fixed)
        self.control = copy.deepcopy(self.target)  # the system config's agent, for a concurrent control
        self.control.name = f"{self.control.name}/control"
        self._salt = self.service.new_salt()  # (redrawn every window served with a control)

    def _current(self) -> dict[str, Any]:
        return dict(self.target.config)

    # ------------------------------------------------------------------ concurrent control (WindowEnv.set_control_share)
    def deploy_control(self, config: dict[str, Any]) -> dict[str, Any]:
        """Set (part of) the concurrent control's config: production, when a searcher's candidate won its test
        (``evolution.select=ship``); the control serves it from the next window. Returns its whole config."""
        control = self.control
        control.configure(control.params.validate({**control.config, **config}, agent=self.agent_name))
        return dict(control.config)

    def candidate_config(self) -> dict[str, Any]:
        """The config the candidate serves now, as a point of :meth:`target_params` (what :meth:`deploy_control`
        ships)."""
        return {k: v for k, v in self.target.config.items() if k in self.codec.params.by_name}

    def test_arms(self, log: InteractionLog) -> tuple[np.ndarray, np.ndarray]:
        """Masks of a window's requests served by the candidate (the target's pipeline) and by the concurrent
        control; requests other pipelines served (other segments' routes) are in neither."""
        return log.requests["pipeline"] == self._target_pipeline(), self._in_control(log)

    def _target_pipeline(self) -> int:
        """The index of the running system's pipeline that holds the target agent."""
        target = self.target
        return next(i for i, p in enumerate(self.service.system.pipelines) if any(a is target for a in p.agents))

    def _control_system(self) -> System:
        """The running system plus a copy of the target's pipeline with the control agent (appended last)."""
        system = self.service.system
        target = self.target
        index = self._target_pipeline()
        base = system.pipelines[index]
        control = base.swapped(f"{base.name}/control", {id(target): self.control})
        names = [p.name for p in system.pipelines]
        router = ABRouter(HashSplit(self.control_share, self._salt), system.router,
                          index, [*names, control.name])
        return System([*system.pipelines, control], router, system.route_names)

    def current_action(self) -> np.ndarray:
        return self.codec.encode({k: v for k, v in self.target.config.items() if k not in self.fixed})

    def _config_features(self) -> np.ndarray:
        config = self.current_action().astype(np.float32)
        if self.codec.kind == "multidiscrete":  # scale indices to [0, 1]
            config = config / np.maximum(self.codec.space.nvec - 1, 1)
        return config

    def _apply(self, action: np.ndarray) -> dict[str, Any]:
        return self.service.deploy_config(self.agent_name, self.codec.decode(action))

    def _score(self, log: InteractionLog, control: bool = False) -> tuple[float, dict[str, float]]:
        return self.service.score(log, self.control if control else self.agent_name)
