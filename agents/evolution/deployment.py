"""The deployment service: the one owner of a world, its running system and their simulation.

Every evolution path (the Gymnasium adapters in :mod:`agents.evolution.env` and
:mod:`agents.evolution.composition`, the controllers' loops, the alternation schedule, the LLM designer,
the A/B helpers of :mod:`agents.evolution.rollout` and the experiment arms) changes and measures the
running system through this typed API, never through a simulation's or an env's private state:

* deploy: a config to one agent (:meth:`Deployment.deploy_config`, agents named ``pipeline/role/name``),
  a composition (:meth:`Deployment.deploy_composition`, over a :class:`ComponentPool`) or a whole system
  (:meth:`Deployment.deploy_system`, e.g. a built design);
* serve: :meth:`Deployment.serve` (windows of traffic; every agent learns unless ``learn=False``),
  :meth:`Deployment.serve_split` (a challenger system on a share of the users, split by a hash with a
  fresh salt per test), :meth:`Deployment.serving` (any system, e.g. an A/B split, for a block of windows);
* measure: :meth:`Deployment.score` (a layered reward of any log, for an agent or the system, with any
  reward config) and :meth:`Deployment.regime` (the data-regime summary of the last window served);
* route: :meth:`Deployment.route` (which pipeline serves each user segment; a pipeline taking over a segment
  first learns from what its previous pipeline remembers of it);
* time: :meth:`Deployment.advance` (the world moves on: days pass, shifts fire);
* state: :meth:`Deployment.snapshot` / :meth:`Deployment.restore` and :meth:`Deployment.fork` (a deep,
  independent copy of world, system, pool and every random stream: the basis of counterfactual twins) and
  :meth:`Deployment.reseed` (the running system's own randomness from a new seed: an A/A replicate from a state).

:class:`DeploymentService` is the ``Protocol`` of that API, so another implementation (e.g. one backed by
a remote simulator) can stand in wherever a :class:`Deployment` is used.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from agents.decision.configs import SystemConfig, build_system
from agents.decision.context import RequestBatch
from agents.decision.features import ImpressionRecorder, LoggedImpressions
from agents.decision.functional import ExperimentDesigner, HashSplit
from agents.decision.resources import ResourceProfile, calibrate, time_stages, window_costs
from agents.decision.system import Simulation, System
from agents.evolution.interleaving import (
    METHODS,
    PreferenceTest,
    adjust_for_design,
    credit_column,
    design_covariates,
    interleaved_system,
    preference_test,
    team_credit,
)
from envs.config import WorldConfig
from envs.log import InteractionLog
from envs.streams import Streams
from envs.validation import ConfigError, check_choice, check_int, check_range
from envs.world import World
from rewards.layered import LayeredRewardConfig, layered_reward

__all__ = ["REGIME_SCALARS", "WARM_UPDATES", "ABRouter", "ABSystemRouter", "Deployment", "DeploymentService", "InterleavedWindow",
           "SplitWindow", "agent_reward",
           "check_concurrency", "qualified_agents", "regime_features", "replicate_seed", "split_systems"]

# at most this many gradient steps to train a ranker on another's memory: a new architecture on the incumbent's
# (the designer), a pipeline taking over a segment on what the pipeline that served it remembers (Deployment.route)
WARM_UPDATES = 2000
REGIME_SCALARS = ("clicks_per_request", "clicks_trend", "return_rate", "churn_rate", "violations_per_request",
                  "risk_slack", "freshness", "day")


def qualified_agents(system: System) -> dict[str, Any]:
    """Every agent of ``system`` by its qualified name ``pipeline/role/name`` (e.g. ``baseline/rerank/mmr``,
    ``baseline/recall/popularity``); the router is ``system/router/<name>``. An agent shared by two pipelines
    has a name in each, both naming the same object."""
    out = {f"system/router/{system.router.name.rsplit('/', 1)[-1]}": system.router}
    for p in system.pipelines:
        for a in p.agents:
            out[f"{p.name}/{a.role}/{a.name.rsplit('/', 1)[-1]}"] = a
    return out


def regime_features(log: InteractionLog, previous_ctr: float | None, risk_bound: float, now: float) -> np.ndarray:
    """Segment request shares, then ``REGIME_SCALARS``, from one window's log (the trend is against
    ``previous_ctr``, the window before's clicks per request; 0 when there is none)."""
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


def agent_reward(agent: Any, log: InteractionLog, cfg: LayeredRewardConfig,
                 embedding: np.ndarray) -> tuple[float, dict[str, float]]:
    """One agent's layered reward on a window's log (non-finite values count as 0) and all its terms."""
    kw: dict[str, Any] = {}
    if agent.role == "recall":
        kw["route"] = agent.route_id
    if agent.role == "rerank":
        kw["embedding"] = embedding
    lr = layered_reward(agent.role, log, cfg, **kw)
    value = lr.value if np.isfinite(lr.value) else 0.0
    return float(value), lr.terms


class ABRouter:
    """Sends the candidate's share of one pipeline's users to its challenger copy (not an evolvable agent).

    The system's own router picks each request's pipeline; requests routed to pipeline ``target`` whose
    user the experiment designer's hash puts in arm 1 go to the challenger, appended as pipeline
    ``challenger`` (the last one).
    """

    name = "ab_router"
    role = "router"

    def __init__(self, designer: ExperimentDesigner | HashSplit, base: Any, target: int, pipeline_names: list[str]) -> None:
        self.designer, self.base, self.target = designer, base, target
        self.pipeline_names = list(pipeline_names)
        self.challenger = len(self.pipeline_names) - 1

    def act(self, batch: RequestBatch) -> np.ndarray:
        pipe = np.asarray(self.base.act(batch)).copy()
        pipe[(pipe == self.target) & (self.designer.arm(batch.users) == 1)] = self.challenger
        return pipe

    def observe(self, log: InteractionLog) -> None:
        pass


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


def split_systems(running: System, challenger: System, designer: ExperimentDesigner) -> System:
    """One system serving ``designer``'s arm-1 users with ``challenger``'s pipelines (renamed ``<name>/candidate``,
    appended after the running ones) and everyone else with ``running``'s."""
    renamed = [copy.copy(p) for p in challenger.pipelines]
    for p, q in zip(challenger.pipelines, renamed):
        q.name = f"{p.name}/candidate"
    return System([*running.pipelines, *renamed], ABSystemRouter(designer, running, challenger), running.route_names)


def replicate_seed(seed: int, replicate: int) -> int:
    """The seed of A/A replicate ``replicate`` of whatever ``seed`` seeds: ``seed`` itself for replicate 0, else an
    independent seed derived from both (the same for the same pair on every machine)."""
    check_int("replicate", replicate, 0)
    if replicate == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(replicate), 0xAA]).generate_state(1)[0] & 0x7FFFFFFF)


def check_concurrency(concurrency: int, world_cfg: WorldConfig) -> int:
    """``concurrency`` concurrent sessions need as many users: one user per session."""
    check_int("concurrency", concurrency, 1)
    if concurrency > world_cfg.num_users:
        raise ConfigError(f"`concurrency` must be <= `world.num_users`, one user per concurrent session "
                          f"(got {concurrency} > {world_cfg.num_users}); lower it or raise num_users")
    return concurrency


@dataclass
class SplitWindow:
    """One window served to two arms: ``log`` holds both arms' traffic, ``candidate`` marks the requests the
    challenger served (a boolean mask over ``log.requests``), ``salt`` is the hash salt the split used."""

    log: InteractionLog
    candidate: np.ndarray
    salt: int

    def arm(self, which: str) -> InteractionLog:
        """The log of one arm: ``candidate`` or ``control``."""
        check_choice("arm", which, ["candidate", "control"])
        return self.log.where(self.candidate if which == "candidate" else ~self.candidate)


@dataclass
class InterleavedWindow:
    """One window served interleaved (:meth:`Deployment.serve_interleaved`): ``log`` the traffic, ``team`` the team
    of each impression of ``log`` (0 the running system, 1 the challenger, -1 outside the test: a request both
    systems route to the same pipeline), ``salt`` seeded the interleaving's coins, ``method`` the interleaving."""

    log: InteractionLog
    team: np.ndarray
    salt: int
    method: str

    def credit(self, metric: str = "clicks") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per request of the test: ids, users and each team's credit (n, 2) (see
        :func:`~agents.evolution.interleaving.team_credit`)."""
        return team_credit(self.log, self.team, metric)

    def covariates(self, requests: np.ndarray) -> np.ndarray:
        """The interleaving's randomised first picks per request (:func:`~agents.evolution.interleaving.design_covariates`)."""
        return design_covariates(self.log, self.team, requests, self.method)

    def differences(self, metric: str = "clicks", adjust: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Per request of the test: its user and the credit difference challenger - running system of ``metric``,
        adjusted for the coins' first picks unless ``adjust=False`` (what an A/B gate judges)."""
        requests, users, credit = self.credit(metric)
        diff = credit[:, 1] - credit[:, 0]
        return users, (adjust_for_design(diff, self.covariates(requests)) if adjust else diff)

    def test(self, metric: str = "clicks", alpha: float = 0.05, statistic: str = "difference",
             min_effect: float = 0.0, adjust: bool = True) -> PreferenceTest:
        """The user-clustered preference test of this window (see :func:`~agents.evolution.interleaving.preference_test`),
        adjusted for the coins' first picks unless ``adjust=False``."""
        requests, users, credit = self.credit(metric)
        return preference_test(credit, users, alpha, statistic, min_effect, metric, credit_column(self.log, metric),
                               self.covariates(requests) if adjust else None)


@runtime_checkable
class DeploymentService(Protocol):
    """What every evolution path needs from a running recommender system (see the module docstring)."""

    world_cfg: WorldConfig
    reward_cfg: LayeredRewardConfig
    window: int

    @property
    def system(self) -> System: ...
    @property
    def now(self) -> float: ...
    @property
    def day(self) -> int: ...
    @property
    def last_log(self) -> InteractionLog: ...
    def agent_names(self) -> list[str]: ...
    def agent(self, name: str) -> Any: ...
    def pipeline_of(self, name: str) -> str: ...
    def deploy_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]: ...
    def deploy_system(self, system: System) -> None: ...
    @property
    def routing(self) -> dict[str, str]: ...
    def route(self, routing: Mapping[str, str], *, hand_over: bool = True) -> dict[str, str]: ...
    def reseed(self, seed: int) -> None: ...
    def serve(self, windows: int = 1, *, learn: bool | None = None) -> InteractionLog: ...
    def serve_split(self, challenger: System, share: float, *, salt: int | None = None,
                    learn: bool | None = None) -> SplitWindow: ...
    def serve_interleaved(self, challenger: System, method: str = "team_draft", *, length: int | None = None,
                          learn: bool = False, salt: int | None = None, tau: float = 3.0) -> InterleavedWindow: ...
    def serving(self, system: System) -> Any: ...
    def new_salt(self) -> int: ...
    def score(self, log: InteractionLog, agent: str | Any | None = None,
              reward: LayeredRewardConfig | None = None) -> tuple[float, dict[str, float]]: ...
    def advance(self, windows: int) -> InteractionLog: ...
    def snapshot(self) -> Any: ...
    def restore(self, snapshot: Any) -> None: ...
    def fork(self, traffic_seed: int | None = None) -> DeploymentService: ...
    def regime(self) -> np.ndarray: ...
    def start_recording(self) -> ImpressionRecorder: ...
    def stop_recording(self) -> LoggedImpressions: ...


class Deployment:
    """A world and a running system, served window by window (see the module docstring).

    Build one with :meth:`start`. ``window`` is the number of requests one window serves; ``learn`` whether
    agents learn from the windows served (each call may override it); ``reward_cfg`` and ``risk_bound`` are the
    defaults of :meth:`score` and of the regime summary. ``pool`` (optional) holds every agent a composition may
    wire (:class:`~agents.evolution.composition.ComponentPool`); it is copied with the rest by :meth:`fork`.
    """

    def __init__(self, sim: Simulation, world_cfg: WorldConfig, *, window: int = 2000, learn: bool = True,
                 reward: LayeredRewardConfig | None = None, risk_bound: float = 0.1, pool: Any = None,
                 salt_seed: int = 0) -> None:
        self._sim = sim
        self.world_cfg = world_cfg
        self.window = check_int("window", window, 1)
        self.learn = bool(learn)
        self.reward_cfg = reward or LayeredRewardConfig()
        self.risk_bound = check_range("risk_bound", risk_bound, 0.0)
        self.pool = pool
        self.composition: Any = None  # the composition deployed last (with a pool)
        self.notes: list[str] = []  # what deploying it had to adjust (see ComponentPool.pipeline)
        self._salts = np.random.default_rng([int(salt_seed), 0x5A17])  # A/B salts: their own stream
        self._last: InteractionLog = InteractionLog(route_names=list(sim.system.route_names),
                                                    segment_names=list(world_cfg.segment_names))
        self._previous_ctr: float | None = None
        self._last_pipelines: list[Any] = list(sim.system.pipelines)  # the pipelines of the system that served _last
        self.resources: ResourceProfile | None = None  # set by calibrate_resources (or a loaded profile)

    @classmethod
    def start(cls, world_cfg: WorldConfig, system: System | SystemConfig, *, seed: int | None = None,
              world_seed: int | None = None, sim_seed: int | None = None, concurrency: int = 400, window: int = 2000,
              learn: bool = True, reward: LayeredRewardConfig | None = None, risk_bound: float = 0.1,
              pool: Any = None, system_seed: int | None = None) -> Deployment:
        """A fresh world running ``system`` (a ``System`` or a ``SystemConfig`` to build). Seeds: ``seed`` derives
        the world's and the simulation's; ``world_seed`` and ``sim_seed`` set them directly (both, instead).
        The simulation seed keys the traffic and, unless ``system_seed`` is given, the system's own randomness
        (exploration draws, logged candidates, A/B salts): a different ``system_seed`` on the same world and
        traffic is an A/A replicate (:func:`replicate_seed`)."""
        if (seed is None) == (world_seed is None or sim_seed is None):
            raise ConfigError(f"give `seed`, or both `world_seed` and `sim_seed` (got seed={seed}, "
                              f"world_seed={world_seed}, sim_seed={sim_seed})")
        check_concurrency(concurrency, world_cfg)
        if seed is not None:
            world_seed, sim_seed = (int(x) for x in np.random.SeedSequence(int(seed)).generate_state(2))
        if isinstance(system, SystemConfig):
            system = build_system(system, world_cfg)
        elif not isinstance(system, System):
            raise ConfigError(f"`system` must be a System or a SystemConfig (got {type(system).__name__})")
        # the simulation seed keys the traffic (every draw about users and requests: envs.streams) and the system's
        # own randomness; the world seed fixes the catalog and the population
        own = int(sim_seed) if system_seed is None else check_int("system_seed", system_seed, 0)
        world = World(world_cfg, seed=int(world_seed), traffic_seed=int(sim_seed))
        sim = Simulation(world, system, concurrency=concurrency, seed=own)
        return cls(sim, world_cfg, window=window, learn=learn, reward=reward, risk_bound=risk_bound, pool=pool,
                   salt_seed=own)

    # ------------------------------------------------------------------ what is running
    @property
    def system(self) -> System:
        """The running system (read it; change it through the ``deploy_*`` methods)."""
        return self._sim.system

    @property
    def now(self) -> float:
        """The world's clock, in days."""
        return float(self._sim.world.now)

    @property
    def day(self) -> int:
        return int(self._sim.world.day)

    @property
    def embedding(self) -> np.ndarray:
        """The catalog's topic embeddings (what diversity metrics are computed in)."""
        return self._sim.world.catalog.embedding

    @property
    def shift_events(self) -> list[Any]:
        """The world's shift events so far."""
        return list(self._sim.world.events)

    @property
    def last_log(self) -> InteractionLog:
        """The log of the last window served (empty before any)."""
        return self._last

    def agent_names(self) -> list[str]:
        """The qualified names (``pipeline/role/name``) of the running system's agents."""
        return list(qualified_agents(self.system))

    def agent(self, name: str) -> Any:
        """A running agent by its qualified name (with a pool: a pooled agent by its name, e.g.
        ``main/rerank/mmr``, whether or not the deployed composition wires it)."""
        agents = self._agents()
        check_choice("agent", name, list(agents))
        return agents[name]

    def pipeline_of(self, name: str) -> str:
        """The pipeline an agent (qualified name) serves in."""
        self.agent(name)
        return name.split("/", 1)[0]

    def _agents(self) -> dict[str, Any]:
        return self.pool.agents if self.pool is not None else qualified_agents(self.system)

    # ------------------------------------------------------------------ deploy
    def deploy_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Set (part of) an agent's config (merged over its current one); returns its whole config after the change."""
        agent = self.agent(name)
        agent.configure(agent.params.validate({**agent.config, **config}, agent=name))
        return dict(agent.config)

    def deploy_system(self, system: System) -> None:
        """Replace the running system (e.g. by a design that won its A/B test)."""
        if not isinstance(system, System):
            raise ConfigError(f"`system` must be a System (got {type(system).__name__})")
        self._sim.system = system

    @property
    def routing(self) -> dict[str, str]:
        """The pipeline that serves each user segment now (segment -> pipeline name, the router's assignment)."""
        router = self._sim.system.router
        return {s: router.config[f"route_{s}"] for s in router.segment_names}

    def route(self, routing: Mapping[str, str], *, hand_over: bool = True) -> dict[str, str]:
        """Serve the segments of ``routing`` (segment -> pipeline name) from those pipelines; the others keep
        theirs. Returns the routing before, to restore it with.

        ``hand_over``: a pipeline taking over a segment first learns from what the pipeline that served it
        remembers of that segment (the impressions its ranker kept, at least as many gradient steps as that ranker
        has taken, capped at :data:`WARM_UPDATES`): a pipeline launched into a running system starts trained on
        the segment's logged traffic, as a practitioner would launch it, not from its initial weights."""
        router = self._sim.system.router
        segments, names = list(router.segment_names), list(router.pipeline_names)
        for segment, pipe in routing.items():
            check_choice("routing segment", segment, segments)
            check_choice(f"routing[{segment}]", pipe, names)
        before = self.routing
        if hand_over:
            rankers = {p.name: p.ranker for p in self._sim.system.pipelines}
            for segment, pipe in routing.items():
                src, dst = rankers[before[segment]], rankers[pipe]
                if src is dst:
                    continue
                if not (hasattr(src, "memory") and hasattr(dst, "learn_from")):
                    raise ConfigError(f"a hand-over of segment {segment!r} needs rankers that remember impressions "
                                      f"(got {type(src).__name__} -> {type(dst).__name__}); route with hand_over=False")
                x, y, s = src.memory()
                keep = s == segments.index(segment)
                if keep.any():
                    dst.learn_from((x[keep], y[keep], s[keep]), min_updates=min(src.updates, WARM_UPDATES))
        router.configure({**router.config, **{f"route_{s}": p for s, p in routing.items()}})
        return before

    def reseed(self, seed: int) -> None:
        """Draw the running system's own randomness from ``seed`` from now on (exploration and logged candidates,
        A/B salts, its rankers' minibatch order, a bandit router's draws); the world and its traffic keep theirs.
        From one state, two seeds are A/A replicates of the system's randomness alone."""
        seed = check_int("seed", seed, 0)
        self._sim.seed = seed
        self._salts = np.random.default_rng([seed, 0x5A17])
        for i, agent in enumerate(self._sim.system.agents):
            reseed = getattr(agent, "reseed", None)  # agents that own a generator (rankers, the router)
            if reseed is not None:
                reseed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))

    def deploy_composition(self, composition: Any) -> list[str]:
        """Wire ``composition`` from the pool's (trained) agents into the running simulation; returns the notes
        on what had to be adjusted (e.g. a pipeline with every route off served by popularity)."""
        if self.pool is None:
            raise ConfigError("`deploy_composition` needs a deployment with a component pool (got none)")
        composition.validate(list(self.world_cfg.segment_names))
        self._sim.system, self.notes = self.pool.system(composition)
        self.composition = composition
        return list(self.notes)

    # ------------------------------------------------------------------ serve
    def _served(self, log: InteractionLog) -> InteractionLog:
        self._previous_ctr = float(self._last.requests["clicks"].mean()) if self._last.num_requests else None
        self._last = log
        self._last_pipelines = list(self._sim.system.pipelines)  # a split window's system while `serving` one
        return log

    def serve(self, windows: int = 1, *, learn: bool | None = None) -> InteractionLog:
        """Serve ``windows`` windows with the running system; returns the last one's log."""
        check_int("windows", windows, 1)
        learn = self.learn if learn is None else bool(learn)
        for _ in range(windows):
            log = self._served(self._sim.window(self.window, learn=learn))
        return log

    def advance(self, windows: int) -> InteractionLog:
        """Let ``windows`` windows pass with the current decisions (days pass, shifts fire; agents learn as set)."""
        return self.serve(windows)

    @contextmanager
    def serving(self, system: System) -> Iterator[Deployment]:
        """Serve ``system`` instead of the running one inside the block (e.g. an A/B split of it); the running
        system is back in place afterwards, also on error."""
        running = self._sim.system
        self._sim.system = system
        try:
            yield self
        finally:
            self._sim.system = running

    def new_salt(self) -> int:
        """A fresh hash salt for a new test's user split (from the deployment's own stream)."""
        return int(self._salts.integers(2**31))

    def serve_split(self, challenger: System, share: float, *, salt: int | None = None,
                    learn: bool | None = None) -> SplitWindow:
        """Serve one window with ``share`` of the users (by a salted hash of their id; a fresh salt unless given)
        on ``challenger`` and the rest on the running system; agents both systems share learn from both arms."""
        check_range("share", share, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        salt = self.new_salt() if salt is None else int(salt)
        running = self.system
        split = split_systems(running, challenger, ExperimentDesigner(config={"share": share}, salt=salt))
        with self.serving(split):
            log = self.serve(learn=learn)
        return SplitWindow(log, log.requests["pipeline"] >= len(running.pipelines), salt)

    def serve_interleaved(self, challenger: System, method: str = "team_draft", *, length: int | None = None,
                          learn: bool = False, salt: int | None = None, tau: float = 3.0) -> InterleavedWindow:
        """Serve one window in which every request is ranked by both the running system (team 0) and ``challenger``
        (team 1) and the user sees the ``method``'s interleaving of the two (:data:`~agents.evolution.interleaving.
        METHODS`; ``length``: items each side ranks, default twice the slate; ``tau``: probabilistic interleaving's
        softmax exponent). The coins come from a stream seeded by ``salt`` (a fresh one unless given). Agents do not
        learn from the test unless ``learn`` (then both systems' agents learn from the whole window). Requests both
        systems route to the same pipeline object are served by it alone and are outside the test (team -1)."""
        check_choice("method", method, list(METHODS))
        salt = self.new_salt() if salt is None else int(salt)
        system, pipe = interleaved_system(self.system, challenger, method, np.random.default_rng([salt, 0x1EAF]),
                                          length=length, tau=tau)
        pipe.learn = bool(learn)
        with self.serving(system):
            log = self.serve(learn=learn)
        return InterleavedWindow(log, pipe.team_of(log.impressions["request"], log.impressions["position"]), salt, method)

    # ------------------------------------------------------------------ measure
    def score(self, log: InteractionLog, agent: str | Any | None = None,
              reward: LayeredRewardConfig | None = None) -> tuple[float, dict[str, float]]:
        """The layered reward of ``log`` and all its terms: for an agent (a qualified name or the agent itself:
        its role's mix) or, with ``agent=None``, for the system (outer objectives); ``reward`` defaults to the
        deployment's reward config."""
        cfg = reward or self.reward_cfg
        if agent is None:
            lr = layered_reward("system", log, cfg)
            value, terms = (float(lr.value) if np.isfinite(lr.value) else 0.0), lr.terms
        else:
            value, terms = agent_reward(self.agent(agent) if isinstance(agent, str) else agent, log, cfg, self.embedding)
        if self.resources is not None:
            terms = {**terms, **self.resource_metrics(log)}
        return value, terms

    def calibrate_resources(self, pipelines: list[Any] | None = None, *, batch_sizes: tuple[int, ...] = (32, 128, 512),
                            repeats: int = 3) -> ResourceProfile:
        """Time the serving code of ``pipelines`` (default: the running ones) on this world at ``batch_sizes``,
        fit the resource model (:func:`~agents.decision.resources.calibrate`), keep it as :attr:`resources` (from
        then on :meth:`score` reports the ``outer/cost/`` latency and compute terms) and return it. Nothing served
        or learned changes."""
        world = self._sim.world
        sizes = tuple(min(int(b), world.cfg.num_users) for b in batch_sizes)
        self.resources = calibrate(world, pipelines or self.system.pipelines, self._sim.slate_size,
                                   batch_sizes=sizes, repeats=repeats)
        return self.resources

    def time_stages(self, batch_size: int, pipeline: int = 0, *, repeats: int = 3, seed: int = 0) -> dict[str, float]:
        """Median milliseconds of each stage of running pipeline ``pipeline`` serving one batch of ``batch_size``
        random users of this world (:func:`~agents.decision.resources.time_stages`; nothing served or learned
        changes): the measurements the resource model is fitted to, e.g. to check its predictions."""
        world = self._sim.world
        size = min(check_int("batch_size", batch_size, 1), world.cfg.num_users)
        users = np.random.default_rng([seed, size]).choice(world.cfg.num_users, size=size, replace=False)
        return time_stages(self.system.pipelines[pipeline], world, users, self._sim.slate_size, repeats=repeats,
                           seed=seed)

    def resource_metrics(self, log: InteractionLog) -> dict[str, float]:
        """``outer/cost/latency_p50_ms``, ``latency_p99_ms``, ``compute_ms_per_request`` and ``flops_per_request``
        of ``log`` served by the running pipelines, from :attr:`resources` (a ConfigError without one). A log whose
        pipeline indices go past the running system's (a window split with a concurrent control or an A/B arm,
        scored after :meth:`serving` put the running system back) is costed on the pipelines that served the last
        window."""
        if self.resources is None:
            raise ConfigError("no resource profile: call calibrate_resources() first (or set `resources`)")
        pipelines, index = self.system.pipelines, log.requests["pipeline"]
        if len(index) and int(index.max()) >= len(pipelines):
            pipelines = self._last_pipelines
        return {f"outer/cost/{k}": v for k, v in window_costs(self.resources, pipelines, log).items()}

    def regime(self) -> np.ndarray:
        """The data regime of the last window served: segment request shares, then ``REGIME_SCALARS``."""
        return regime_features(self._last, self._previous_ctr, self.risk_bound, self.now)

    def restart_trend(self) -> None:
        """Forget the window before the last one: the next regime summary reports no trend."""
        self._previous_ctr = None

    # ------------------------------------------------------------------ state
    def fork(self, traffic_seed: int | None = None) -> Deployment:
        """A deep, independent copy: world, running system, pool, logs and every random stream. Serving the
        fork changes nothing here; a fork served like the original serves identical traffic (a twin).

        ``traffic_seed``: the fork's future traffic (every draw about users and requests, ``envs.streams``) and the
        system's own randomness (:meth:`reseed`: exploration, A/B salts, minibatch order) come from this seed
        instead: an independent replicate from the same state (what a comparison without common random numbers
        sees). (Before 2026-12-01 the salts and the agents' generators were copied: every such fork split users
        with the same salt.)"""
        recorder, self._sim.recorder = self._sim.recorder, None  # a twin does not record (nor copy the recording)
        try:
            twin = copy.deepcopy(self)
        finally:
            self._sim.recorder = recorder
        if traffic_seed is not None:
            twin._sim.world.streams = Streams(int(traffic_seed))
            twin.reseed(int(traffic_seed))
        return twin

    def start_recording(self) -> ImpressionRecorder:
        """Keep every impression served from now on with what the rankers saw (offline evaluation's logged data);
        forks and restored snapshots do not record. Recording changes nothing the simulation does."""
        self._sim.recorder = ImpressionRecorder()
        return self._sim.recorder

    def stop_recording(self) -> LoggedImpressions:
        """The impressions recorded since :meth:`start_recording`; recording stops."""
        recorder, self._sim.recorder = self._sim.recorder, None
        if recorder is None:
            raise ConfigError("`stop_recording` needs a recording started with start_recording() (none is running)")
        return recorder.logged()

    def snapshot(self) -> Deployment:
        """A frozen copy of the whole state, for :meth:`restore`."""
        return self.fork()

    def restore(self, snapshot: Deployment) -> None:
        """Go back to ``snapshot`` (which stays usable: it is copied, not consumed)."""
        if not isinstance(snapshot, Deployment):
            raise ConfigError(f"`snapshot` must come from Deployment.snapshot() (got {type(snapshot).__name__})")
        self.__dict__.update(copy.deepcopy(snapshot).__dict__)
