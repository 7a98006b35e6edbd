"""Compositional evolution: choose which agents exist and how they are wired, window by window.

A composition says, for each of two pipeline slots (``main`` and ``specialist``), which recall routes
run and with what quota (a route at quota 0 does not run, so it costs nothing), which rankers score
(linear, MLP, or both as an ensemble), and, for each user segment, which pipeline serves it. A
pipeline whose routes are all off serves from the popularity route alone, and one whose only route is
collaborative (empty for users without history) is topped up by popularity at the lowest quota level;
both are stated in ``info["config"]["notes"]``, so every action of the space serves full slates.

Agents live in a :class:`ComponentPool` built once per episode: every route, both rankers and the
score-fusion and re-rank stages of each slot persist across compositions and keep learning from the
traffic they serve, so a step rewires trained agents instead of rebuilding untrained ones. The reward
is the outer (system-level) layered reward; the action is a flat ``MultiDiscrete`` PPO accepts.

With a concurrent control (``set_control_share``, as :class:`~agents.evolution.env.EvolutionEnv`'s) each window
serves the candidate to ``1 - share`` of the users and production to the rest, split by a salted hash of the
user id with a fresh salt per window, and the reward told is the candidate users' minus the control users'. What
the candidate explores (:meth:`CompositionEnv.explore`) is the wiring (production: the control composition, the
initial one until :meth:`CompositionEnv.deploy_control` ships another) or one pooled agent's config (production: the
control's copy of that agent, at the config it had when exploring began, until a ship sets another).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from agents.decision.configs import ROUTES, PipelineConfig, RankerConfig, SystemConfig, baseline_config, cold_start_config
from agents.decision.functional import HashSplit, SegmentRouter
from agents.decision.fusion import MultiTaskFusion, QuotaFusion
from agents.decision.params import Choice, ParamSpace
from agents.decision.ranking import EnsembleRanker, TorchRanker
from agents.decision.recall import make_recall
from agents.decision.rerank import Reranker
from agents.decision.system import Pipeline, System, feature_dim
from agents.evolution.codec import SpaceCodec
from agents.evolution.deployment import REGIME_SCALARS, replicate_seed, split_systems
from agents.evolution.env import BOUND, WindowEnv
from envs.config import WorldConfig
from envs.log import InteractionLog
from envs.validation import ConfigError, check_choice
from rewards.layered import LayeredRewardConfig

__all__ = ["DESCRIPTION", "QUOTA_LEVELS", "RANKER_SETS", "SLOTS", "ComponentPool", "Composition", "CompositionEnv"]

SLOTS = ("main", "specialist")
QUOTA_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.5)  # 0 = the route is off
RANKER_SETS = ("linear", "mlp", "linear+mlp")
DESCRIPTION = (  # what the composition's parameters mean, for an LLM controller's prompt
    "Agent: the wiring of a recommender system with two pipelines, main and specialist. <slot>/quota_<route> is "
    "the share of a pipeline's candidates taken from a recall route (0: the route is off): popularity, "
    "collaborative (needs user history), content (similar to the user's interests), fresh (new items), "
    "exploration. <slot>/rankers: the ranker that scores candidates (linear, mlp, or both averaged). "
    "routing/<segment>: the pipeline that serves that user segment (new users have no history)."
)
HISTORY_ROUTES = ("collaborative",)  # routes that may return fewer candidates than a slate (no history, no candidates)


@dataclass
class Composition:
    """Which routes (with quotas) and rankers each pipeline slot has, and which slot serves each segment."""

    quotas: dict[str, dict[str, float]] = field(default_factory=dict)  # slot -> route kind -> quota
    rankers: dict[str, str] = field(default_factory=dict)  # slot -> one of RANKER_SETS
    routing: dict[str, str] = field(default_factory=dict)  # segment -> slot

    def validate(self, segments: list[str]) -> Composition:
        for slot in (*self.quotas, *self.rankers):
            check_choice("composition slot", slot, SLOTS)
        for slot, quotas in self.quotas.items():
            for kind, q in quotas.items():
                check_choice(f"composition.quotas[{slot}] route", kind, ROUTES)
                if q not in QUOTA_LEVELS:
                    raise ConfigError(f"`composition.quotas[{slot}][{kind}]` must be one of {list(QUOTA_LEVELS)} (got {q!r})")
        for slot, rankers in self.rankers.items():
            check_choice(f"composition.rankers[{slot}]", rankers, RANKER_SETS)
        for segment, slot in self.routing.items():
            check_choice("composition.routing segment", segment, segments)
            check_choice(f"composition.routing[{segment}]", slot, SLOTS)
        return self

    def used_slots(self, segments: list[str]) -> list[str]:
        return [s for s in SLOTS if any(self.routing.get(seg, SLOTS[0]) == s for seg in segments)]

    def key(self) -> str:
        parts = [f"{s}:{','.join(f'{k}={q:g}' for k, q in sorted(self.quotas.get(s, {}).items()) if q > 0)}"
                 f"|{self.rankers.get(s, 'mlp')}" for s in SLOTS]
        return " ; ".join(parts) + " ; " + ",".join(f"{g}->{s}" for g, s in sorted(self.routing.items()))


def composition_of(cfg: SystemConfig, specialist: PipelineConfig | None = None) -> Composition:
    """The composition a static system config corresponds to (quotas snapped to the nearest level)."""
    snap = lambda q: min(QUOTA_LEVELS[1:], key=lambda level: abs(level - q))  # noqa: E731
    second = cfg.pipelines[1] if len(cfg.pipelines) > 1 else cfg.pipelines[0]
    pipes = {SLOTS[0]: cfg.pipelines[0], SLOTS[1]: specialist or second}
    quotas = {slot: {k: 0.0 for k in ROUTES} | {r.kind: snap(r.quota) for r in p.routes if r.quota > 0}
              for slot, p in pipes.items()}
    rankers = {slot: p.ranker.arch for slot, p in pipes.items()}
    names = {p.name: slot for slot, p in pipes.items()}
    routing = {seg: names.get(pipe, SLOTS[0]) for seg, pipe in cfg.routing.items()}
    return Composition(quotas, rankers, routing)


class ComponentPool:
    """Every agent a composition may use, built once: per slot, all routes, both rankers, score fusion, re-rank."""

    def __init__(self, world: WorldConfig, templates: dict[str, PipelineConfig], ranker_params: dict[str, Any] | None = None,
                 seed: int = 0) -> None:
        self.world, self.segments = world, list(world.segment_names)
        dim = feature_dim(world, len(ROUTES))
        self.recalls: dict[str, dict[str, Any]] = {}
        self.rankers: dict[str, dict[str, TorchRanker]] = {}
        self.scorers: dict[str, MultiTaskFusion] = {}
        self.rerankers: dict[str, Reranker] = {}
        self.fusion_size: dict[str, int] = {}
        self._ensembles: dict[tuple[str, str], EnsembleRanker] = {}
        for i, slot in enumerate(SLOTS):
            t = templates[slot]
            params = {r.kind: dict(r.params) for r in t.routes}
            self.recalls[slot] = {k: make_recall(k, k, params.get(k, {})) for k in ROUTES}
            rp = dict(ranker_params if ranker_params is not None else t.ranker.params)
            self.rankers[slot] = {
                arch: TorchRanker(dim, len(self.segments), len(ROUTES), arch=arch, hidden=t.ranker.hidden,
                                  per_segment=t.ranker.per_segment, name=f"{slot}/{arch}", config=rp, seed=seed + 10 * i + j)
                for j, arch in enumerate(("linear", "mlp"))
            }
            self.scorers[slot] = MultiTaskFusion(f"{slot}/multitask", dict(t.scorer))
            self.rerankers[slot] = Reranker(f"{slot}/mmr", dict(t.rerank))
            self.fusion_size[slot] = t.fusion_size

    def ranker(self, slot: str, which: str) -> Any:
        if which != "linear+mlp":
            return self.rankers[slot][which]
        key = (slot, which)
        if key not in self._ensembles:
            members = [self.rankers[slot]["linear"], self.rankers[slot]["mlp"]]
            self._ensembles[key] = EnsembleRanker(members, name=f"{slot}/{which}")
        return self._ensembles[key]

    def pipeline(self, slot: str, quotas: dict[str, float], rankers: str) -> tuple[Pipeline, list[str]]:
        notes = []
        on = {k: q for k, q in quotas.items() if q > 0}
        if not on:
            on = {"popularity": 1.0}
            notes.append(f"{slot}: every route off, served by popularity alone")
        elif set(on) <= set(HISTORY_ROUTES):
            on["popularity"] = QUOTA_LEVELS[1]  # history-based routes return nothing for users without history
            notes.append(f"{slot}: only {sorted(on)[0]} on, topped up by popularity at quota {QUOTA_LEVELS[1]}")
        kinds = [k for k in ROUTES if k in on]
        fusion = QuotaFusion(kinds, name=f"{slot}/quota",
                             config={"size": self.fusion_size[slot], **{f"quota_{k}": on[k] for k in kinds}})
        pipe = Pipeline(slot, [self.recalls[slot][k] for k in kinds], fusion, self.ranker(slot, rankers),
                        self.scorers[slot], self.rerankers[slot])
        return pipe, notes

    def system(self, comp: Composition) -> tuple[System, list[str]]:
        """The system graph of a composition: only the slots some segment is routed to are built."""
        used = comp.used_slots(self.segments)
        pipes, notes = [], []
        for slot in used:
            quotas = {k: 0.0 for k in ROUTES} | comp.quotas.get(slot, {})
            p, n = self.pipeline(slot, quotas, comp.rankers.get(slot, "mlp"))
            pipes.append(p)
            notes += n
        routing = {f"route_{seg}": comp.routing.get(seg, SLOTS[0]) for seg in self.segments}
        return System(pipes, SegmentRouter(self.segments, used, config=routing), list(ROUTES)), notes

    @property
    def agents(self) -> dict[str, Any]:
        """Every pooled agent by its qualified name ``slot/role/name`` (``main/rerank/mmr``,
        ``specialist/recall/popularity``, ``main/ranking/mlp``...), wired or not."""
        out: dict[str, Any] = {}
        for slot in SLOTS:
            for a in (*self.recalls[slot].values(), *self.rankers[slot].values(), self.scorers[slot], self.rerankers[slot]):
                out[f"{slot}/{a.role}/{a.name.rsplit('/', 1)[-1]}"] = a
        return out


class CompositionEnv(WindowEnv):
    """Evolve the wiring of the system: routes and quotas, ranker ensembles, segment -> pipeline routing.

    Action (``MultiDiscrete``), per slot in ``SLOTS``: a quota level index (of ``QUOTA_LEVELS``) for each
    route in ``ROUTES``, then a ranker-set index (of ``RANKER_SETS``); then, per segment, a slot index.
    Reward: the system's layered reward (outer by default). Observation: the regime summary then the
    composition's indices scaled to [0, 1].

    ``control_share`` > 0 (non-stationary only; :meth:`~agents.evolution.env.WindowEnv.set_control_share`): that share
    of the users (a salted hash of their id, a fresh salt per window) is served by the control composition
    (``control``: the initial one, i.e. the system config's own wiring, until :meth:`deploy_control` ships another),
    the rest by the action's; the reward is the candidate users' minus the control users', and ``info`` gains
    ``evolution/window_reward``, ``evolution/candidate_reward``, ``evolution/control_reward``,
    ``evolution/candidate_share`` and ``evolution/candidate/<outer metric>``. Both compositions are wired from the
    one :class:`ComponentPool`: a component both use (a route, a slot's ranker, score fusion or re-ranker) is one
    agent serving both arms and learning from both arms' traffic, as the agents other than the target are in
    :class:`~agents.evolution.env.EvolutionEnv`'s control; only the wiring (which components serve which users, and
    the quotas) differs between the arms. An A/A (the action is the control's composition) then
    differs only by which users each arm got.

    :meth:`explore` (``agent``) makes the candidate side explore that pooled agent's config instead (the action then
    keeps production's wiring): the control serves production's wiring with its own copy of the agent (made when
    exploring it began, at the config the agent had then: production's), as EvolutionEnv's control does, and the
    reward told is that agent's layered reward, candidate users' minus control users'. :meth:`candidate_config` and
    :meth:`deploy_control` (what a ship moves to production) then speak of the agent's config.
    """

    def __init__(
        self,
        world: WorldConfig | dict[str, Any] | None = None,
        templates: dict[str, PipelineConfig] | None = None,
        window: int = 2000,
        concurrency: int = 400,
        warmup: int = 1,
        reward: LayeredRewardConfig | dict[str, Any] | None = None,
        risk_bound: float = 0.1,
        initial: Composition | None = None,
        ranker_params: dict[str, Any] | None = None,
        learn: bool = True,
        stationary: bool = False,
        render_mode: str | None = None,
        replicate: int = 0,
        resources: bool = False,
        control_share: float = 0.0,
    ) -> None:
        super().__init__(world, reward, window, concurrency, warmup, risk_bound, learn, stationary, render_mode, replicate,
                         resources)
        self.set_control_share(control_share)
        self.templates = templates or {SLOTS[0]: baseline_config(), SLOTS[1]: cold_start_config()}
        for slot in self.templates:
            check_choice("templates slot", slot, SLOTS)
        for slot in SLOTS:
            if slot not in self.templates:
                raise ConfigError(f"`templates` must give a pipeline for every slot {list(SLOTS)} (missing {slot!r})")
        self.ranker_params = ranker_params if ranker_params is not None else {"epochs": 1, "min_updates": 100, "memory": 50_000}
        RankerConfig(params=self.ranker_params)  # validates before any simulation
        self.segments = list(self.world_cfg.segment_names)
        self.initial = (initial or composition_of(SystemConfig([self.templates[SLOTS[0]]]), self.templates[SLOTS[1]]))
        self.initial.validate(self.segments)
        self.control = self.initial  # the concurrent control's composition: production (with control_share > 0)
        choices = []
        for slot in SLOTS:
            q = {k: 0.0 for k in ROUTES} | self.initial.quotas.get(slot, {})
            choices += [Choice(f"{slot}/quota_{k}", QUOTA_LEVELS, q[k]) for k in ROUTES]
            choices.append(Choice(f"{slot}/rankers", RANKER_SETS, self.initial.rankers.get(slot, "mlp")))
        choices += [Choice(f"routing/{seg}", SLOTS, self.initial.routing.get(seg, SLOTS[0])) for seg in self.segments]
        self.params = ParamSpace(choices)  # the composition as a decision space: controllers search it like any agent's
        self.codec = SpaceCodec(self.params, "multidiscrete")
        self.nvec = self.codec.space.nvec
        self.action_space = self.codec.space
        dim = len(self.segments) + len(REGIME_SCALARS) + len(self.nvec)
        self.observation_space = spaces.Box(-BOUND, BOUND, shape=(dim,), dtype=np.float32)
        self.overrides: dict[str, dict[str, Any]] = {}  # pooled agent name -> config, applied at every step
        self.explored = ""  # what the candidate side of a split window explores: "" the wiring, else a pooled agent
        self.control_agents: dict[str, Any] = {}  # pooled agent name -> the control's copy (production's config)

    # ------------------------------------------------------------------ encoding
    def target_params(self) -> ParamSpace:
        """The composition's decision space (a ``ParamSpace`` of choices), for controllers."""
        return self.params

    def to_config(self, comp: Composition) -> dict[str, Any]:
        comp.validate(self.segments)
        out: dict[str, Any] = {}
        for slot in SLOTS:
            q = {k: 0.0 for k in ROUTES} | comp.quotas.get(slot, {})
            out |= {f"{slot}/quota_{k}": q[k] for k in ROUTES}
            out[f"{slot}/rankers"] = comp.rankers.get(slot, "mlp")
        return out | {f"routing/{seg}": comp.routing.get(seg, SLOTS[0]) for seg in self.segments}

    def from_config(self, config: dict[str, Any]) -> Composition:
        c = self.params.validate(dict(config), agent="composition")
        quotas = {slot: {k: c[f"{slot}/quota_{k}"] for k in ROUTES} for slot in SLOTS}
        rankers = {slot: c[f"{slot}/rankers"] for slot in SLOTS}
        return Composition(quotas, rankers, {seg: c[f"routing/{seg}"] for seg in self.segments})

    def encode(self, comp: Composition) -> np.ndarray:
        return self.codec.encode(self.to_config(comp))

    def current_action(self) -> np.ndarray:
        return self.encode(self.composition)

    def decode(self, action: np.ndarray) -> Composition:
        return self.from_config(self.codec.decode(action))

    @property
    def initial_config(self) -> dict[str, Any]:
        """The initial composition (the system config's own wiring) as a config of :meth:`target_params`."""
        return self.to_config(self.initial)

    # ------------------------------------------------------------------ WindowEnv hooks
    def _build_system(self) -> tuple[System, ComponentPool]:
        seed = replicate_seed(int(self.np_random.integers(2**16)), self.replicate) % 2**16
        pool = ComponentPool(self.world_cfg, self.templates, self.ranker_params, seed=seed)
        self.overrides, self.explored, self.control_agents = {}, "", {}
        return pool.system(self.initial)[0], pool

    def _after_build(self) -> None:
        self.service.deploy_composition(self.initial)
        self.control = self.initial

    @property
    def composition(self) -> Composition:
        """The composition deployed now (the initial one before the first reset)."""
        return self.initial if self.deployment is None else self.deployment.composition

    def _current(self) -> dict[str, Any]:
        return {"composition": self.composition.key(), "notes": list(self.service.notes)}

    def _config_features(self) -> np.ndarray:
        return (self.encode(self.composition) / np.maximum(self.nvec - 1, 1)).astype(np.float32)

    def configure_agent(self, name: str, config: dict[str, Any]) -> None:
        """Set a pooled agent's config (qualified name, e.g. ``main/rerank/mmr``) for this and later steps: it is
        re-applied at every step, so it survives a stationary env's restores."""
        self.overrides[name] = self.service.agent(name).params.validate(dict(config), agent=name)
        self.service.deploy_config(name, self.overrides[name])

    def _apply(self, action: np.ndarray) -> dict[str, Any]:
        comp = self.decode(action)  # a bad action fails here, before anything is reconfigured
        for name, config in self.overrides.items():
            self.service.deploy_config(name, config)
        self.service.deploy_composition(comp)
        return self._current()

    def _score(self, log: InteractionLog, control: bool = False) -> tuple[float, dict[str, float]]:
        if self.explored:  # the explored agent's layered reward: the candidate's agent, or the control's copy
            return self.service.score(log, self.control_agents[self.explored] if control else self.explored)
        return self.service.score(log)  # the system's reward, whichever composition served the log

    # ------------------------------------------------------------------ concurrent control (WindowEnv.set_control_share)
    def explore(self, agent: str = "") -> None:
        """What the candidate side of a window split with a concurrent control explores: the wiring (``""``, the
        default) or the config of the pooled agent ``agent`` (a qualified name of :attr:`ComponentPool.agents`, e.g.
        ``main/rerank/mmr``). Exploring an agent the first time gives the control its own copy of it, at the config
        the agent has now (production's: call this before configuring a candidate); the copy then serves the
        control's users in every split window (wiring or agent explored) and learns from their traffic only."""
        if agent:
            pooled = self.service.pool.agents
            check_choice("agent", agent, list(pooled))
            if agent not in self.control_agents:
                copy_ = copy.deepcopy(pooled[agent])
                copy_.name = f"{copy_.name}/control"
                self.control_agents[agent] = copy_
        self.explored = agent

    def control_config(self, agent: str) -> dict[str, Any]:
        """Production's config of the pooled agent ``agent``: its control copy's, or the agent's own if the control
        has no copy of it."""
        return dict(self._production_agent(agent).config)

    def _production_agent(self, agent: str) -> Any:
        """The agent that serves production's users: the control's copy of ``agent``, or the pooled agent itself
        while the control holds no copy of it."""
        held = self.control_agents.get(agent)
        return held if held is not None else self.service.agent(agent)

    def deploy_control(self, config: dict[str, Any]) -> dict[str, Any]:
        """Move (part of) production to ``config``: production, when a searcher's candidate won its test
        (``evolution.select=ship``); the control serves it from the next window. Exploring the wiring, ``config`` is a
        composition config as :meth:`to_config` writes it (or part of one, merged over the control's); exploring an
        agent (:meth:`explore`), that agent's config (merged over its control copy's). Returns the whole config."""
        if self.explored:
            return self.deploy_control_agent(self.explored, config)
        self.control = self.from_config({**self.to_config(self.control), **config})
        return self.to_config(self.control)

    def deploy_control_agent(self, agent: str, config: dict[str, Any]) -> dict[str, Any]:
        """Set production's config of the pooled agent ``agent`` (its control copy's; the agent's own while the
        control holds no copy of it): an A/B gate's accepted config. Returns its whole config."""
        held = self._production_agent(agent)
        held.configure(held.params.validate({**held.config, **config}, agent=agent))
        return dict(held.config)

    def candidate_config(self) -> dict[str, Any]:
        """What the candidate serves now (what :meth:`deploy_control` ships): the composition, as a config of
        :meth:`target_params`, or, exploring an agent, that agent's config."""
        if self.explored:
            return dict(self.service.agent(self.explored).config)
        return self.to_config(self.composition)

    def _control_system(self) -> System:
        """The running system (the candidate composition) and, for the users ``HashSplit(control_share, salt)`` puts
        in arm 1, the control composition wired from the same pool (its pipelines appended after the candidate's;
        :func:`~agents.evolution.deployment.split_systems` names them ``<slot>/candidate``, its challenger's suffix:
        only their indices are read)."""
        control, _ = self.service.pool.system(self.control)
        if self.control_agents:  # production's copies of the agents explored so far
            swap = {id(self.service.agent(n)): a for n, a in self.control_agents.items()}
            control = System([p.swapped(p.name, swap) for p in control.pipelines], control.router, control.route_names)
        return split_systems(self.service.system, control, HashSplit(self.control_share, self._salt))
