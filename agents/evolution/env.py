"""The evolution environment (individual evolution): choose one agent's configuration, window by window.

One step deploys the action (a point of the target agent's decision space, flattened by
:class:`~agents.evolution.codec.SpaceCodec`) into the running system, serves a window of simulated
traffic through the whole pipeline (every agent keeps learning), and returns the target agent's
layered reward. The observation summarises the data regime: segment mix of requests, engagement and
its trend, return and churn, risk and its slack to a bound, freshness, time, and the current config.
The world's shift schedule plays out across an episode, so a policy must adapt to it.

With ``stationary=True`` every step starts from the same snapshot of world and system (taken after the
warm-up): the reward becomes a deterministic function of the config (common random numbers), which is
what a known-optimum test or a fair comparison of controllers needs; ``advance(n)`` moves the snapshot
on by ``n`` windows (e.g. past a scheduled shift) to change the regime.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agents.decision.configs import RankerConfig, SystemConfig, baseline_config, build_system
from agents.decision.system import Simulation, System
from agents.decision.params import ParamSpace
from agents.evolution.codec import SpaceCodec
from envs.log import InteractionLog
from envs.config import WorldConfig, known_keys
from envs.validation import ConfigError, check_choice, check_int, check_range
from envs.world import World
from rewards.layered import LayeredRewardConfig, layered_reward

__all__ = ["EvolutionEnv", "SMALL_EVOLUTION_WORLD", "WindowEnv", "agent_reward", "fast_baseline", "regime_features"]

SMALL_EVOLUTION_WORLD = {"num_items": 2000, "num_users": 4000, "num_topics": 10, "num_creators": 100, "steps_per_day": 20}
REGIME_SCALARS = ("clicks_per_request", "clicks_trend", "return_rate", "churn_rate", "violations_per_request",
                  "risk_slack", "freshness", "day")
BOUND = 10.0


def fast_baseline(arch: str = "mlp") -> SystemConfig:
    """The static baseline with a ranker that trains briefly per window (evolution runs many windows)."""
    pipe = baseline_config(arch)
    pipe.ranker = RankerConfig(arch, params={"epochs": 1, "min_updates": 100, "memory": 50_000})
    return SystemConfig([pipe])


def regime_features(log: InteractionLog, previous_ctr: float | None, risk_bound: float, now: float) -> np.ndarray:
    """Segment request shares, then ``REGIME_SCALARS``, from one window's log."""
    req, imp = log.requests, log.impressions
    n = max(len(req["request"]), 1)
    shares = np.bincount(req["segment"].astype(np.int64), minlength=len(log.segment_names))[: len(log.segment_names)] / n
    ctr = float(req["clicks"].mean()) if len(req["clicks"]) else 0.0
    ended = req["session_end"]
    ret = float(req["returned"][ended].mean()) if ended.any() else 0.0
    churn = float(req["churned"][ended].mean()) if ended.any() else 0.0
    viol = float(req["violations"].mean()) if len(req["violations"]) else 0.0
    fresh = float(imp["freshness"].mean()) if len(imp["freshness"]) else 0.0
    trend = 0.0 if previous_ctr is None else ctr - previous_ctr
    scalars = [ctr, trend, ret, churn, viol, risk_bound - viol, fresh, now / 30.0]
    return np.concatenate([shares, scalars]).astype(np.float32)


class WindowEnv(gym.Env[np.ndarray, np.ndarray]):
    """What evolution envs share: a world and a running system, a step = one window of traffic.

    Subclasses set the action and observation spaces and define ``_build_system``, ``_apply(action)``
    (deploy a decision, return the config record for ``info``), ``_reward(log)`` and ``_config_features``.
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
    ) -> None:
        if world is None:
            world = dict(SMALL_EVOLUTION_WORLD)
        self.world_cfg = world if isinstance(world, WorldConfig) else WorldConfig(**known_keys("world", world, WorldConfig))
        if reward is None or isinstance(reward, LayeredRewardConfig):
            self.reward_cfg = reward or LayeredRewardConfig()
        else:
            self.reward_cfg = LayeredRewardConfig(**known_keys("reward", reward, LayeredRewardConfig))
        self.window, self.concurrency, self.warmup = check_int("window", window, 1), check_int("concurrency", concurrency, 1), check_int("warmup", warmup, 0)
        if self.concurrency > self.world_cfg.num_users:
            raise ConfigError(f"`concurrency` must be <= `world.num_users`, one user per concurrent session "
                              f"(got {self.concurrency} > {self.world_cfg.num_users}); lower it or raise num_users")
        self.risk_bound = check_range("risk_bound", risk_bound, 0.0)
        if render_mode is not None:
            check_choice("render_mode", render_mode, self.metadata["render_modes"])
        self.render_mode = render_mode
        self.learn, self.stationary = bool(learn), bool(stationary)
        self._sim: Simulation | None = None
        self._snapshot: Simulation | None = None
        self._last: dict[str, Any] = {}
        self.last_log: InteractionLog | None = None

    # ------------------------------------------------------------------ for subclasses
    def _build_system(self) -> System:
        raise NotImplementedError

    def _apply(self, action: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def _reward(self, log: InteractionLog) -> tuple[float, dict[str, float]]:
        raise NotImplementedError

    def _config_features(self) -> np.ndarray:
        raise NotImplementedError

    def _current(self) -> dict[str, Any]:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    @property
    def system(self) -> System:
        if self._sim is None:
            raise gym.error.ResetNeeded("call reset() before using the environment")
        return self._sim.system

    @property
    def sim(self) -> Simulation:
        if self._sim is None:
            raise gym.error.ResetNeeded("call reset() before using the environment")
        return self._sim

    def _observe(self, log: InteractionLog) -> np.ndarray:
        regime = regime_features(log, self._prev_ctr, self.risk_bound, self._sim.world.now)
        self._prev_ctr = float(log.requests["clicks"].mean()) if log.num_requests else None
        return np.clip(np.concatenate([regime, self._config_features()]), -BOUND, BOUND).astype(np.float32)

    def regime(self) -> np.ndarray:
        """The observation of the current regime (from the last window served, or the one :meth:`advance`
        ended on), without serving anything: what a controller acting now would see."""
        regime = regime_features(self._regime_log, self._prev_ctr, self.risk_bound, self.sim.world.now)
        return np.clip(np.concatenate([regime, self._config_features()]), -BOUND, BOUND).astype(np.float32)

    def _after_build(self) -> None:
        """Hook run after the system is built at reset, before the warm-up."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        world_seed, sim_seed = (int(x) for x in self.np_random.integers(2**31, size=2))
        world = World(self.world_cfg, seed=world_seed)
        system = self._build_system()
        self._sim = Simulation(world, system, concurrency=self.concurrency, seed=sim_seed)
        self._prev_ctr = None
        self._after_build()
        log = None
        for _ in range(self.warmup):
            log = self._sim.window(self.window)
        if log is None:  # no warm-up: an empty regime
            log = InteractionLog(route_names=list(system.route_names), segment_names=self.world_cfg.segment_names)
        obs = self._observe(log)
        self._regime_log = log
        if self.stationary:
            self._snapshot = copy.deepcopy(self._sim)
        self._last = {"config": self._current()}
        return obs, {"day": world.now, "config": self._current()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._sim is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        if self.stationary:  # every step starts from the same state: common random numbers across configs
            self._sim = copy.deepcopy(self._snapshot)
            self._prev_ctr = float(self._regime_log.requests["clicks"].mean()) if self._regime_log.num_requests else None
            self._after_restore()
        config = self._apply(action)
        log = self._serve_window()
        self.last_log = log
        reward, terms = self._reward(log)
        obs = self._observe(log)
        info = {**terms, "config": config, "day": self._sim.world.now}
        self._last = info
        return obs, reward, False, False, info

    def _after_restore(self) -> None:
        """Hook run after a stationary step restored the snapshot (re-bind references into the copy)."""

    def _serve_window(self) -> InteractionLog:
        """Serve one window of the step (after ``_apply``)."""
        return self._sim.window(self.window, learn=self.learn)

    def score(self, log: InteractionLog) -> tuple[float, dict[str, float]]:
        """The env's reward and its terms for any window's log, e.g. a window served outside ``step`` (an A/B
        test's); the log becomes ``last_log``."""
        self.last_log = log
        return self._reward(log)

    def advance(self, windows: int) -> InteractionLog:
        """Serve ``windows`` windows with the current decisions (the world moves on: days pass, shifts fire).

        In ``stationary`` mode this is how the regime changes: the state after the last window becomes
        the new snapshot every later step starts from.
        """
        if self._sim is None:
            raise gym.error.ResetNeeded("call reset() before advance()")
        check_int("windows", windows, 1)
        if self.stationary:
            self._sim = copy.deepcopy(self._snapshot)
            self._after_restore()
        for _ in range(windows):
            log = self._sim.window(self.window, learn=self.learn)
        self._regime_log = log
        if self.stationary:
            self._snapshot = copy.deepcopy(self._sim)
        return log

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        cfg = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in self._last.get("config", {}).items())
        total = next((v for k, v in self._last.items() if k.startswith("layered/") and k.endswith("/total")), float("nan"))
        ctr = self._last.get("outer/engagement/clicks_per_request", float("nan"))
        return f"{type(self).__name__} | {cfg} | reward {total:.4f} | clicks/request {ctr:.3f}"


class EvolutionEnv(WindowEnv):
    """Evolve one decision agent of a running system; a step is a window of traffic.

    With ``control_share`` > 0 (non-stationary only) that share of the users is served, every window, by a copy of
    the agent as the system config sets it (a concurrent control that learns from its own traffic); the reward is
    then the candidate users' reward minus the control users', free of the trend a learning system's reward has
    over time; the info terms stay the whole window's, plus ``evolution/candidate_reward`` and
    ``evolution/control_reward``.
    """

    def __init__(
        self,
        world: WorldConfig | dict[str, Any] | None = None,
        system: SystemConfig | dict[str, Any] | None = None,
        agent: str = "baseline/rerank",
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
    ) -> None:
        super().__init__(world, reward, window, concurrency, warmup, risk_bound, learn, stationary, render_mode)
        self._control: Any = None
        self._split: tuple[InteractionLog, int] | None = None
        self.set_control_share(control_share)
        if system is None:
            system = fast_baseline()
        self.system_cfg = system if isinstance(system, SystemConfig) else SystemConfig(**known_keys("system", system, SystemConfig))
        probe = build_system(self.system_cfg, self.world_cfg)  # validates the agent name before any simulation
        names = {a.name: a for a in probe.agents}
        check_choice("agent", agent, list(names))
        self.agent_name = agent
        self.role = names[agent].role
        space = names[agent].params
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

    def target_params(self) -> Any:
        """The target agent's decision space (a ``ParamSpace``), for controllers."""
        return self.codec.params

    @property
    def target(self) -> Any:
        return next(a for a in self.system.agents if a.name == self.agent_name)

    def _build_system(self) -> System:
        return build_system(self.system_cfg, self.world_cfg)

    def _after_build(self) -> None:
        self.target.configure(self.fixed)
        self._control = copy.deepcopy(self.target)  # the system config's agent, for a concurrent control
        self._control.name = f"{self.agent_name}/control"
        self._split = None

    def _current(self) -> dict[str, Any]:
        return dict(self.target.config)

    # ------------------------------------------------------------------ concurrent control
    def set_control_share(self, share: float) -> None:
        """Serve ``share`` of the users (by a hash of their id) with the agent as the system config sets it (a
        concurrent control, learning from its own traffic) and tell the rest's reward minus the control's: a
        relative reward free of the trend a learning system's reward has over time. 0 turns it off."""
        check_range("control_share", share, 0.0, 0.5)
        if share and self.stationary:
            raise ConfigError(f"`control_share` needs a non-stationary env: a stationary one restores every window "
                              f"(got control_share={share} with stationary=True)")
        self.control_share = float(share)

    def _serve_window(self) -> InteractionLog:
        self._split = None
        if not self.control_share:
            return super()._serve_window()
        from agents.decision.functional import ExperimentDesigner
        from agents.evolution.rollout import ABRouter

        system = self._sim.system
        target = self.target
        index = next(i for i, p in enumerate(system.pipelines) if any(a is target for a in p.agents))
        control = copy.copy(system.pipelines[index])  # the same agents but the control's copy of the target
        control.name = f"{control.name}/control"
        control.recalls = [self._control if r is target else r for r in control.recalls]
        for attr in ("fusion", "ranker", "scorer", "reranker"):
            if getattr(control, attr) is target:
                setattr(control, attr, self._control)
        names = [p.name for p in system.pipelines]
        router = ABRouter(ExperimentDesigner(config={"share": self.control_share}), system.router, index,
                          [*names, control.name])
        self._sim.system = System([*system.pipelines, control], router, system.route_names)
        try:
            log = self._sim.window(self.window, learn=self.learn)
        finally:
            self._sim.system = system
        self._split = (log, len(names))
        return log

    def _config_features(self) -> np.ndarray:
        free = {k: v for k, v in self.target.config.items() if k not in self.fixed}
        config = self.codec.encode(free).astype(np.float32)
        if self.codec.kind == "multidiscrete":  # scale indices to [0, 1]
            config = config / np.maximum(self.codec.space.nvec - 1, 1)
        return config

    def _apply(self, action: np.ndarray) -> dict[str, Any]:
        self.target.configure(self.codec.decode(action))
        return dict(self.target.config)

    def _reward(self, log: InteractionLog) -> tuple[float, dict[str, float]]:
        embedding = self._sim.world.catalog.embedding
        reward, terms = agent_reward(self.target, self.role, log, self.reward_cfg, embedding)
        if self._split is None or self._split[0] is not log:
            return reward, terms
        # with a concurrent control: the terms are the whole window's (all the traffic served), the reward is
        # the candidate users' minus the control users'
        in_control = log.requests["pipeline"] == self._split[1]
        candidate, _ = agent_reward(self.target, self.role, log.where(~in_control), self.reward_cfg, embedding)
        control, _ = agent_reward(self._control, self.role, log.where(in_control), self.reward_cfg, embedding)
        return candidate - control, {**terms, "evolution/candidate_reward": candidate, "evolution/control_reward": control}


def agent_reward(agent: Any, role: str, log: InteractionLog, cfg: LayeredRewardConfig,
                 embedding: np.ndarray) -> tuple[float, dict[str, float]]:
    """One agent's layered reward on a window's log (non-finite values count as 0) and all its terms."""
    kw: dict[str, Any] = {}
    if role == "recall":
        kw["route"] = agent.route_id
    if role == "rerank":
        kw["embedding"] = embedding
    lr = layered_reward(role, log, cfg, **kw)
    value = lr.value if np.isfinite(lr.value) else 0.0
    return float(value), lr.terms
