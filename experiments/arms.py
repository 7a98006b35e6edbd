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
        return evolve(ctx.env, MyGreedy(ctx.env.target_params(), ctx.options.epsilon, ctx.agent_seed), ctx.windows, seed=ctx.seed)

and a ``conf/controller/greedy.yaml`` with ``name: greedy`` and its ``options``. The env resets with ``ctx.seed``
(the world and its traffic); the controller's own randomness takes ``ctx.agent_seed``, which an A/A replicate
(``controller.replicate``) re-seeds. An arm that runs windows
outside ``ctx.env`` (several envs, a rollout loop) reports each one through ``ctx.on_window(step, config,
reward, info)``; ``ctx.store`` / ``ctx.exp_id`` let it read and write the knowledge store (designs, rollouts).

``register_arm(name, env="composition")`` makes the run build a
:class:`~agents.evolution.composition.CompositionEnv` instead (the system config's first pipeline is the
``main`` slot's template, its second, or the cold-start pipeline, the ``specialist``'s; its routing is the
initial composition; ``evolution.agent`` names the pooled agent evolved individually, e.g. ``main/rerank/mmr``).
The composition arms compare evolving one agent, the wiring, or both in alternation (ablation C4).

Every recorded window also carries per-segment engagement (:func:`segment_metrics`), so claims can compare
``segment/<name>/clicks_per_request`` across arms (ablation C1). With ``evolution.exploit = n`` every arm then
serves ``n`` more windows with what it found (:func:`exploit`: the best config of its run, its trained policy, or
the production its gates let through), recorded with phase ``exploit``: claims with ``stage: exploit`` compare
what the arms found, net of the cost of exploring.
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from agents.decision.features import BASE_GROUPS, FeatureSet, ImpressionRecorder
from agents.decision.functional import ExperimentDesigner
from agents.decision.models import WIDTHS, ModelDesign
from agents.decision.ranking import LOSS_WEIGHTS, FeatureRanker
from agents.evolution.autofeature import AutoFeature, deployable_ranker, ranker_flops
from agents.evolution.autoperf import AutoPerf
from agents.evolution.autotrain import AutoTrain, method_cards
from agents.evolution.composition import DESCRIPTION, CompositionEnv
from agents.evolution.controllers import (
    EvolutionHistory,
    OptunaSearch,
    RandomSearch,
    StaticController,
    evolve,
    leaders,
    successive_halving,
)
from agents.evolution.coordinator import Coordinator, Proposal
from agents.evolution.deployment import Deployment, replicate_seed
from agents.evolution.designer import MODES, LLMDesigner, agent_edits, design_step
from agents.evolution.env import MAX_CONTROL_SHARE, TWIN_PREFIX, EvolutionEnv
from agents.evolution.llm import BACKENDS, make_backend
from agents.evolution.llm_search import LLMSearch
from agents.evolution.offline import OfflineOnlineLedger, TrainRecipe, compare, logged_data, time_split
from agents.evolution.rollout import ab_rollout_pipeline
from agents.evolution.schedule import SaturationTest, ShiftTest, alternate
from agents.evolution.twins import evaluate as twin_values
from envs.log import InteractionLog
from envs.validation import ConfigError, check_choice, check_int, check_range
from experiments.loggers import write_atomic
from experiments.registry import ARMS  # filled by register_arm below; experiments.config reads it
from rewards.stats import clustered_difference_interval

if TYPE_CHECKING:  # annotations only: the store loads SQLAlchemy, the config module Hydra's schema
    from agents.infra.store import KnowledgeStore
    from experiments.config import ExperimentConfig

__all__ = ["ARMS", "ENV_KINDS", "AlternatingOptions", "Arm", "ArmContext", "AutoModelOptions", "Checkpoints", "OnWindow",
           "PPOOptions", "RankerCandidate", "Residual", "Shipper", "StaticController", "SystemOptions", "WindowRecorder",
           "automodel_round", "best_config", "curve_summary", "exploit", "register_arm", "retest", "run_arm", "screen_ranker",
           "search_windows", "segment_metrics", "select", "twin_gain"]

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
    make_env: Callable[..., gym.Env] | None = None  # a fresh env of the run's config (``evolution`` fields overridden
    # by keyword, e.g. ``stationary=True``): a simulated platform to train on
    out_dir: Path | None = None  # the run's folder (an arm may keep what it trained there, e.g. ``policy.zip``)
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # an arm's own curves (rows by name):
    # the run writes each as ``<name>.csv`` and a figure, and their ``summary`` numbers into ``summary.json``
    summary: dict[str, float] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        """The run's seed: what the env resets with (the world and its traffic)."""
        return self.cfg.seed

    @property
    def agent_seed(self) -> int:
        """The controller's own seed (its sampler, policy initialisation, LLM sampling): the run's seed, re-seeded for
        an A/A replicate (``controller.replicate``) so that the replicate repeats the arm with its own randomness."""
        return replicate_seed(self.cfg.seed, self.cfg.controller.replicate)

    @property
    def windows(self) -> int:
        return self.cfg.evolution.windows

    @property
    def deployment(self) -> Deployment:
        """The running system's deployment service (after the env's first reset)."""
        return self.env.get_wrapper_attr("service")

    @property
    def codec(self) -> Any:
        """The env's action codec (config <-> action)."""
        return self.env.get_wrapper_attr("codec")

    @property
    def params(self) -> Any:
        """The decision space the arm searches (the target agent's free parameters, or the composition's)."""
        return self.env.get_wrapper_attr("target_params")()


ArmFn = Callable[[ArmContext], EvolutionHistory]


ENV_KINDS = ("evolution", "composition")  # the env an arm drives: EvolutionEnv or CompositionEnv
# How an arm's search meets `evolution.explore_share`: "share", it explores on that share of the users (a concurrent
# control on the rest); "all", it explores on all traffic and cannot split it (a share < 1 is an error); "none", it
# proposes nothing per window (static, the oracle) or gates its changes by its own test share (the designer)
EXPLORES = ("none", "share", "all")


@dataclass(frozen=True)
class Arm:
    name: str
    run: ArmFn
    options: type | None
    description: str
    env: str = "evolution"  # one of ENV_KINDS
    live: bool = False  # it serves windows step() alone does not (deploys structures, splits traffic): needs
    # evolution.stationary=false and no reward constraints
    selects: bool = False  # it picks what it exploits by `evolution.select` (a re-test is live, like `live`)
    twins: bool = True  # the env's action is all it changes, so `evolution.twins` can judge the action against the
    # incumbent's (False: it also changes the system outside the action, a structure or a pooled agent's config)
    explores: str = "none"  # one of EXPLORES: how its search meets `evolution.explore_share`


def register_arm(name: str, options: type | None = None, env: str = "evolution", live: bool = False,
                 selects: bool = False, twins: bool = True, explores: str = "none") -> Callable[[ArmFn], ArmFn]:
    """Register ``fn`` as the arm ``name`` (with an optional options dataclass, validated at start-up) that
    drives an env of kind ``env`` (``"evolution"`` or ``"composition"``); ``live``: the arm serves windows the env's
    ``step`` alone does not describe (deploys new structures, splits traffic with a control), so the env must not
    restore snapshots and its reward must not be wrapped by constraints; ``selects``: it picks the config it exploits
    with :func:`select` (``evolution.select``), so with ``select: retest`` it is live too; ``twins``: the action is all
    the arm changes (else ``evolution.twins`` is off for it: the incumbent's action on a twin would keep the arm's
    other changes); ``explores``: how its search meets ``evolution.explore_share`` (:data:`EXPLORES`; an arm with
    ``"share"`` runs its searching windows inside :func:`exploring`)."""
    check_choice("env", env, ENV_KINDS)
    check_choice("explores", explores, list(EXPLORES))

    def add(fn: ArmFn) -> ArmFn:
        if name in ARMS:
            raise ConfigError(f"arm {name!r} is already registered (by {ARMS[name].run.__module__}.{ARMS[name].run.__name__})")
        doc = (fn.__doc__ or "").strip().splitlines()
        ARMS[name] = Arm(name, fn, options, doc[0] if doc else "", env, live, selects, twins, explores)
        return fn

    return add


def run_arm(ctx: ArmContext) -> EvolutionHistory:
    """Run the arm named by ``ctx.cfg.controller.name``."""
    return ARMS[ctx.cfg.controller.name].run(ctx)


def segment_metrics(log: InteractionLog | None) -> dict[str, float]:
    """Per user segment of one window's log: ``segment/<name>/clicks_per_request`` (realised) and its expected
    version ``segment/<name>/clicks_per_request/exp`` (the choice model's click probabilities, no sampling noise),
    ``/violations_per_request`` (nan for a segment without requests) and ``/request_share``. The segment is the
    user's at request time."""
    if log is None or not log.num_requests:
        return {}
    req, k = log.requests, len(log.segment_names)
    seg = req["segment"].astype(np.int64)
    n = np.bincount(seg, minlength=k)[:k].astype(np.float64)
    clicks = np.bincount(seg, weights=req["clicks"].astype(np.float64), minlength=k)[:k]
    expected = np.bincount(seg, weights=req["clicks_exp"].astype(np.float64), minlength=k)[:k]
    violations = np.bincount(seg, weights=req["violations"].astype(np.float64), minlength=k)[:k]
    out: dict[str, float] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for i, name in enumerate(log.segment_names):
            out[f"segment/{name}/clicks_per_request"] = float(clicks[i] / n[i]) if n[i] else math.nan
            out[f"segment/{name}/clicks_per_request/exp"] = float(expected[i] / n[i]) if n[i] else math.nan
            out[f"segment/{name}/violations_per_request"] = float(violations[i] / n[i]) if n[i] else math.nan
            out[f"segment/{name}/request_share"] = float(n[i] / n.sum())
    return out


def twin_gain(env: Any, action: np.ndarray, incumbent: np.ndarray) -> dict[str, float]:
    """``twin/<metric>``: the coming window's reward and inner and outer metrics with ``action`` minus with
    ``incumbent``, each served on a twin of ``env``'s deployment (:meth:`~agents.evolution.env.WindowEnv.twin_window`:
    identical state and traffic, so the difference is the action's effect alone). Equal actions gain exactly 0."""
    action = np.asarray(action)
    base_reward, base = env.twin_window(incumbent)
    keys = [k for k, v in base.items() if k.startswith(("inner/", "outer/")) and isinstance(v, (int, float, np.floating))]
    if np.array_equal(action, np.asarray(incumbent)):
        reward, terms = base_reward, base
    else:
        reward, terms = env.twin_window(action)
    return {f"{TWIN_PREFIX}reward": float(reward - base_reward),
            **{f"{TWIN_PREFIX}{k}": float(terms[k] - base[k]) for k in keys if k in terms}}


class WindowRecorder(gym.Wrapper):
    """Calls ``on_window(step, config, reward, info)`` after each step; ``info['regime']`` is the observation acted on.

    Keeps the history and the observation the next step acts on (``last_obs``); the env's own attributes are
    reached through ``get_wrapper_attr``.
    ``info`` gains the window's per-segment metrics (:func:`segment_metrics`) and, while ``phase`` is set, the
    ``phase``. On a composition env the config recorded is the composition: its key (``composition``) and every
    choice (``main/quota_popularity``, ...), and ``agent``'s config (the evolved pooled agent's parameters, as the
    schedule's rows name them) once an arm has configured it (``individual``, ``alternating``).

    ``twins`` (``evolution.twins``: ``off``, ``exploit`` or ``all``): in those windows, before the window is served,
    the action and the incumbent's (the env's action right after reset) are each served on a twin of the deployment
    (:meth:`~agents.evolution.env.WindowEnv.twin_window`: the same state and traffic, learning off), and ``info``
    gains ``twin/<metric>`` = action - incumbent for the env's reward and every inner and outer metric
    (:func:`twin_gain`); an action equal to the incumbent's gains exactly 0 without being served twice. Windows
    split with a concurrent control (a re-test, ``optuna_ab``'s search) get none.
    """

    def __init__(self, env: gym.Env, on_window: OnWindow, twins: str = "off", agent: str = "") -> None:
        super().__init__(env)
        self.agent = agent
        self.on_window = on_window
        self.twins = twins
        self.steps = 0
        self.phase: str | None = None
        self.history = EvolutionHistory()
        self.last_obs: np.ndarray | None = None
        self.incumbent: np.ndarray | None = None  # the env's action right after the last reset
        self.reset_info: dict[str, Any] = {}  # the last reset's info (the warm-up's trend test: ``warmup/*``)
        self.extra: Callable[[], dict[str, float]] | None = None  # more numbers for each window's info (an arm's)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.last_obs = obs
        self.reset_info = info
        self.incumbent = self.env.unwrapped.current_action()
        return obs, info

    def _twinned(self) -> bool:
        if self.twins == "off" or getattr(self.env.unwrapped, "control_share", 0.0):
            return False
        return self.phase == "exploit" or (self.twins == "all" and self.phase is None)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        inner = self.env.unwrapped
        twin = twin_gain(inner, action, self.incumbent) if self._twinned() else {}
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = {**info, "regime": self.last_obs, **segment_metrics(inner.service.last_log), **twin,
                **(self.extra() if self.extra is not None else {})}
        if isinstance(inner, CompositionEnv):
            info |= {"config": {"composition": inner.composition.key(), **inner.to_config(inner.composition),
                                **inner.overrides.get(self.agent, {})}, "agent": "composition"}
        if self.phase is not None:
            info["phase"] = self.phase
        self.last_obs = obs
        self.history.configs.append(info["config"])
        self.history.rewards.append(float(reward))
        self.history.infos.append(info)
        self.on_window(self.steps, info["config"], float(reward), info)
        self.steps += 1
        return obs, reward, terminated, truncated, info


def exploit(ctx: ArmContext, propose: Callable[[np.ndarray | None], dict[str, Any]]) -> None:
    """Serve ``evolution.exploit`` more windows (rows ``windows`` on, phase ``exploit``) with what the arm found:
    ``propose(obs)`` gives each window's config (a point of ``ctx.params``)."""
    env = ctx.env
    env.steps, env.phase = max(env.steps, ctx.windows), "exploit"
    obs = env.last_obs
    for _ in range(ctx.cfg.evolution.exploit):
        obs, *_ = env.step(ctx.codec.encode(propose(obs)))


def best_config(history: EvolutionHistory, params: Any) -> dict[str, Any]:
    """The config of the run's best window (since the last detected shift), restricted to ``params``' names."""
    config, _ = history.best
    return {k: v for k, v in config.items() if k in params.by_name}


# --------------------------------------------------------------------------- the arms


def initial_config(ctx: ArmContext) -> dict[str, Any]:
    """The evolved agent's config as the system config sets it, restricted to the evolved parameters."""
    return {k: v for k, v in ctx.env.get_wrapper_attr("initial_config").items() if k in ctx.params.by_name}


def search_windows(ctx: ArmContext) -> int:
    """The windows a searching arm proposes configs in: all of them, less the re-test's (``evolution.select``)."""
    e = ctx.cfg.evolution
    return ctx.windows - (e.retest if e.select == "retest" else 0)


def select(ctx: ArmContext) -> dict[str, Any]:
    """The config a searching arm exploits, by ``evolution.select``: its best window's, or the winner of a re-test
    of its leaders (:func:`retest`). (``ship``: production, what the arm's :class:`Shipper` shipped last.)"""
    if ctx.cfg.evolution.select == "retest":
        return retest(ctx)
    return best_config(ctx.env.history, ctx.params)


def retest(ctx: ArmContext) -> dict[str, Any]:
    """Re-test the run's ``evolution.leaders`` best distinct configs on live traffic by successive halving over
    ``evolution.retest`` windows (:func:`~agents.evolution.controllers.successive_halving`): each window serves one
    leader to ``evolution.retest_share`` of the users and the incumbent (the agent as the system config sets it) to
    the rest, split by a fresh salt (a concurrent control: the comparison is free of the learning system's trend).
    The winner (best mean of ``candidate - control`` over its windows) is returned if that mean is > 0, else the
    incumbent. With ``reward.constraints`` the constraints are guardrails: a leader is deployed only if its own
    users' metrics over its re-test windows meet every bound at the one-sided 95% confidence bound of their mean
    (:meth:`~rewards.constraints.Constraint.confident_excess`; a leader re-tested once cannot show it); the best such
    leader of the last round reached (then the one before, ...) with a mean > 0 wins, else the incumbent stays.
    Rows of these windows have phase ``retest`` (they count as the evolution's: live traffic spent on choosing) and
    ``retest/leader``; the reward recorded is the whole window's. The exploit rows then carry ``selection/leader``
    (-1: the incumbent stayed), ``selection/retest_mean`` and, with constraints, ``selection/guardrail_breaches``
    (leaders passed over for a breach)."""
    e, env = ctx.cfg.evolution, ctx.env
    configs = leaders(env.history, ctx.params.by_name, e.leaders)
    guardrails = [c.build() for c in ctx.cfg.reward.constraints]
    set_share = env.get_wrapper_attr("set_control_share")
    set_share(1.0 - e.retest_share, relative=False)
    env.phase, current = "retest", {}
    env.extra = lambda: dict(current)
    own: list[list[dict[str, float]]] = [[] for _ in configs]  # each leader's users' outer metrics, per window

    def measure(i: int) -> float:
        current["retest/leader"] = float(i)
        *_, info = env.step(ctx.codec.encode(configs[i]))
        own[i].append({k.removeprefix("evolution/candidate/"): v for k, v in info.items()
                       if k.startswith("evolution/candidate/outer/")})
        return float(info["evolution/candidate_reward"] - info["evolution/control_reward"])

    result = successive_halving(len(configs), e.retest, measure)
    set_share(0.0)
    env.phase = None
    means = result.means
    # the order halving left them in: the last round's leaders first, each round by mean
    order = sorted(range(len(configs)), key=lambda i: (-len(result.values[i]), -means[i], i))
    breaches = 0
    chosen = -1
    for i in order if guardrails else [result.winner]:
        if not means[i] > 0:
            break
        if any(c.confident_excess([w[c.metric] for w in own[i]]) > 0 for c in guardrails):
            breaches += 1
            continue
        chosen = i
        break
    mean = means[chosen] if chosen >= 0 else means[result.winner]
    extra = {"selection/leader": float(chosen), "selection/retest_mean": mean}
    if guardrails:
        extra["selection/guardrail_breaches"] = float(breaches)
    env.extra = lambda: dict(extra)
    log.info("re-test of %d leaders: means %s -> %s%s", len(configs), [round(m, 4) for m in means],
             f"leader {chosen}" if chosen >= 0 else "the incumbent stays",
             f" ({breaches} passed over for a guardrail breach)" if breaches else "")
    return configs[chosen] if chosen >= 0 else initial_config(ctx)


@dataclass
class SearchOptions:
    """Warm starts from the knowledge store shared across experiments (``warm_start``): at its first proposal the
    search is seeded with the ``warm_k`` best trials of the same agent from the regimes nearest the one it starts
    in, taken from earlier experiments with the same reward, system and evolved agent (finished before this run
    registered: a resumed run sees the same ones), and proposes the ``warm_replay`` best of them first.
    ``warm_from``: ``earlier`` (those experiments), ``own`` (this run's own earlier windows: knowledge from the
    regimes it has already met, reproducible whatever the store holds) or ``both``. ``warm_delay``: windows served
    before seeding (the regime summary describes the last window served: after a regime change, one window passes
    before it describes the new regime)."""

    warm_start: bool = False
    warm_k: int = 10
    warm_replay: int = 1
    warm_from: str = "earlier"
    warm_delay: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.warm_start, bool):
            raise ConfigError(f"`controller.options.warm_start` must be true or false (got {self.warm_start!r})")
        check_int("controller.options.warm_k", self.warm_k, 1)
        check_int("controller.options.warm_replay", self.warm_replay, 0)
        check_choice("controller.options.warm_from", self.warm_from, WARM_FROM)
        check_int("controller.options.warm_delay", self.warm_delay, 0)


WARM_KEYS = ("reward", "system")  # what earlier experiments must share with this one for their trials to seed it
WARM_FROM = ("earlier", "own", "both")  # SearchOptions.warm_from


def warm_sources(ctx: ArmContext) -> list[int]:
    """The experiments whose trials may seed this run's search: other experiments with the same reward, system and
    evolved agent that finished before this one registered."""
    mine = ctx.store.experiment(ctx.exp_id).config
    return [e.id for e in ctx.store.earlier_experiments(ctx.exp_id)
            if all(e.config.get(k) == mine.get(k) for k in WARM_KEYS)
            and (e.config.get("evolution") or {}).get("agent") == (mine.get("evolution") or {}).get("agent")]


def stored_agent(ctx: ArmContext) -> str:
    """The agent name the run's trials are stored under (``composition`` for a composition env)."""
    return "composition" if isinstance(ctx.env.unwrapped, CompositionEnv) else ctx.cfg.evolution.agent


class WarmStarted:
    """A search controller seeded from the knowledge store at its first proposal (:class:`SearchOptions`); records
    ``warm_start/trials`` (how many past trials were offered) and ``warm_start/experiments`` in the run's summary."""

    def __init__(self, controller: OptunaSearch, ctx: ArmContext, options: SearchOptions) -> None:
        self.controller, self.ctx, self.options = controller, ctx, options
        self.name = controller.name
        self.seeded: int | None = None
        self.proposed = 0

    def propose(self, obs: np.ndarray) -> dict[str, Any]:
        self.proposed += 1
        if self.seeded is None and self.proposed > self.options.warm_delay:
            frm = self.options.warm_from
            sources = (warm_sources(self.ctx) if frm != "own" else []) + ([self.ctx.exp_id] if frm != "earlier" else [])
            agent = stored_agent(self.ctx)
            self.seeded = self.controller.warm_start_from(self.ctx.store, agent, obs, k=self.options.warm_k,
                                                          replay=self.options.warm_replay, experiments=sources)
            self.ctx.summary |= {"warm_start/trials": float(self.seeded), "warm_start/experiments": float(len(sources))}
            log.info("warm start of %s: %d past trials of %d earlier experiments", agent, self.seeded, len(sources))
        return self.controller.propose(obs)

    def tell(self, config: dict[str, Any], reward: float | list[float], obs: np.ndarray) -> None:
        self.controller.tell(config, reward, obs)


def search_controller(ctx: ArmContext) -> OptunaSearch | WarmStarted:
    """Optuna over the arm's decision space, warm-started from the store when the options say so."""
    controller = OptunaSearch(ctx.params, seed=ctx.agent_seed)
    options = ctx.options
    return WarmStarted(controller, ctx, options) if isinstance(options, SearchOptions) and options.warm_start else controller


@dataclass
class PhaseOptions(SearchOptions):
    """The search restarts every ``phase_windows`` windows (a known schedule of regimes, e.g. the recurring
    world's 2-day regimes at 2 windows a day). Each phase's first window is a probe: the hand-tuned config, whose
    clicks per request fingerprint the regime (the same config in every phase, so what differs is the users); then a
    fresh Optuna study, cold, or with ``warm_start`` seeded with the ``warm_k`` trials of the earlier phases whose
    probe was nearest (``warm_from``: ``own`` phases of this run, ``earlier`` experiments' phases from the knowledge
    store, ``both``), the best proposed first. Every phase's probe and trials are written to the store as a design of
    agent ``knowledge/phases/<agent>`` for later experiments."""

    phase_windows: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("controller.options.phase_windows", self.phase_windows, 2)


def _phase_knowledge(ctx: ArmContext, agent: str) -> list[dict[str, Any]]:
    """Earlier experiments' phases (probe and trials) of ``agent`` from the store (same reward, system and agent)."""
    sources = set(warm_sources(ctx))
    return [d.document for d in ctx.store.designs(agent=f"knowledge/phases/{agent}", valid=True)
            if d.experiment_id in sources and isinstance(d.document, dict) and "probe" in d.document]


class Shipper:
    """Continuous deployment (``evolution.select=ship``): each window explored on a share of the users is an A/B test
    of the candidate served there against production (the concurrent control, the rest of the users, split by a
    fresh salt). When the user-clustered two-sided ``1 - ship_alpha`` interval of candidate - production on the
    per-request ``ship_metric`` (:func:`~rewards.stats.clustered_difference_interval`) has its lower end above
    ``ship_min_effect``, the candidate's config (on a composition env: its wiring) ships: production serves it from
    the next window (the env's ``candidate_config`` and ``deploy_control``:
    :meth:`~agents.evolution.env.EvolutionEnv.deploy_control`,
    :meth:`~agents.evolution.composition.CompositionEnv.deploy_control`), and the searcher is then told its
    candidates' reward minus the new production's. An equal candidate ships with probability ``ship_alpha / 2`` per
    window at most (the clustered interval's false accepts: ``bench/ab_gate.py``).

    Called after each window (as the recorder's ``extra``), it adds ``ship/effect``, ``ship/low`` (the interval's
    lower end), ``ship/shipped`` (1 in the window whose test shipped) and ``ship/ships`` (so far) to the row."""

    def __init__(self, ctx: ArmContext) -> None:
        self.env, self.settings = ctx.env, ctx.cfg.evolution
        self.production = initial_config(ctx)
        self.ships = 0

    def __call__(self) -> dict[str, float]:
        inner, e = self.env.unwrapped, self.settings
        window = inner.service.last_log
        candidate, control = inner.test_arms(window)
        req = window.requests
        values = req[e.ship_metric].astype(np.float64)
        effect, low, *_ = clustered_difference_interval(values[candidate], req["user"][candidate], values[control],
                                                        req["user"][control], 1.0 - e.ship_alpha)
        shipped = bool(low > e.ship_min_effect)
        if shipped:
            self.production = inner.candidate_config()
            inner.deploy_control(self.production)
            self.ships += 1
            log.info("ship %d: %s (%s %+.4f, interval low %+.4f)", self.ships, self.production, e.ship_metric, effect,
                     low)
        return {"ship/effect": float(effect), "ship/low": float(low), "ship/shipped": float(shipped),
                "ship/ships": float(self.ships)}


@contextmanager
def exploring(ctx: ArmContext) -> Iterator[Shipper | None]:
    """The windows served inside explore on ``evolution.explore_share`` of the users: the rest are served by the
    incumbent as a concurrent control (a fresh split per window) and the searcher is told the candidate's reward
    minus the control's (:meth:`~agents.evolution.env.WindowEnv.set_control_share`; on the composition env the
    control is the incumbent wiring). A share of 1: all traffic.
    With ``evolution.select=ship`` each of those windows is also a ship test (:class:`Shipper`, yielded; else None)."""
    share = ctx.cfg.evolution.explore_share
    if share >= 1.0:
        yield None
        return
    set_share = ctx.env.get_wrapper_attr("set_control_share")
    set_share(round(1.0 - share, 6))
    shipper = Shipper(ctx) if ctx.cfg.evolution.select == "ship" else None
    if shipper is not None:
        ctx.env.extra = shipper
    try:
        yield shipper
    finally:
        set_share(0.0)
        if shipper is not None:
            ctx.env.extra = None
            ctx.summary["ship/ships"] = float(shipper.ships)


def _search(ctx: ArmContext, controller: Any) -> EvolutionHistory:
    """``evolve`` with ``controller`` (on ``evolution.explore_share`` of the users), then exploit what
    :func:`select` picks."""
    with exploring(ctx) as shipper:
        evolve(ctx.env, controller, search_windows(ctx), seed=ctx.seed)
    best = shipper.production if shipper is not None else select(ctx)
    exploit(ctx, lambda obs: best)
    return ctx.env.history


@register_arm("optuna_phases", options=PhaseOptions, explores="all")
def optuna_phases(ctx: ArmContext) -> EvolutionHistory:
    """Optuna restarted at every regime phase after a probe window of the hand-tuned config, cold or warm-started
    from the phases with the nearest probe (:class:`PhaseOptions`); exploits its last phase's best config."""
    o, agent, incumbent = ctx.options, stored_agent(ctx), initial_config(ctx)
    known = _phase_knowledge(ctx, agent) if o.warm_start and o.warm_from != "own" else []
    own: list[dict[str, Any]] = []
    history, served, phase = None, 0, 0
    windows, seeded = search_windows(ctx), 0.0
    while served < windows:
        n = min(o.phase_windows, windows - served)
        history = evolve(ctx.env, StaticController(incumbent), 1, seed=ctx.seed, reset=served == 0, history=history)
        probe = history.rewards[-1]
        study = OptunaSearch(ctx.params, seed=replicate_seed(ctx.agent_seed, phase + 1))
        if o.warm_start:
            phases = ([*own] if o.warm_from != "earlier" else []) + known
            pool = [t for ph in sorted(phases, key=lambda ph: abs(ph["probe"] - probe)) for t in ph["trials"]][:o.warm_k]
            study.warm_start([t["config"] for t in pool], [t["reward"] for t in pool], replay=o.warm_replay)
            seeded += len(pool)
        if n > 1:
            history = evolve(ctx.env, study, n - 1, reset=False, history=history)
        trials = [{"config": {k: v for k, v in c.items() if k in ctx.params.by_name}, "reward": r}  # the probe too
                  for c, r in zip(history.configs[-n:], history.rewards[-n:])]
        own.append({"probe": probe, "trials": trials})
        ctx.store.add_design(ctx.exp_id, f"knowledge/phases/{agent}", own[-1], f"phase {phase}: probe {probe:.4f}",
                             "phase", True, None, max((t["reward"] for t in trials), default=None))
        served, phase = served + n, phase + 1
    ctx.summary |= {"warm_start/trials": seeded, "warm_start/phases": float(phase)}
    best = max(own[-1]["trials"], key=lambda t: t["reward"])["config"]
    exploit(ctx, lambda obs: best)
    return ctx.env.history


@register_arm("static")
def static(ctx: ArmContext) -> EvolutionHistory:
    """The hand-tuned config of the system, never changed."""
    config = initial_config(ctx)
    evolve(ctx.env, StaticController(config), ctx.windows, seed=ctx.seed)
    exploit(ctx, lambda obs: config)
    return ctx.env.history


@register_arm("random", selects=True, explores="share")
def random_search(ctx: ArmContext) -> EvolutionHistory:
    """A uniformly random config every window (the floor); exploits what :func:`select` picks (its best window's
    config, or the winner of a re-test of its leaders)."""
    return _search(ctx, RandomSearch(ctx.params, seed=ctx.agent_seed))


@register_arm("optuna", options=SearchOptions, selects=True, explores="share")
def optuna_search(ctx: ArmContext) -> EvolutionHistory:
    """Optuna's TPE proposes a config every window and learns from its reward; exploits what :func:`select` picks.
    With ``warm_start`` it starts from the best trials of earlier experiments in similar regimes."""
    return _search(ctx, search_controller(ctx))


@dataclass
class OracleOptions:
    """The oracle's grid: the incumbent (the hand-tuned config, or the system's own wiring on the composition env) plus
    ``grid - 1`` points sampled uniformly from the arm's decision space (the same sample in every run: ``grid_seed``);
    and what it maximises per window: the run's reward (``metric: ""``) or one inner or outer metric of the window
    (e.g. ``inner/rerank/intra_list_diversity``; ``minimize: true`` for a cost such as violations): the headroom of a
    claim on that metric. ``local`` > 0 puts that many one-parameter neighbours of the incumbent in the grid before
    the uniform samples: a uniform grid of 12 almost never holds a small change of one knob (on C2's platform with
    variety-seeking regimes, ``slate_satiation``, an MMR weight of 0.02 paid about +0.02 clicks per request where
    the uniform grid's best matched the hand-tuned config in most windows: experiments/ABLATIONS.md, C2)."""

    grid: int = 12
    grid_seed: int = 0
    metric: str = ""
    minimize: bool = False
    local: int = 0  # of the grid, this many one-parameter neighbours of the incumbent (ParamSpace.neighbours)

    def __post_init__(self) -> None:
        check_int("controller.options.grid", self.grid, 2, 256)
        check_int("controller.options.grid_seed", self.grid_seed, 0)
        check_int("controller.options.local", self.local, 0, self.grid - 1)
        if self.metric and not self.metric.startswith(("inner/", "outer/")):
            raise ConfigError(f"`controller.options.metric` must be '' (the run's reward) or an inner or outer metric "
                              f"('inner/...' or 'outer/...', e.g. 'outer/engagement/clicks_per_request'; "
                              f"got {self.metric!r})")
        if self.minimize and not self.metric:
            raise ConfigError("`controller.options.minimize` needs `controller.options.metric` (a cost such as "
                              "'outer/risk/violations_per_request'; got metric '')")

    def pick(self, reward: float, terms: dict[str, Any]) -> float:
        """The value the oracle maximises, from a twin window's reward and terms."""
        if not self.metric:
            return float(reward)
        if self.metric not in terms:
            known = sorted(k for k in terms if k.startswith(("inner/", "outer/")))
            raise ConfigError(f"`controller.options.metric` {self.metric!r} is not a metric of this run's windows "
                              f"(known: {known})")
        value = float(terms[self.metric])
        return -value if self.minimize else value


class OracleController:
    """Clairvoyant per window: every config of ``grid`` is served on a twin of the running deployment for the
    coming window (the same state and traffic, learning off: agents learn after a window, so one window's value does
    not depend on it) and the one with the best value is proposed; the real window served with it is then the best
    twin's window exactly. ``values(grid)`` gives the grid's values on the coming window's twins (the run's reward by
    default, :meth:`OracleOptions.pick`). ``last`` keeps the window's twin values: ``oracle/best_value``,
    ``oracle/static_value`` (the incumbent, ``grid[0]``) and ``oracle/gap`` (best - static: the headroom of this
    window, on identical traffic)."""

    name = "oracle"

    def __init__(self, values: Callable[[list[dict[str, Any]]], list[float]], grid: list[dict[str, Any]]) -> None:
        self.values, self.grid = values, grid
        self.last: dict[str, float] = {}

    def propose(self, obs: np.ndarray | None) -> dict[str, Any]:
        scores = [v if math.isfinite(v) else -math.inf for v in self.values(self.grid)]
        best = int(np.argmax(scores))
        self.last = {"oracle/best_value": scores[best], "oracle/static_value": scores[0],
                     "oracle/gap": scores[best] - scores[0], "oracle/best_index": float(best)}
        return dict(self.grid[best])

    def tell(self, config: dict[str, Any], reward: float | list[float], obs: np.ndarray) -> None:
        pass


def oracle_grid(ctx: ArmContext, size: int, seed: int, incumbent: dict[str, Any] | None = None, local: int = 0
                ) -> list[dict[str, Any]]:
    """The incumbent (default the hand-tuned config), ``local`` of its one-parameter neighbours
    (:meth:`~agents.decision.params.ParamSpace.neighbours`: the small changes a uniform sample almost never makes,
    e.g. a little MMR diversity), then uniform samples of the arm's space up to ``size`` (with ``local=0`` the same
    grid as before the option existed)."""
    base = initial_config(ctx) if incumbent is None else incumbent
    sampler = RandomSearch(ctx.params, seed=seed)
    near = ctx.params.neighbours(base, local, np.random.default_rng([seed, 1])) if local else []
    return [base, *near, *(sampler.propose(None) for _ in range(size - 1 - local))]


def _oracle(ctx: ArmContext, controller: OracleController) -> EvolutionHistory:
    ctx.env.extra = lambda: controller.last
    evolve(ctx.env, controller, ctx.windows, seed=ctx.seed)
    exploit(ctx, controller.propose)
    return ctx.env.history


@register_arm("oracle", options=OracleOptions)
def oracle(ctx: ArmContext) -> EvolutionHistory:
    """A reference, not a policy a platform could run: before each window (exploit windows too) it serves every
    config of a fixed grid on a twin of the system for that window and deploys the best by the run's reward, or by
    ``metric`` (:class:`OracleController`). Its rows carry ``oracle/gap``, the best twin minus the hand-tuned
    config's twin on the same traffic: the per-window headroom an adaptive arm could gain over ``static`` within the
    grid."""
    opts: OracleOptions = ctx.options
    agent = ctx.env.get_wrapper_attr("agent_name")

    def values(grid: list[dict[str, Any]]) -> list[float]:
        return [v.value for v in twin_values(ctx.deployment, grid, agent=agent,
                                             score=lambda twin, log: opts.pick(*twin.score(log, agent)))]

    return _oracle(ctx, OracleController(values, oracle_grid(ctx, opts.grid, opts.grid_seed, local=opts.local)))


HINDSIGHT_JUDGE = ("exploit", "all")


@dataclass
class HindsightOptions:
    """The hindsight arm's grid (the incumbent plus ``grid - 1`` uniform samples of the arm's space, the same sample in
    every run: ``grid_seed``) and the windows each fixed point is judged on (``exploit``: the exploit windows, where
    the claims on what an arm found compare; ``all``: the whole run)."""

    grid: int = 8
    grid_seed: int = 0
    judge: str = "exploit"

    def __post_init__(self) -> None:
        check_int("controller.options.grid", self.grid, 2, 64)
        check_int("controller.options.grid_seed", self.grid_seed, 0)
        check_choice("controller.options.judge", self.judge, HINDSIGHT_JUDGE)


def _hindsight(ctx: ArmContext, incumbent: dict[str, Any]) -> EvolutionHistory:
    """Every point of the grid held fixed for the whole run on its own copy of the env just after reset (the same
    world, traffic and system: the run a static arm with that point would have), judged by its mean reward over the
    ``judge`` windows; then the run itself serves the best, which repeats that copy's windows exactly. Rows carry
    ``hindsight/value`` (the best's judged mean), ``hindsight/static_value`` (the incumbent's), ``hindsight/gap``
    (their difference, >= 0: the incumbent is in the grid) and ``hindsight/best_index``."""
    opts: HindsightOptions = ctx.options
    windows, exploits = ctx.windows, ctx.cfg.evolution.exploit
    ctx.env.reset(seed=ctx.seed)
    start = ctx.env.unwrapped
    grid = oracle_grid(ctx, opts.grid, opts.grid_seed, incumbent)
    values = []
    for point in grid:
        twin, action = copy.deepcopy(start), ctx.codec.encode(point)
        rewards = [float(twin.step(action)[1]) for _ in range(windows + exploits)]
        judged = rewards[windows:] if opts.judge == "exploit" and exploits else rewards
        values.append(float(np.mean(judged)))
        del twin
    best = int(np.argmax(values))
    log.info("hindsight: fixed point %d of %d is best (%.4f vs the incumbent's %.4f)", best, len(grid), values[best],
             values[0])
    found = {"hindsight/value": values[best], "hindsight/static_value": values[0],
             "hindsight/gap": values[best] - values[0], "hindsight/best_index": float(best)}
    ctx.summary.update(found)
    ctx.env.extra = lambda: dict(found)
    evolve(ctx.env, StaticController(grid[best]), windows, seed=ctx.seed)
    exploit(ctx, lambda obs: grid[best])
    return ctx.env.history


@register_arm("hindsight", options=HindsightOptions)
def hindsight(ctx: ArmContext) -> EvolutionHistory:
    """A reference, not a policy a platform could run: "static with the best config in hindsight". Each config of a
    fixed grid (the hand-tuned one first) is run held fixed for the whole run on a copy of the env (the same world and
    traffic), and the run serves the one with the best mean reward over the exploit windows (``judge``): the most a
    fixed config found by search could gain over the hand-tuned one in this run, within the grid."""
    return _hindsight(ctx, initial_config(ctx))


@dataclass
class ControlOptions(SearchOptions):
    """The share of users served by the hand-tuned config each window, as a concurrent control (the candidate is
    explored on the rest: ``control_share=0.8`` explores on a declared 20% of the users); warm starts as
    :class:`SearchOptions`."""

    control_share: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("controller.options.control_share", self.control_share, 0.05, MAX_CONTROL_SHARE)


@register_arm("optuna_ab", options=ControlOptions, live=True, selects=True, explores="all")
def optuna_ab(ctx: ArmContext) -> EvolutionHistory:
    """Optuna told each window's reward relative to a concurrent control (the hand-tuned config on
    ``control_share`` of the users), free of the trend a learning system's reward has; exploits what
    :func:`select` picks (the config with the best relative reward, or a re-test's winner), on all traffic."""
    set_control_share = ctx.env.get_wrapper_attr("set_control_share")
    set_control_share(ctx.options.control_share)
    evolve(ctx.env, search_controller(ctx), search_windows(ctx), seed=ctx.seed)
    set_control_share(0.0)
    best = select(ctx)
    exploit(ctx, lambda obs: best)
    return ctx.env.history


@dataclass
class PPOOptions:
    """SB3 PPO: one env step is one window, so keep the rollouts short. With ``pretrain`` > 0 it first trains on that
    many simulated runs (fresh worlds of the run's own config, never the run's sample path, each frozen at a
    checkpoint every ``pretrain_gap`` windows for ``pretrain_hold`` training windows: :class:`Checkpoints`), then goes
    on learning online in the run."""

    n_steps: int = 4  # windows per rollout (one PPO update each)
    batch_size: int = 4
    n_epochs: int = 4
    learning_rate: float = 3e-4
    gamma: float = 0.9
    gae_lambda: float = 0.95
    ent_coef: float = 0.0
    hidden: int = 32  # width of the two hidden layers of policy and value nets
    log_std_init: float = 0.0  # the initial log s.d. of a Box action's Gaussian (no effect on a discrete action)
    pretrain: int = 0  # simulated runs to train on before the run (0: it learns online only)
    pretrain_hold: int = 4  # training windows replayed from each checkpoint of a simulated run
    pretrain_gap: int = 2  # windows a simulated run moves on (under the incumbent) between checkpoints
    # requests per window of the simulated platforms (0: the run's `evolution.window`), at concurrent sessions scaled
    # alike (the same simulated time per window, so the same regime schedule): at most the run's; fewer make cheaper
    # training windows with noisier rewards
    pretrain_window: int = 0
    residual: bool = False  # a Box action is a step from the incumbent's action: the policy starts at the incumbent

    def __post_init__(self) -> None:
        check_int("controller.options.n_steps", self.n_steps, 2)
        check_int("controller.options.batch_size", self.batch_size, 2, self.n_steps)
        check_int("controller.options.n_epochs", self.n_epochs, 1)
        check_range("controller.options.learning_rate", self.learning_rate, 0.0, low_inclusive=False)
        check_range("controller.options.gamma", self.gamma, 0.0, 1.0)
        check_range("controller.options.gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_range("controller.options.ent_coef", self.ent_coef, 0.0)
        check_int("controller.options.hidden", self.hidden, 1)
        check_range("controller.options.log_std_init", self.log_std_init, -5.0, 2.0)
        check_int("controller.options.pretrain", self.pretrain, 0)
        check_int("controller.options.pretrain_hold", self.pretrain_hold, 1)
        check_int("controller.options.pretrain_gap", self.pretrain_gap, 1)
        check_int("controller.options.pretrain_window", self.pretrain_window, 0)


class Residual(gym.ActionWrapper):
    """A Box action is a step from the incumbent's action (the env's config at reset), clipped to the box: a policy
    whose mean is 0 serves the incumbent and learns where to deviate from it."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._incumbent: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        out = self.env.reset(seed=seed, options=options)
        self._incumbent = self.env.unwrapped.current_action().astype(np.float32)
        return out

    def action(self, action: np.ndarray) -> np.ndarray:
        if self._incumbent is None:
            raise gym.error.ResetNeeded("call reset() before step(): the incumbent is read at reset")
        box = self.action_space
        return np.clip(self._incumbent + np.asarray(action, np.float32), box.low, box.high).astype(np.float32)


PRETRAIN_SEED = 0x7E57  # mixed with the agent seed: the simulated platforms' worlds are never the run's


class Checkpoints(gym.Wrapper):
    """Training on a simulated platform with common random numbers: a *stationary* env (every step replays the same
    state) of a fresh world, run like the live one under the incumbent (the config at reset), frozen at a
    checkpoint every ``gap`` windows; at each checkpoint the incumbent is served once, then ``hold`` training
    steps are replays of that state, so two configs differ only by what they serve. An episode is one simulated run
    of ``horizon`` windows (then truncated: the next reset draws a fresh world).

    ``rows``: per training step ``episode``, ``checkpoint``, ``day``, ``reward``, ``incumbent`` (the incumbent's
    reward at the same checkpoint, on the same traffic) and ``gain`` (their difference): the training curve.
    """

    def __init__(self, env: gym.Env, hold: int, gap: int, horizon: int) -> None:
        super().__init__(env)
        self.hold, self.gap, self.horizon = hold, gap, horizon
        self.steps_per_run = hold * -(-horizon // gap)  # training windows of one simulated run
        self.rows: list[dict[str, float]] = []
        self.episode = -1
        self._incumbent: np.ndarray | None = None
        self._reference = math.nan
        self._steps = self._moved = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        inner = self.env.unwrapped
        self.episode += 1
        self._steps = self._moved = 0
        self._incumbent = inner.current_action()
        self._reference = float(self.env.step(self._incumbent)[1])
        return inner.regime(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, _, info = self.env.step(action)
        inner = self.env.unwrapped
        self.rows.append({"episode": self.episode, "checkpoint": self._moved // self.gap, "day": float(info["day"]),
                          "reward": float(reward), "incumbent": self._reference, "gain": float(reward) - self._reference})
        self._steps += 1
        if self._steps % self.hold == 0:  # the simulated run moves on under the incumbent to its next checkpoint
            self._moved += self.gap
            if self._moved < self.horizon:
                inner.advance(self.gap, self._incumbent)
                self._reference = float(self.env.step(self._incumbent)[1])
                obs = inner.regime()
        return obs, reward, terminated, self._moved >= self.horizon, info


def curve_summary(rows: list[dict[str, float]], prefix: str) -> dict[str, float]:
    """A training curve's numbers: windows, episodes, and the first and last episodes' mean gain over the incumbent
    (the same checkpoints' traffic)."""
    by_episode: dict[int, list[float]] = {}
    for r in rows:
        by_episode.setdefault(int(r["episode"]), []).append(r["gain"])
    gains = [float(np.mean(v)) for _, v in sorted(by_episode.items())]
    out = {f"{prefix}/windows": float(len(rows)), f"{prefix}/episodes": float(len(gains))}
    if gains:
        out |= {f"{prefix}/first_episode_gain": gains[0], f"{prefix}/last_episode_gain": gains[-1]}
    return out


def _ppo(ctx: ArmContext) -> EvolutionHistory:
    """PPO on the arm's env (evolution or composition), optionally pre-trained on simulated platforms."""
    from stable_baselines3 import PPO
    from stable_baselines3.common import logger as sb3_logger
    from stable_baselines3.common.callbacks import BaseCallback

    opts: PPOOptions = ctx.options
    windows = ctx.windows

    class StopAfter(BaseCallback):  # PPO collects whole rollouts: stop exactly after the run's windows
        def _on_step(self) -> bool:
            return self.num_timesteps < windows

    box = isinstance(ctx.env.action_space, gym.spaces.Box)
    kwargs = {"net_arch": [opts.hidden, opts.hidden], **({"log_std_init": opts.log_std_init} if box else {})}
    training = None
    if opts.pretrain:
        if ctx.make_env is None:
            raise ConfigError("`controller.options.pretrain` needs a simulated platform to train on (the run's "
                              "make_env): run the arm through experiments.run")
        # a simulated platform: stationary replays of checkpoints, every window on all its (simulated) users
        e = ctx.cfg.evolution
        window = min(opts.pretrain_window or e.window, e.window)
        platform = ctx.make_env(stationary=True, explore_share=1.0, select="best_window", window=window,
                                concurrency=max(1, round(e.concurrency * window / e.window)))
        training = Checkpoints(platform, opts.pretrain_hold, opts.pretrain_gap, windows)
        budget = opts.pretrain * training.steps_per_run
    residual = opts.residual and box
    live = Residual(ctx.env) if residual else ctx.env
    if residual and training is not None:
        training = Residual(training)
    model = PPO("MlpPolicy", training if training is not None else live, n_steps=opts.n_steps,
                batch_size=opts.batch_size, n_epochs=opts.n_epochs, learning_rate=opts.learning_rate, gamma=opts.gamma,
                gae_lambda=opts.gae_lambda, ent_coef=opts.ent_coef, policy_kwargs=kwargs, seed=ctx.agent_seed,
                device="cpu", verbose=0)
    # SB3's own log (losses, entropy, KL per update): <run>/sb3/progress.csv; without a run folder, none (SB3's
    # default would leave an empty SB3-<time> folder in the system's temp dir)
    model.set_logger(sb3_logger.configure(str(ctx.out_dir / "sb3"), ["csv"]) if ctx.out_dir is not None
                     else sb3_logger.Logger(None, []))
    if training is not None:
        model.get_env().seed(int(np.random.SeedSequence([ctx.agent_seed, PRETRAIN_SEED]).generate_state(1)[0] >> 1))
        model.learn(total_timesteps=budget)
        rows = training.get_wrapper_attr("rows")
        ctx.curves["pretrain"] = rows
        ctx.summary |= curve_summary(rows, "pretrain")
        training.close()
        model.set_env(live)
    model.get_env().seed(ctx.seed)  # the policy's randomness is the controller's; the env resets with the run's seed
    with exploring(ctx):  # online, on `evolution.explore_share` of the users (its pre-training is on twins)
        model.learn(total_timesteps=windows, callback=StopAfter())  # the first reset uses `seed`, like the other arms
    if ctx.out_dir is not None:  # the trained policy, for a reader: PPO.load(<run>/policy.zip)
        write_atomic(ctx.out_dir / "policy.zip", model.save)
    act = live.action if residual else (lambda a: a)
    exploit(ctx, lambda obs: ctx.codec.decode(act(model.predict(obs, deterministic=True)[0])))
    return ctx.env.history


@register_arm("ppo", options=PPOOptions, explores="share")
def ppo(ctx: ArmContext) -> EvolutionHistory:
    """SB3 PPO learns online over the run's windows (after training on ``pretrain`` simulated runs, if set); its
    (stochastic) policy picks every window's config; exploits its policy's deterministic choice for the regime it
    observes."""
    return _ppo(ctx)


# --------------------------------------------------------------------------- arms on the composition env (C4)


@register_arm("static_composition", env="composition")
def static_composition(ctx: ArmContext) -> EvolutionHistory:
    """The system config's own wiring and agent configs, never changed (the baseline of the composition arms)."""
    env = ctx.env.unwrapped
    config = env.to_config(env.initial)
    evolve(ctx.env, StaticController(config), ctx.windows, seed=ctx.seed)
    exploit(ctx, lambda obs: config)
    return ctx.env.history


@register_arm("oracle_composition", env="composition", options=OracleOptions)
def oracle_composition(ctx: ArmContext) -> EvolutionHistory:
    """The clairvoyant reference of the composition arms: before each window it serves every wiring of a fixed grid
    (the system config's own, then ``grid - 1`` uniform samples of the composition space) on a twin of the system
    (:meth:`~agents.evolution.env.WindowEnv.twin_window`: the same state and traffic, learning off) and deploys the
    best by the run's reward or ``metric``; ``oracle/gap`` is the best twin minus the own wiring's twin."""
    opts: OracleOptions = ctx.options
    env = ctx.env.unwrapped

    def values(grid: list[dict[str, Any]]) -> list[float]:
        return [opts.pick(*env.twin_window(ctx.codec.encode(c))) for c in grid]

    return _oracle(ctx, OracleController(values, oracle_grid(ctx, opts.grid, opts.grid_seed, env.to_config(env.initial),
                                                             local=opts.local)))


@register_arm("hindsight_composition", env="composition", options=HindsightOptions)
def hindsight_composition(ctx: ArmContext) -> EvolutionHistory:
    """"Static with the best wiring in hindsight" (C4's headroom reference): each wiring of a fixed grid (the system
    config's own first) run held fixed on a copy of the env, then the run serves the best by mean reward over the
    exploit windows (:func:`_hindsight`). A per-window oracle (``oracle_composition``) is no bound here: a wiring's
    value depends on what its components learned while it served."""
    env = ctx.env.unwrapped
    return _hindsight(ctx, env.to_config(env.initial))


@register_arm("compositional", env="composition", options=SearchOptions, explores="share")
def compositional(ctx: ArmContext) -> EvolutionHistory:
    """Optuna's TPE rewires the system every window (routes and quotas, rankers, segment routing); told the
    system's (outer) reward (on ``evolution.explore_share`` of the users: minus production's wiring's on the rest);
    exploits the best wiring it tried (``warm_start``: from earlier experiments' best; ``select=ship``: production)."""
    return _search(ctx, search_controller(ctx))


@register_arm("ppo_composition", env="composition", options=PPOOptions, explores="share")
def ppo_composition(ctx: ArmContext) -> EvolutionHistory:
    """SB3 PPO picks the wiring every window (routes and quotas, rankers, segment routing: a MultiDiscrete action)
    from the regime it observes, after training on ``pretrain`` simulated runs if set; told the system's
    (outer) reward (on ``evolution.explore_share`` of the users: minus production's wiring's on the rest); exploits
    its policy's deterministic wiring for the regime it observes."""
    return _ppo(ctx)


@dataclass
class LLMOptions:
    """The LLM controller's backend (:mod:`agents.evolution.llm`): the offline bundled model by default, or any
    OpenAI-compatible endpoint (``llm_backend=openai`` with ``llm_base_url`` and ``llm_model``)."""

    llm_backend: str = "smollm2"
    llm_base_url: str = ""  # openai: e.g. http://127.0.0.1:8765/v1
    llm_model: str = ""  # openai: the served model's name
    llm_api_key_env: str = "OPENAI_API_KEY"  # openai: the environment variable holding the key (may be unset)
    llm_max_retries: int = 2  # retries after a rejected reply; then the window serves the best config again
    llm_temperature: float = 0.7

    def __post_init__(self) -> None:
        check_choice("controller.options.llm_backend", self.llm_backend, list(BACKENDS))
        if self.llm_backend == "openai":
            for key in ("llm_base_url", "llm_model"):
                if not getattr(self, key):
                    raise ConfigError(f"`controller.options.{key}` must be set when llm_backend is 'openai' (got '')")
        check_int("controller.options.llm_max_retries", self.llm_max_retries, 0, 20)
        check_range("controller.options.llm_temperature", self.llm_temperature, 0.0, 2.0)

    def backend(self) -> Any:
        return _backend(self.llm_backend, self.llm_base_url, self.llm_model, self.llm_api_key_env)

    def controller(self, params: Any, description: str, start: dict[str, Any], seed: int, ctx: ArmContext,
                   agent: str) -> Any:
        """An :class:`~agents.evolution.llm_search.LLMSearch` over ``params`` that stores its proposals in the run's
        store."""
        return LLMSearch(params, self.backend(), description, start=start, seed=seed, max_retries=self.llm_max_retries,
                         temperature=self.llm_temperature, store=ctx.store, exp_id=ctx.exp_id, agent=agent)


@functools.lru_cache(maxsize=2)
def _backend(name: str, base_url: str, model: str, api_key_env: str) -> Any:
    """One backend per process and settings (the bundled model loads once)."""
    if name == "openai":
        return make_backend(name, base_url=base_url, model=model, api_key_env=api_key_env)
    return make_backend(name)


@register_arm("llm", options=LLMOptions, selects=True, explores="share")
def llm_search(ctx: ArmContext) -> EvolutionHistory:
    """An LLM picks one edit of the best config so far every window (the agent's own decision space, like
    Optuna's); exploits what :func:`select` picks."""
    opts: LLMOptions = ctx.options
    inner: EvolutionEnv = ctx.env.unwrapped
    description = (f"Agent: {inner.agent_name} ({inner.role}) of a recommender system. "
                   + ("rerank: mmr_lambda trades score for diversity, freshness_boost favours new items, "
                      "risk_threshold blocks riskier items, exposure_cap caps an item's shows."
                      if inner.role == "rerank" else ""))
    return _search(ctx, opts.controller(ctx.params, description, initial_config(ctx), ctx.agent_seed, ctx,
                                    f"llm/{inner.agent_name}"))


@register_arm("llm_compositional", env="composition", options=LLMOptions, explores="share")
def llm_compositional(ctx: ArmContext) -> EvolutionHistory:
    """An LLM rewires the system every window, one edit of the best wiring so far (routes and quotas, rankers,
    segment routing); told the system's (outer) reward (on ``evolution.explore_share`` of the users: minus
    production's wiring's on the rest); exploits the best wiring it tried (``select=ship``: production)."""
    env: CompositionEnv = ctx.env.unwrapped
    return _search(ctx, ctx.options.controller(env.target_params(), DESCRIPTION, env.to_config(env.initial), ctx.agent_seed, ctx,
                                           "llm/composition"))


GATE_MIN_REQUESTS = (100, 1000, 5000)
SEARCHES = ("optuna", "llm")  # the alternation's compositional controller


def _ab_window_recorder(ctx: ArmContext, agent: str, production: Callable[[], dict[str, Any]], phase: str,
                        extra: Callable[[InteractionLog], dict[str, float]] | None = None
                        ) -> Callable[[InteractionLog], None]:
    """``on_log`` for A/B windows an arm serves outside ``ctx.env.step`` (both sides' traffic): each is scored on the
    evolved ``agent``'s reward and recorded like an env window, with ``production()``'s config and ``phase`` (and
    ``extra(log)``'s figures)."""
    env, service = ctx.env, ctx.deployment

    def on_log(window_log: InteractionLog) -> None:
        reward, terms = service.score(window_log, agent)
        info = {**terms, "day": service.now, "config": production(), "phase": phase, "regime": None,
                **segment_metrics(window_log), **(extra(window_log) if extra is not None else {})}
        env.history.configs.append(info["config"])
        env.history.rewards.append(float(reward))
        env.history.infos.append(info)
        ctx.on_window(env.steps, info["config"], float(reward), info)
        env.steps += 1

    return on_log


@dataclass
class DesignerOptions(LLMOptions):
    """The LLM designer arm (:mod:`agents.evolution.designer`): one proposal per A/B test of ``ab_windows`` windows."""

    mode: str = "edit"  # edit: the model picks one edit of the running design; design: it writes a whole design
    ab_windows: int = 2  # windows of live traffic per A/B test
    share: float = 0.2  # of the users (a salted hash, a fresh salt per test) the candidate serves in its A/B test
    gate_min_requests: int = 100  # requests per arm the test needs to decide (100, 1000 or 5000)
    warm: bool = True  # candidates start from the running pipeline's learned state where the structure allows
    # tested designs of earlier experiments in the store shown in the prompt (knowledge reuse, C7's subject); 0: each
    # run on its own, so that the seeds of an ablation stay independent replicates, whatever ran before in the store
    earlier: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("controller.options.mode", self.mode, list(MODES))
        check_int("controller.options.earlier", self.earlier, 0, 20)
        check_int("controller.options.ab_windows", self.ab_windows, 1)
        check_range("controller.options.share", self.share, 0.05, 0.5)
        if self.gate_min_requests not in GATE_MIN_REQUESTS:
            raise ConfigError(f"`controller.options.gate_min_requests` must be one of {list(GATE_MIN_REQUESTS)} "
                              f"(got {self.gate_min_requests!r})")


@register_arm("llm_designer", options=DesignerOptions, live=True, twins=False)
def llm_designer(ctx: ArmContext) -> EvolutionHistory:
    """The LLM designer changes the structure of the evolved agent's pipeline (recall routes, ranker architecture,
    fusion; the design language), each proposal A/B-tested on live traffic and deployed only if it wins; the agent's
    own parameters stay as the system config sets them; exploits the pipeline it ends with."""
    opts: DesignerOptions = ctx.options
    env = ctx.env
    env.reset(seed=ctx.seed)
    service, agent = ctx.deployment, env.get_wrapper_attr("agent_name")
    target = service.pipeline_of(agent)
    designer = LLMDesigner(opts.backend(), ctx.store, ctx.exp_id, agent="llm_designer", max_retries=opts.llm_max_retries,
                           temperature=opts.llm_temperature, seed=ctx.agent_seed, mode=opts.mode, earlier=opts.earlier)
    names = ctx.params.by_name

    def production() -> dict[str, Any]:  # the evolved agent's parameters in the running pipeline
        return {k: v for k, v in service.agent(agent).config.items() if k in names}

    on_log = _ab_window_recorder(ctx, agent, production, "design")
    env.phase = "design"
    step = 0
    while env.steps < ctx.windows:
        result = design_step(service, designer, step=step, target=target, seed=(ctx.agent_seed * 1000 + step) % 2**31,
                             experiment=ExperimentDesigner(config={"min_requests": opts.gate_min_requests,
                                                                   "share": opts.share}),
                             windows=min(opts.ab_windows, ctx.windows - env.steps), warm=opts.warm, on_log=on_log)
        if result.decision is None:  # no valid proposal, or it could not be built: production serves a window
            env.step(ctx.codec.encode(production()))
        step += 1
    log.info("llm designer: %d design steps, %d accepted; proposal routes %s", step,
             sum(r.decision == "accepted" for r in ctx.store.rollouts(ctx.exp_id)),
             dict(Counter(d.route for d in ctx.store.designs(exp_id=ctx.exp_id))))
    exploit(ctx, lambda obs: production())
    return env.history


@dataclass
class AlternatingOptions(LLMOptions):
    """The alternation schedule's tests and A/B gate (:mod:`agents.evolution.schedule`), sized for short runs;
    ``search``: the compositional phases' controller (Optuna, or the LLM with the ``llm_*`` options)."""

    patience: int = 4  # saturation: the last `patience` windows improve the phase's best by < min_gain
    min_gain: float = 0.05
    min_windows: int = 6  # a phase lasts at least this many windows
    check_every: int = 5  # a sentinel window of production every this many windows (shift test)
    tolerance: float = 0.2  # a shift when the sentinel's outer reward moves by more than this (relative)
    settle: int = 8  # windows after production (re)started before its sentinels count (learning settles first)
    gate_windows: int = 2  # windows of the A/B gate at a saturated phase's end
    gate_share: float = 0.2  # of the users the candidate serves in the gate
    gate_min_requests: int = 100  # requests per arm the gate needs to decide (100, 1000 or 5000)
    search: str = "optuna"  # the compositional phases' controller: optuna or llm

    def __post_init__(self) -> None:
        check_int("controller.options.patience", self.patience, 1)
        check_range("controller.options.min_gain", self.min_gain, 0.0)
        check_int("controller.options.min_windows", self.min_windows, self.patience + 1)
        check_int("controller.options.check_every", self.check_every, 1)
        check_range("controller.options.tolerance", self.tolerance, 0.0, low_inclusive=False)
        check_int("controller.options.settle", self.settle, 0)
        check_int("controller.options.gate_windows", self.gate_windows, 1)
        check_range("controller.options.gate_share", self.gate_share, 0.05, 0.5)
        check_choice("controller.options.search", self.search, SEARCHES)
        super().__post_init__()
        if self.gate_min_requests not in GATE_MIN_REQUESTS:  # the experiment designer's choices
            raise ConfigError(f"`controller.options.gate_min_requests` must be one of {list(GATE_MIN_REQUESTS)} "
                              f"(got {self.gate_min_requests!r})")


def _alternate(ctx: ArmContext, saturation: SaturationTest, shift: ShiftTest, gate_windows: int,
               gate_min_requests: int, llm: LLMOptions | None = None, gate_share: float = 0.2) -> EvolutionHistory:
    """Run :func:`~agents.evolution.schedule.alternate` on the composition env, recording its exploration windows.

    Every window it serves is a row of the table, numbered in serving order: exploration windows (phase
    ``individual``/``compositional``), sentinel windows of production (``sentinel``) and A/B gate windows (``gate``),
    so the arm's table holds all the traffic it served: ``evolution.windows`` rows, as every arm's evolution (the
    schedule's sentinels and gates count against it, so its exploit windows start on the same day); ``alternate`` commits
    each window's trial, the gates' decisions and the detected shifts to the store itself. It ends with production (what
    passed the gates) deployed. With
    ``llm`` the compositional phases' controller is the LLM (:class:`~agents.evolution.llm_search.LLMSearch`, starting
    from production's wiring) instead of Optuna. With ``evolution.explore_share`` < 1 every exploration window explores
    on that share of the users, production serving the rest, and the controller is told the difference; with
    ``evolution.select=ship`` each such window is also a ship test (:class:`Shipper`: a won test moves production to
    the candidate, the agent's config or the wiring, and the phase goes on from it).
    """
    env: CompositionEnv = ctx.env.unwrapped
    agent = ctx.cfg.evolution.agent
    seeds = itertools.count((ctx.agent_seed * 1000) % 2**31)  # a fresh study per phase, each with its own seed
    history = EvolutionHistory()

    def on_row(row: dict[str, Any]) -> None:
        config = {"composition": row["composition"],
                  **{k.removeprefix("config/"): v for k, v in row.items() if k.startswith("config/")}}
        info = {k: v for k, v in row.items() if "/" in k and not k.startswith("config/")}
        who = {"individual": agent, "compositional": "composition", "sentinel": "production"}.get(row["phase"], "gate")
        info |= {"day": row["day"], "phase": row["phase"], "config": config, "regime": None, "stored": True,
                 "agent": who, **segment_metrics(env.service.last_log)}
        if row["phase"] in ("individual", "compositional"):  # the history holds what was tried
            history.configs.append(config)
            history.rewards.append(float(row["reward"]))
            history.infos.append(info)
        ctx.on_window(int(row["served"]), config, float(row["reward"]), info)

    def compositional(e: CompositionEnv) -> Any:
        if llm is None:
            return OptunaSearch(e.target_params(), seed=next(seeds))
            return llm.controller(e.target_params(), DESCRIPTION, e.to_config(e.composition), next(seeds), ctx,
                              "llm/composition")

    e = ctx.cfg.evolution
    shipper = Shipper(ctx) if e.select == "ship" and e.explore_share < 1.0 else None
    alt = alternate(env, agent, individual=lambda params: OptunaSearch(params, seed=next(seeds)),
                    compositional=compositional, windows=ctx.windows,
                    seed=ctx.seed, saturation=saturation, shift=shift,
                    designer=lambda: ExperimentDesigner(config={"min_requests": gate_min_requests,
                                                                "share": gate_share}),
                    gate_windows=gate_windows, store=ctx.store, exp_id=ctx.exp_id, on_window=on_row,
                    share=e.explore_share, ship=shipper)
    history.shifts = list(alt.shifts)
    if shipper is not None:
        ctx.summary["ship/ships"] = float(shipper.ships)
    ctx.env.steps = alt.served  # exploit windows are numbered after every window served
    log.info("alternation: switches %s; gates %s", alt.switches,
             [(g["window"], g["phase"], g["accepted"]) for g in alt.gates])
    return history


@register_arm("individual", env="composition", twins=False, explores="share")
def individual(ctx: ArmContext) -> EvolutionHistory:
    """Optuna tunes one pooled agent (``evolution.agent``, e.g. ``main/rerank/mmr``) on its layered reward; the
    wiring stays the system config's (the alternation schedule's individual phase, never ending); exploits the
    best config it tried (``select=ship``: production, what won its window's test)."""
    never = ctx.windows + 1
    history = _alternate(ctx, SaturationTest(patience=1, min_gain=0.0, min_windows=never), ShiftTest(check_every=never),
                         gate_windows=1, gate_min_requests=100)
    if ctx.cfg.evolution.exploit and ctx.cfg.evolution.select == "ship":  # production (what shipped) is deployed
        env = ctx.env.unwrapped
        exploit(ctx, lambda obs: env.to_config(env.composition))
    elif ctx.cfg.evolution.exploit:  # no gate ever ran: exploit the best config it tried, on the unchanged wiring
        env, agent = ctx.env.unwrapped, ctx.cfg.evolution.agent
        env.configure_agent(agent, best_config(history, env.service.agent(agent).params))
        exploit(ctx, lambda obs: env.to_config(env.composition))
    return history


@register_arm("alternating", env="composition", options=AlternatingOptions, twins=False, explores="share")
def alternating(ctx: ArmContext) -> EvolutionHistory:
    """Optuna on one agent until its gains saturate or a sentinel sees a shift, then Optuna on the wiring, and
    back; a saturated phase's best reaches production only through an A/B gate; exploits production."""
    o: AlternatingOptions = ctx.options
    history = _alternate(ctx, SaturationTest(o.patience, o.min_gain, o.min_windows),
                         ShiftTest(o.check_every, o.tolerance, o.settle), o.gate_windows, o.gate_min_requests,
                         llm=o if o.search == "llm" else None, gate_share=o.gate_share)
    env = ctx.env.unwrapped  # production (the agent's config and the wiring that passed the gates) is deployed
    exploit(ctx, lambda obs: env.to_config(env.composition))
    return history


# --------------------------------------------------------------------------- the AutoModel arms (C6)
# ``autofeature``, ``autotrain`` and ``automodel_models`` (both) evolve the ranker of the evolved agent's pipeline in
# rounds, the re-ranker's parameters staying as the system config sets them; every window from the reset on is recorded.
# (1) observe: ``observe_windows`` windows served by production; (2) screen offline on everything recorded (the last
# window held out; ``updates`` steps per model, incumbent and candidate alike): AutoFeature's add/drop edits of the
# running ranker's feature set and/or AutoTrain's designs parsed from the method cards by the LLM (parsed once per
# run), the best candidate whose held-out AUC gain exceeds ``min_gain``; (3) gate online: that candidate, trained on
# everything recorded with the running ranker's own budget (its gradient steps so far, capped at 5,000; a
# FeatureRanker, its statistics replayed), replaces production's ranker in a copy of the pipeline A/B-tested on live
# traffic for ``ab_windows`` windows (a fresh salt per test), deployed only if accepted.
# ``automodel_models`` alternates the two (features first). Every parse, candidate, offline gain and gate decision is
# in the knowledge store; the run's summary counts rounds, gates and acceptances and compares offline with online.


@dataclass
class AutoModelOptions(LLMOptions):
    """The AutoModel arms' rounds: ``observe_windows`` recorded windows (>= 2: the last is held out), offline screening
    with ``updates`` gradient steps per model, an A/B gate of ``ab_windows`` windows for the best candidate whose
    held-out AUC gain exceeds ``min_gain`` (``gate_min_requests`` requests per side to decide). ``recipe_trials`` > 0:
    AutoTrain then searches the winning design's training recipe offline (:meth:`AutoTrain.tune_recipe`, that many
    trials at the same budget) and trains the candidate with the best one."""

    observe_windows: int = 3
    ab_windows: int = 2
    share: float = 0.2  # of the users (a fresh salt per test) the candidate serves in its A/B gate
    gate_min_requests: int = 100
    updates: int = 1000
    min_gain: float = 0.0
    recipe_trials: int = 0
    # results of earlier experiments in the store shown to the LLM (AutoTrain's card parses, the system's designer):
    # knowledge reuse; 0 keeps the seeds of an ablation independent replicates, whatever ran before in the store
    earlier: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("controller.options.observe_windows", self.observe_windows, 2)
        check_int("controller.options.earlier", self.earlier, 0, 10)
        check_int("controller.options.ab_windows", self.ab_windows, 1)
        if type(self) is AutoModelOptions:  # (the system's proposals are tested by its coordinator: its own range)
            check_range("controller.options.share", self.share, 0.05, 0.5)
        if self.gate_min_requests not in GATE_MIN_REQUESTS:
            raise ConfigError(f"`controller.options.gate_min_requests` must be one of {list(GATE_MIN_REQUESTS)} "
                              f"(got {self.gate_min_requests!r})")
        TrainRecipe(updates=self.updates)  # one of the recipe space's budgets
        check_range("controller.options.min_gain", self.min_gain, -1.0, 1.0)
        check_int("controller.options.recipe_trials", self.recipe_trials, 0, 100)


def _design_of(ranker: Any) -> ModelDesign:
    design = getattr(ranker, "design", None)
    return design if design is not None else ModelDesign(arch=ranker.arch, hidden=ranker.hidden
                                                         if ranker.hidden in WIDTHS else 64)


def _features_of(ranker: Any) -> FeatureSet:
    return ranker.features if isinstance(ranker, FeatureRanker) else FeatureSet(BASE_GROUPS)


MAX_CANDIDATE_UPDATES = 5000  # a gated candidate's gradient steps: the running ranker's so far, at most this


@dataclass
class RankerCandidate:
    """The best ranker a screen found: its label, held-out AUC gain, the deployable ranker and its description."""

    label: str
    gain: float
    ranker: Any
    doc: dict[str, Any]


def screen_ranker(ctx: ArmContext, kind: str, autotrain: AutoTrain | None, tried: set[str],
                  recorder: ImpressionRecorder, max_flops: float | None = None) -> RankerCandidate | None:
    """AutoFeature's (``kind`` ``feature``) or AutoTrain's (``model``) best candidate for the running ranker of the
    first pipeline, screened offline on everything ``recorder`` holds (the last window held out) and, when its AUC gain
    exceeds ``min_gain``, trained as a deployable ranker on all of it with the running ranker's own budget (its
    gradient steps so far, capped); ``None`` when nothing beats the incumbent or fewer than 2 windows are recorded.
    With ``max_flops``, candidates whose ranker would cost the running pipeline more ranking FLOPs per request are not
    considered (a budget the agent was told). The winner's label joins ``tried``."""
    opts: AutoModelOptions = ctx.options
    service = ctx.deployment
    logd = recorder.logged()
    if len(np.unique(logd.window)) < 2:
        return None
    running = service.system.pipelines[0].ranker
    features, design = _features_of(running), _design_of(running)
    recipe = TrainRecipe(updates=opts.updates)
    best: tuple[float, str, FeatureSet, ModelDesign, dict[str, float]] | None = None

    def affordable(f: FeatureSet, d: ModelDesign) -> bool:
        return max_flops is None or ranker_flops(service, f, d) <= max_flops

    if kind == "feature":
        af = AutoFeature(features, design, recipe, seed=ctx.agent_seed, min_gain=opts.min_gain)
        report = af.analyse(logd)
        edits = [e for e in af.propose(report) if e.label not in tried and affordable(e.features, design)]
        for r in af.screen(edits, logd, report.incumbent):
            if r.auc_gain > opts.min_gain and (best is None or r.auc_gain > best[0]):
                best = (r.auc_gain, r.edit.label, r.edit.features, design, {})
    else:
        if autotrain is None:
            raise ConfigError("a model round needs AutoTrain (the arm builds it)")
        train, valid = time_split(logged_data(logd, features))
        for parsed in autotrain.parsed:
            label = f"card {parsed.card}"
            if not parsed.valid or label in tried or parsed.design is None or not affordable(features, parsed.design):
                continue
            recipe_c = TrainRecipe(**{**recipe.__dict__, **parsed.weights})
            gain = compare(design, parsed.design, train, valid, recipe, recipe_c, seed=ctx.agent_seed).auc_gain
            if gain > opts.min_gain and (best is None or gain > best[0]):
                best = (gain, label, features, parsed.design, parsed.weights)
    if best is None:
        return None
    gain, label, new_features, new_design, weights = best
    tried.add(label)
    config = dict(running.config)
    if kind == "model" and opts.recipe_trials > 0 and autotrain is not None:  # the winner's recipe, searched offline
        autotrain.recipe = TrainRecipe(**{**recipe.__dict__, **weights})
        search = autotrain.tune_recipe(new_design, train, valid, trials=opts.recipe_trials)
        tuned = search.best[0]
        weights = {"w_like": tuned.w_like, "w_dwell": tuned.w_dwell}
        config.update(lr=tuned.lr, batch_size=tuned.batch_size, weight_decay=tuned.weight_decay)
        log.info("recipe search for %s: held-out AUC %.4f -> %.4f", label, search.start[1], search.best[1])
    # the candidate is trained on everything logged with the running ranker's own budget (its gradient steps so far,
    # capped): a fresh model with one screen's budget would face a ranker trained over the whole run
    budget = max(opts.updates, min(int(running.updates), MAX_CANDIDATE_UPDATES))
    loss = {"like": weights.get("w_like", LOSS_WEIGHTS["like"]), "dwell": weights.get("w_dwell", LOSS_WEIGHTS["dwell"])}
    ranker = deployable_ranker(service, new_features, new_design, logd, config=config,
                               loss_weights=loss, updates=budget, seed=ctx.agent_seed)
    doc = {"candidate": label, "features": list(new_features.names), "design": new_design.as_dict(),
           "weights": weights, "offline_auc_gain": gain}
    return RankerCandidate(label, gain, ranker, doc)


def automodel_round(ctx: ArmContext, kind: str, autotrain: AutoTrain | None, tried: set[str], step: int,
                    on_log: Any, ledger: OfflineOnlineLedger, recorder: ImpressionRecorder) -> dict[str, Any]:
    """One round of ``kind`` (``feature`` or ``model``): observe, screen (:func:`screen_ranker`), gate; returns what
    happened. ``recorder`` has recorded every window since the run's reset: the screen and the candidate's training
    use all of it."""
    opts: AutoModelOptions = ctx.options
    env, service = ctx.env, ctx.deployment
    production = service.agent(env.get_wrapper_attr("agent_name")).config
    names = ctx.params.by_name
    for _ in range(min(opts.observe_windows, ctx.windows - env.steps)):
        env.step(ctx.codec.encode({k: v for k, v in production.items() if k in names}))
    out: dict[str, Any] = {"round": step, "kind": kind, "candidate": None, "offline_gain": None, "decision": None}
    if env.steps >= ctx.windows:
        return out
    found = screen_ranker(ctx, kind, autotrain, tried, recorder)
    if found is None:
        return out
    challenger = copy.deepcopy(service.system.pipelines[0])
    challenger.ranker = found.ranker
    windows = min(opts.ab_windows, ctx.windows - env.steps)
    decision = ab_rollout_pipeline(service, challenger,
                                   ExperimentDesigner(config={"min_requests": opts.gate_min_requests, "share": opts.share}),
                                   windows, "clicks_exp", on_log=on_log)
    ledger.add(found.label, found.gain, decision.effect)
    ctx.store.add_rollout(ctx.exp_id, step, f"{ctx.cfg.controller.name}/{kind}", found.doc,
                          "accepted" if decision.accepted else "rejected", effect=decision.effect,
                          ci_low=decision.ci_low, ci_high=decision.ci_high, p_value=decision.p_value,
                          n_incumbent=decision.n_incumbent, n_candidate=decision.n_candidate,
                          reasons=[f"offline AUC gain {found.gain:+.4f}", *decision.reasons])
    out.update(candidate=found.label, offline_gain=found.gain, decision="accepted" if decision.accepted else "rejected",
               effect=decision.effect)
    log.info("%s round %d (%s): %s offline %+.4f, online %+.4f -> %s", ctx.cfg.controller.name, step, kind,
             found.label, found.gain, decision.effect, out["decision"])
    return out


def _automodel(ctx: ArmContext, kinds: tuple[str, ...]) -> EvolutionHistory:
    opts: AutoModelOptions = ctx.options
    env = ctx.env
    env.reset(seed=ctx.seed)
    service = ctx.deployment
    agent = env.get_wrapper_attr("agent_name")
    names = ctx.params.by_name

    def production() -> dict[str, Any]:
        return {k: v for k, v in service.agent(agent).config.items() if k in names}

    on_log = _ab_window_recorder(ctx, agent, production, "gate")

    autotrain = None
    if "model" in kinds:
        autotrain = AutoTrain(opts.backend(), seed=ctx.agent_seed, store=ctx.store, exp_id=ctx.exp_id,
                              earlier=opts.earlier)
        autotrain.parse_all(method_cards())
    ledger, tried, rounds = OfflineOnlineLedger(), set(), []
    step = 0
    recorder = service.start_recording()
    try:
        while env.steps < ctx.windows:
            rounds.append(automodel_round(ctx, kinds[step % len(kinds)], autotrain, tried, step, on_log, ledger,
                                          recorder))
            step += 1
    finally:
        service.stop_recording()
    gated = [r for r in rounds if r["decision"] is not None]
    ctx.summary.update({"automodel/rounds": float(len(rounds)), "automodel/gated": float(len(gated)),
                        "automodel/accepted": float(sum(r["decision"] == "accepted" for r in gated)),
                        **{f"automodel/ledger/{k}": float(v) for k, v in ledger.summary().items()}})
    final = service.system.pipelines[0].ranker
    log.info("%s: %d rounds, %d gated, %d accepted; ends with %s over %s", ctx.cfg.controller.name, len(rounds),
             len(gated), int(ctx.summary["automodel/accepted"]), _design_of(final).arch, list(_features_of(final).names))
    exploit(ctx, lambda obs: production())
    return env.history


@register_arm("autofeature", options=AutoModelOptions, live=True, twins=False)
def autofeature(ctx: ArmContext) -> EvolutionHistory:
    """AutoFeature evolves the ranker's feature set: analysis of recorded windows, add/drop edits screened offline,
    the best A/B-tested on live traffic and deployed if it wins; exploits the ranker it ends with."""
    return _automodel(ctx, ("feature",))


@register_arm("autotrain", options=AutoModelOptions, live=True, twins=False)
def autotrain(ctx: ArmContext) -> EvolutionHistory:
    """AutoTrain evolves the ranker's model: method cards parsed by the LLM into designs, screened offline on
    recorded windows, the best A/B-tested on live traffic and deployed if it wins; exploits the ranker it ends with."""
    return _automodel(ctx, ("model",))


@register_arm("automodel_models", options=AutoModelOptions, live=True, twins=False)
def automodel_models(ctx: ArmContext) -> EvolutionHistory:
    """AutoFeature and AutoTrain in alternating rounds (features first), each candidate screened offline and
    A/B-gated online; exploits the ranker it ends with."""
    return _automodel(ctx, ("feature", "model"))



# --------------------------------------------------------------------------- the AutoModel system (C8)
# ``automodel_system`` runs several evolution agents at once on one deployment, each submitting proposals to a
# :class:`~agents.evolution.coordinator.Coordinator` (``coordinate: true``: serialised tests within a traffic budget,
# global constraints before shipping) or to the same object with ``coordinate: false`` (every agent tests at once on
# its own overlapping users and ships by its own rule: the uncoordinated baseline). The agents (``agents``):
# ``autotrain`` (the method cards parsed by the LLM, screened offline on everything recorded; proposes the best
# ranker as a replacement), ``autofeature`` (feature-set edits, the same way), ``autoperf`` (the primal-dual search of
# agents.evolution.autoperf on twins; proposes the cheapest config within the degradation bound, goal ``cost``) and
# ``rerank`` (``rerank_candidates`` random configs of the evolved agent and the incumbent on twins, by its layered
# reward; proposes the best if it beats the incumbent) and ``designer`` (the LLM designer in edit mode: its edit of the
# running pipeline as per-agent config changes or a ranker replacement, ``agents.evolution.designer.agent_edits``; an
# edit that adds or drops a recall route is a new pipeline, recorded with that reason and not proposed). An agent
# proposes whenever it has nothing pending (never the same change twice); every window is served by the coordinator
# and recorded; exploit windows serve what shipped.

SYSTEM_AGENTS = ("autotrain", "autofeature", "autoperf", "rerank", "designer")


@dataclass
class SystemOptions(AutoModelOptions):
    """The AutoModel system's agents, each proposal's test (``share`` of the users for ``ab_windows`` windows) and
    the coordinator's rules (``traffic_budget``, ``max_degradation``)."""

    coordinate: bool = True
    agents: list[str] = field(default_factory=lambda: ["autotrain", "autoperf", "rerank"])
    share: float = 0.2
    traffic_budget: float = 0.5
    max_degradation: float = 0.01
    flops_budget: float | None = None  # coordinated: the ranker's forward-pass FLOPs per request a change may reach
    perf_rounds: int = 3
    perf_per_round: int = 3
    rerank_candidates: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.agents, str) or not self.agents:
            raise ConfigError(f"`controller.options.agents` must list at least one of {list(SYSTEM_AGENTS)} "
                              f"(got {self.agents!r})")
        for i, name in enumerate(self.agents):
            check_choice(f"controller.options.agents[{i}]", name, SYSTEM_AGENTS)
        if len(set(self.agents)) != len(self.agents):
            raise ConfigError(f"`controller.options.agents` must not repeat an agent (got {list(self.agents)})")
        check_range("controller.options.share", self.share, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_range("controller.options.traffic_budget", self.traffic_budget, self.share, 1.0, high_inclusive=False)
        check_range("controller.options.max_degradation", self.max_degradation, 1e-6, 0.5)
        if self.flops_budget is not None:
            check_range("controller.options.flops_budget", self.flops_budget, 0.0, low_inclusive=False)
        check_int("controller.options.perf_rounds", self.perf_rounds, 1)
        check_int("controller.options.perf_per_round", self.perf_per_round, 1)
        check_int("controller.options.rerank_candidates", self.rerank_candidates, 1)


Proposer = Callable[[int], "tuple[Proposal, str] | None"]


def _proposers(ctx: ArmContext, recorder: ImpressionRecorder, tried: set[str]) -> dict[str, Proposer]:
    """Per agent of the options, ``propose(attempt) -> (Proposal, key) | None`` from the deployment's current state;
    a proposal's ``key`` joins ``tried`` and the agent never proposes a change whose key is in it."""
    opts: SystemOptions = ctx.options
    service = ctx.deployment
    agent = ctx.env.get_wrapper_attr("agent_name")
    ranker_name = next(n for n in service.agent_names() if service.agent(n) is service.system.pipelines[0].ranker)
    budget = opts.flops_budget if opts.coordinate else None  # the coordinator tells its agents its budget
    autotrain = None
    if "autotrain" in opts.agents:
        autotrain = AutoTrain(opts.backend(), seed=ctx.agent_seed, store=ctx.store, exp_id=ctx.exp_id,
                              earlier=opts.earlier)
        autotrain.parse_all(method_cards())

    def ranker(kind: str) -> Proposer:
        def propose(attempt: int) -> tuple[Proposal, str] | None:
            found = screen_ranker(ctx, kind, autotrain, tried, recorder, budget)
            if found is None:
                return None
            return Proposal("autotrain" if kind == "model" else "autofeature", replace={ranker_name: found.ranker},
                            share=opts.share, windows=opts.ab_windows, note=f"{found.label}: offline AUC gain "
                            f"{found.gain:+.4f}"), found.label
        return propose

    def autoperf(attempt: int) -> tuple[Proposal, str] | None:
        result = AutoPerf(service, max_degradation=opts.max_degradation, rounds=opts.perf_rounds,
                          per_round=opts.perf_per_round, windows=1, seed=ctx.agent_seed + 7919 * attempt).run()
        key = f"autoperf {result.best.values}"
        if result.best.values == result.incumbent.values or key in tried:
            return None
        tried.add(key)
        return Proposal("autoperf", changes=result.config(), share=opts.share, windows=opts.ab_windows, goal="cost",
                        note=f"cost x{1 - result.cost_reduction:.2f}, clicks x{1 - result.clicks_degradation:.4f} "
                             f"on twins"), key

    def rerank(attempt: int) -> tuple[Proposal, str] | None:
        current = {k: v for k, v in service.agent(agent).config.items() if k in ctx.params.by_name}
        grid = oracle_grid(ctx, opts.rerank_candidates + 1, ctx.agent_seed + 104729 * attempt, incumbent=current)
        values = [v.value for v in twin_values(service, grid, agent=agent,
                                               score=lambda twin, lg: twin.score(lg, agent)[0])]
        best = int(np.argmax(values))
        key = f"rerank {sorted(grid[best].items())}"
        if best == 0 or key in tried:
            return None
        tried.add(key)
        return Proposal("rerank", changes={agent: grid[best]}, share=opts.share, windows=opts.ab_windows,
                        note=f"twin reward {values[best]:+.4f} vs incumbent {values[0]:+.4f}"), key

    designer = None
    if "designer" in opts.agents:  # the LLM designer in edit mode, its designs submitted as agent edits
        designer = LLMDesigner(opts.backend(), ctx.store, ctx.exp_id, agent="designer", mode="edit",
                               max_retries=opts.llm_max_retries, temperature=opts.llm_temperature, seed=ctx.agent_seed,
                               earlier=opts.earlier)

    def design(attempt: int) -> tuple[Proposal, str] | None:
        edits = agent_edits(service, designer, seed=(ctx.agent_seed * 1000 + attempt) % 2**31)
        if edits.proposal is None or edits.reason:
            log.info("designer: nothing to propose (%s)", edits.reason)
            return None
        key = f"designer {edits.proposal.key}"
        if key in tried:
            return None
        tried.add(key)
        designer.record(edits.proposal)  # stored as a valid design; the coordinator stores its test and decision
        return Proposal("designer", changes=edits.changes, replace=edits.replace, share=opts.share,
                        windows=opts.ab_windows, note=edits.proposal.rationale[:120]), key

    makers = {"autotrain": ranker("model"), "autofeature": ranker("feature"), "autoperf": autoperf, "rerank": rerank,
              "designer": design}
    return {name: makers[name] for name in opts.agents}


@register_arm("automodel_system", options=SystemOptions, live=True, twins=False)
def automodel_system(ctx: ArmContext) -> EvolutionHistory:
    """Several evolution agents at once (AutoTrain, AutoFeature, AutoPerf, re-rank evolution), their proposals tested
    and shipped by the coordinator (``coordinate: true``) or each on its own (``false``); exploits what shipped."""
    opts: SystemOptions = ctx.options
    env = ctx.env
    env.reset(seed=ctx.seed)
    service = ctx.deployment
    if service.resources is None:
        service.calibrate_resources()
    agent = env.get_wrapper_attr("agent_name")
    names = ctx.params.by_name

    def production() -> dict[str, Any]:
        return {k: v for k, v in service.agent(agent).config.items() if k in names}

    base = len(service.system.pipelines)  # the challengers' pipelines come after the running ones

    def test_share(window_log: InteractionLog) -> dict[str, float]:
        pipes = window_log.requests["pipeline"]
        return {"coordinator/test_share": float((pipes >= base).mean()) if len(pipes) else 0.0}

    record = _ab_window_recorder(ctx, agent, production, "coordinated" if opts.coordinate else "uncoordinated",
                                 test_share)
    coordinator = Coordinator(service, traffic_budget=opts.traffic_budget, max_degradation=opts.max_degradation,
                              flops_budget=opts.flops_budget, min_requests=opts.gate_min_requests, store=ctx.store,
                              exp_id=ctx.exp_id, coordinate=opts.coordinate)
    recorder = service.start_recording()
    tried: set[str] = set()
    keys: dict[int, str] = {}  # proposal id -> its key
    try:
        proposers = _proposers(ctx, recorder, tried)
        pending: dict[str, int] = {}
        attempts = dict.fromkeys(proposers, 0)
        seen = 0  # coordinator events handled
        while env.steps < ctx.windows:
            new, seen = coordinator.events[seen:], len(coordinator.events)
            if any(e.kind == "shipped" for e in new):  # production changed: what was rejected may pass now
                tried -= {keys[e.proposal] for e in coordinator.events if e.kind == "rejected"}
            for e in new:
                if e.kind in ("shipped", "rejected") and pending.get(e.source) == e.proposal:
                    del pending[e.source]
            for name, propose in proposers.items():
                if name in pending or coordinator.window < 2:  # (2 recorded windows before the first screen)
                    continue
                made = propose(attempts[name])
                attempts[name] += 1
                if made is not None:
                    pid = coordinator.submit(made[0])
                    pending[name], keys[pid] = pid, made[1]
            coordinator.step(on_log=record)
    finally:
        service.stop_recording()
    decided = ("shipped", "rejected")
    ctx.summary.update(coordinator.summary())
    by_source = Counter((e.source, e.kind) for e in coordinator.events if e.kind in decided)
    ctx.summary.update({f"coordinator/{source}/{kind}": float(n) for (source, kind), n in sorted(by_source.items())})
    log.info("automodel system (%s): %s", "coordinated" if opts.coordinate else "uncoordinated",
             {k: v for k, v in ctx.summary.items() if k.startswith("coordinator/")})
    exploit(ctx, lambda obs: production())
    return env.history
