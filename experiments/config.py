"""Structured configs of one experiment run (Hydra ConfigStore dataclasses), validated before any simulation.

An :class:`ExperimentConfig` is the schema of ``conf/config.yaml``: the world, the decision system, the
reward, the controller (the *arm*, see :mod:`experiments.arms`), the evolution loop's settings, the
loggers and the claims the report checks. Hydra rejects unknown keys, unknown group options and wrong
types while composing; :func:`load_config` then builds the dataclasses, whose ``__post_init__`` check
ranges and names (errors name the full key, the allowed values and the value, with a did-you-mean).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from agents.decision.configs import SYSTEM_PRESETS, SystemConfig, static_baseline_config
from agents.decision.resources import RESOURCE_KEYS
from agents.evolution.controllers import halving_rounds
from agents.evolution.env import MAX_CONTROL_SHARE, TWIN_PREFIX
from envs.config import WORLD_SIZES, WorldConfig, known_keys
from envs.validation import ConfigError, check_choice, check_int, check_range
from experiments.registry import ARMS
from rewards.constraints import SENSES, Constraint, LagrangianConstraints, WeightedScalarisation
from rewards.inner import INNER_METRICS, ROLES
from rewards.layered import LayeredRewardConfig
from rewards.outer import OUTER_KEYS

__all__ = [
    "CLAIM_DIRECTIONS",
    "CLAIM_STAGES",
    "ClaimConfig",
    "ConstraintConfig",
    "ControllerConfig",
    "EvolutionSettings",
    "ExperimentConfig",
    "LoggerConfig",
    "REPLICATE_SUFFIX",
    "RewardConfig",
    "SELECTIONS",
    "SHIP_METRICS",
    "TWIN_PHASES",
    "TensorBoardConfig",
    "WandbConfig",
    "claim_metrics",
    "check_mapping_overrides",
    "check_override_values",
    "check_overrides",
    "load_config",
    "register_configs",
    "system_preset",
    "world_size_node",
]

CLAIM_DIRECTIONS = ("greater", "less")
CLAIM_STAGES = ("all", "evolution", "exploit")  # which windows: all, those of the evolution, or the exploit ones after it
CLAIM_SCALES = ("none", "headroom")  # a claim's effect in the metric's units, or as shares of each seed's headroom
WANDB_MODES = ("offline", "online", "disabled")
REPLICATE_SUFFIX = "_r"  # an A/A replicate's arm label: <arm>_r<n>
CONSTRAINT_HANDLERS = ("lagrangian", "weighted")
FREE_PREFIXES = ("config/", "regime/", "constraint/", "segment/", "ope/")  # data-dependent metric names

SELECTIONS = ("best_window", "retest", "ship")  # evolution.select: how a searching arm picks what it deploys
SHIP_METRICS = ("clicks_exp", "clicks", "dwell")  # evolution.ship_metric: a per-request column of the log
TWIN_PHASES = ("off", "exploit", "all")  # evolution.twins: which windows also get their counterfactual gain on twins


@dataclass
class EvolutionSettings:
    """How the evolution loop runs: which agent evolves, how many windows of how many requests."""

    agent: str = "baseline/rerank/mmr"  # the evolved agent (checked against the system when the env is built)
    windows: int = 8  # decision steps of the run
    window: int = 300  # requests served per window
    concurrency: int = 100  # concurrent sessions (requests per simulation step)
    warmup: int = 1  # windows served before the first decision
    # a shared warm-up: the warm-up's windows serve every segment from this pipeline of the system, then the system's
    # own routing takes over, each segment handed over with what its previous pipeline remembered of it: systems that
    # differ only by their routing (C1's) then share their warm-up, bit for bit, and an A/A replicate takes its own
    # randomness only after it. "" (the default): the warm-up is served by the system as configured
    warmup_pipeline: str = ""
    codec: str = "box"  # action encoding: box | multidiscrete
    bins: int = 11  # grid points per range parameter (multidiscrete)
    risk_bound: float = 0.1  # violations per request the regime's risk slack is measured against
    fixed: dict[str, Any] = field(default_factory=dict)  # parameters held fixed (left out of the action)
    learn: bool = True  # whether the system's learning agents keep learning
    stationary: bool = False  # every window from the same snapshot (common random numbers; the shifts never come)
    exploit: int = 0  # windows served after the evolution by what it found (rows with phase "exploit")
    # time the serving code at reset (the resource model, agents.decision.resources) so every window carries
    # outer/cost/flops_per_request, compute_ms_per_request and latency percentiles (AutoPerf and the C8 arms set it)
    resources: bool = False
    # How a searching arm (random, optuna, optuna_ab, llm) picks what it exploits: "best_window", the config of its
    # best window; "retest", its `leaders` best distinct configs re-tested by successive halving in the last
    # `retest` of the `windows` (each re-test window: the leader on `retest_share` of the users, the incumbent on
    # the rest as a concurrent control, a fresh split per window), the winner by mean relative reward, deployed only
    # if that mean is > 0 (else the incumbent stays); "ship", continuous deployment (needs `explore_share` < 1):
    # every window the searcher explores on is an A/B test of its candidate against production (the rest of the
    # users), and a candidate whose user-clustered interval of `ship_metric` (candidate - production, per request,
    # level 1 - `ship_alpha`) lies above `ship_min_effect` ships at once: production serves it to the rest of the
    # users (and is the control) from the next window; the exploit windows serve production. Every arm serves
    # `windows` windows either way.
    select: str = "best_window"
    leaders: int = 4
    retest: int = 8
    retest_share: float = 0.2
    ship_metric: str = "clicks_exp"  # select=ship: the per-request outcome the ship test compares (SHIP_METRICS)
    ship_alpha: float = 0.05  # select=ship: the test's interval is two-sided at 1 - alpha (a false ship: alpha / 2)
    ship_min_effect: float = 0.0  # select=ship: the interval's lower end must exceed this (< 0: a non-inferiority margin)
    # The share of the users a searching arm (random, optuna, llm, ppo; on the composition env compositional,
    # ppo_composition, llm_compositional) explores on while it searches: each window its candidate serves
    # `explore_share` of the users (a salted hash of their id, a fresh salt per window) and the incumbent (the agent
    # as the system config sets it, or the system's own wiring, learning from its own traffic) the rest, as a concurrent
    # control, and the searcher is told the candidate's reward minus the control's (free of the learning system's
    # trend). 1.0: all traffic (the env's plain semantics). The ablation presets that compare searching arms with
    # gated ones declare 0.2, the default share of the re-tests and of every A/B gate, so every arm explores on the
    # same declared share. Arms that search nothing (static, the oracle) ignore it; gated arms (llm_designer,
    # alternating, the AutoModel arms) have their own test share.
    explore_share: float = 1.0
    # Twins of a window (the same state and traffic, learning off): in the windows of `twins` ("exploit": the exploit
    # ones; "all": those of the evolution too, except windows split with a concurrent control; "off": none) the
    # action served and the incumbent's (what the env served at reset: the hand-tuned config, the fixed wiring) are
    # each served on a twin, and the rows carry `twin/<metric>` = served - incumbent for the env's reward and every
    # inner and outer metric: what the arm's choice gains over the incumbent in the arm's own state, on identical
    # traffic (the noise of who arrived cancels), the metric of the "found" claims.
    twins: str = "exploit"

    def __post_init__(self) -> None:
        check_int("evolution.windows", self.windows, 1)
        check_int("evolution.exploit", self.exploit, 0)
        check_choice("evolution.twins", self.twins, list(TWIN_PHASES))
        check_choice("evolution.select", self.select, list(SELECTIONS))
        check_int("evolution.leaders", self.leaders, 1, 64)
        check_range("evolution.retest_share", self.retest_share, round(1.0 - MAX_CONTROL_SHARE, 6), MAX_CONTROL_SHARE)
        check_int("evolution.retest", self.retest, 1)
        check_range("evolution.explore_share", self.explore_share, round(1.0 - MAX_CONTROL_SHARE, 6), 1.0)
        if self.explore_share < 1.0 and self.stationary:
            raise ConfigError(f"`evolution.explore_share` < 1 needs `evolution.stationary` = false: a stationary env "
                              f"restores every window, so there is no incumbent to serve the rest of the users "
                              f"(got explore_share={self.explore_share}, stationary=True); set explore_share=1")
        check_choice("evolution.ship_metric", self.ship_metric, list(SHIP_METRICS))
        check_range("evolution.ship_alpha", self.ship_alpha, 0.001, 0.5)
        check_range("evolution.ship_min_effect", self.ship_min_effect)  # < 0: a non-inferiority margin
        if self.select == "ship" and self.explore_share >= 1.0:
            raise ConfigError(f"`evolution.select=ship` deploys what beats production in each window's A/B test, so the "
                              f"search must explore on a share of the users with production serving the rest: set "
                              f"`evolution.explore_share` < 1, e.g. 0.2 (got explore_share={self.explore_share})")
        if self.select == "retest":
            rounds = halving_rounds(self.leaders)
            if self.retest < sum(rounds):
                raise ConfigError(f"`evolution.retest` must be >= {sum(rounds)} for {self.leaders} leaders (successive "
                                  f"halving re-tests {' then '.join(map(str, rounds))} of them, one window each at "
                                  f"least; got {self.retest}): raise it or lower `evolution.leaders`")
            if self.retest >= self.windows:
                raise ConfigError(f"`evolution.retest` must be < `evolution.windows` (the re-test windows are part of "
                                  f"the run's windows, after the search; got {self.retest} >= {self.windows})")
        check_int("evolution.window", self.window, 1)
        check_int("evolution.concurrency", self.concurrency, 1)
        check_int("evolution.warmup", self.warmup, 0)
        if self.warmup_pipeline and not self.warmup:
            raise ConfigError(f"`evolution.warmup_pipeline` needs warm-up windows: set `evolution.warmup` >= 1 (got "
                              f"warmup_pipeline={self.warmup_pipeline!r}, warmup=0)")
        check_choice("evolution.codec", self.codec, ["box", "multidiscrete"])
        check_int("evolution.bins", self.bins, 2)
        check_range("evolution.risk_bound", self.risk_bound, 0.0)


@dataclass
class ControllerConfig:
    """The arm: a name registered in :data:`experiments.registry.ARMS` (by :mod:`experiments.arms`) and that arm's
    options; an option left out takes the default of the arm's options dataclass.

    Both are checked against the registered arms; before any is registered (the schema's default instance, built
    when this module registers the schema) there is nothing to check against, and :func:`load_config` refuses to
    validate a config until :mod:`experiments.arms` has been imported.
    """

    name: str = "static"
    options: dict[str, Any] = field(default_factory=dict)  # validated by the arm's options dataclass
    # A/A replicate: > 0 runs the same arm with its own randomness (the system's initial weights, exploration and
    # logging draws, A/B salts; the controller's seed) re-seeded, on the same world and traffic; labelled
    # ``<arm>_r<replicate>``. The report compares it with the arm: the noise floor of its claims.
    replicate: int = 0

    def __post_init__(self) -> None:
        check_int("controller.replicate", self.replicate, 0)
        if ARMS:
            self.typed_options()

    def typed_options(self) -> Any:
        """The options as the arm's options dataclass (unknown keys get a did-you-mean)."""
        _check_arms_registered()
        check_choice("controller.name", self.name, sorted(ARMS))
        schema = ARMS[self.name].options
        values = dict(self.options)
        if schema is None:
            if values:
                raise ConfigError(f"`controller.options` must be empty: arm {self.name!r} takes no options (got {values})")
            return None
        return schema(**known_keys("controller.options", values, schema))


def _check_arms_registered() -> None:
    if not ARMS:
        raise ConfigError("`controller.name` cannot be checked: no arm is registered; import experiments.arms "
                          "(which registers the arms) before validating a config")


@dataclass
class ConstraintConfig:
    """``metric <= bound`` (or ``>=``) on an outer metric, e.g. violations per request <= 0.05."""

    metric: str = "outer/risk/violations_per_request"
    bound: float = 0.05
    sense: str = "<="
    scale: float = 1.0

    def __post_init__(self) -> None:
        check_choice("reward.constraints.metric", self.metric, OUTER_KEYS)
        check_choice("reward.constraints.sense", self.sense, SENSES)

    def build(self) -> Constraint:
        return Constraint(self.metric, self.bound, self.sense, self.scale)


@dataclass
class RewardConfig(LayeredRewardConfig):
    """The layered reward (inner/outer mix per role) and optional constraints on outer metrics.

    With ``constraints`` the reward is penalised by ``sum_i m_i (g_i - b_i)``; ``handler: lagrangian`` adapts the
    multipliers ``m_i`` by dual ascent once per window (step ``lr``, start ``init``); ``weighted`` keeps them at
    ``init``.
    """

    constraints: list[ConstraintConfig] = field(default_factory=list)
    handler: str = "lagrangian"
    lr: float = 0.1
    init: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.constraints = [c if isinstance(c, ConstraintConfig) else ConstraintConfig(**c) for c in self.constraints]
        check_choice("reward.handler", self.handler, CONSTRAINT_HANDLERS)
        check_range("reward.lr", self.lr, 0.0, low_inclusive=False)
        check_range("reward.init", self.init, 0.0)
        self.build_handler()  # validates the constraints together (e.g. one per metric)

    def layered(self) -> LayeredRewardConfig:
        """The plain layered-reward part, for the evolution env."""
        return LayeredRewardConfig(**{f.name: getattr(self, f.name) for f in fields(LayeredRewardConfig)})

    def build_handler(self) -> LagrangianConstraints | WeightedScalarisation | None:
        """A fresh constraint handler (or None without constraints)."""
        if not self.constraints:
            return None
        built = [c.build() for c in self.constraints]
        if self.handler == "lagrangian":
            return LagrangianConstraints(built, lr=self.lr, init=self.init)
        return WeightedScalarisation(built, self.init)


@dataclass
class WandbConfig:
    """Weights & Biases: offline by default (synced later with ``wandb sync``), never prompts."""

    enabled: bool = True
    mode: str = "offline"  # offline | online | disabled
    project: str = "agentic-rs"
    entity: str | None = None
    group: str | None = None  # default: the experiment name
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_choice("logger.wandb.mode", self.mode, WANDB_MODES)


@dataclass
class TensorBoardConfig:
    enabled: bool = True
    subdir: str = "tb"  # event files go to <run dir>/<subdir>


@dataclass
class LoggerConfig:
    """Where metrics go. The table (``metrics.csv`` and ``metrics.parquet``) is always written."""

    wandb: WandbConfig = field(default_factory=WandbConfig)
    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)
    plots: bool = True  # PNG figures in the run dir (and to wandb / TensorBoard)
    progress: bool = True  # a tqdm bar over the windows


def claim_metrics() -> list[str]:
    """Metric names a claim may compare (besides the data-dependent ``config/``, ``regime/``, ... columns)."""
    names = ["reward", "evolution/best_reward", *OUTER_KEYS, *(f"outer/cost/{k}" for k in RESOURCE_KEYS),
             "coordinator/test_share"]  # the resource model's terms (evolution.resources); C8's traffic under test
    for role in ROLES:
        names += [f"layered/{role}/{t}" for t in ("inner", "outer", "penalty", "total")]
        names += [f"inner/{role}/{m}" for m in INNER_METRICS[role]]
    # served - incumbent on twins of the window (evolution.twins)
    names += [f"{TWIN_PREFIX}{n}" for n in ["reward", *OUTER_KEYS, *(f"inner/{r}/{m}" for r in ROLES for m in INNER_METRICS[r])]]
    return names


@dataclass
class ClaimConfig:
    """A claim the report checks: ``metric`` of arm group ``a`` is ``direction`` than that of group ``b``.

    Per seed, the metric is averaged over the windows of ``stage`` (``evolution``: while the arm searches, its
    exploration included; ``exploit``: the ``evolution.exploit`` windows after it, served by what it found; ``all``)
    that are ``>= from_step`` and ended on or after simulated day ``from_day`` (e.g. the windows after the last
    shift, whatever the window length), then over the group's arms;
    the effect ``a - b`` gets a 95% t-interval across seeds (paired by seed when both groups ran the same seeds).
    The claim held when the whole interval lies on the claimed side of 0 (significant at 5%, two-sided).

    ``min_effect`` (required, > 0, in the metric's units) is the smallest effect worth detecting: the report gives
    the power to detect it with the seeds run and whether the effect is beyond it (the interval wholly past it:
    ``yes``; wholly short of it: ``no``), and calls an inconclusive claim underpowered when that power is < 0.8.

    ``headroom`` (> 0 turns the check on, in the metric's units): the smallest gap between the two
    ``headroom_arms`` (default the clairvoyant ``oracle`` arm and ``static``) on the claim's metric and windows,
    averaged over seeds, for the claim to be testable. Below it the claim is ``untestable (no headroom)`` with the
    measured gap: an adaptive arm cannot beat a static config by more than the oracle does, so such a claim could
    only come out null, whatever the paradigm is worth.

    ``scale: headroom`` judges the share of the gap recovered instead of the raw difference: per seed, each group's
    metric minus the baseline's (``headroom_arms[1]``), divided by that seed's headroom (``headroom_arms[0]`` minus
    the baseline, on the same windows): 1 is as good as the oracle, 0 as the baseline, < 0 worse. ``min_effect`` is
    then a share (e.g. 0.25: a quarter of the oracle's gap) and ``headroom`` (required, in the metric's units) also
    drops the seeds whose own gap is below it (a share of no headroom is noise over nothing; the report counts them).
    """

    name: str = "C0"
    description: str = ""
    metric: str = "reward"
    a: list[str] = field(default_factory=list)
    b: list[str] = field(default_factory=list)
    direction: str = "greater"  # greater: a - b > 0; less: a - b < 0
    min_effect: float | None = None  # required: the smallest |a - b| worth detecting, in the metric's units
    from_step: int = 0
    from_day: float = 0.0  # only windows whose ``day`` (the simulated day at their end) is >= this
    stage: str = "all"  # all | evolution | exploit
    headroom: float = 0.0  # > 0: the claim needs headroom_arms[0] - headroom_arms[1] >= this to be testable
    headroom_arms: list[str] = field(default_factory=lambda: ["oracle", "static"])
    scale: str = "none"  # none: a - b in the metric's units; headroom: as shares of each seed's headroom

    def __post_init__(self) -> None:
        key = f"claims[{self.name}]"
        if not self.name:
            raise ConfigError("`claims.name` must be a non-empty string (got '')")
        if not self.metric.startswith(FREE_PREFIXES):
            check_choice(f"{key}.metric", self.metric, claim_metrics())
        for side in ("a", "b"):
            arms = getattr(self, side)
            if isinstance(arms, str):
                arms = [arms]
                setattr(self, side, arms)
            if not arms:
                raise ConfigError(f"`{key}.{side}` must list at least one arm (got [])")
        if set(self.a) & set(self.b):
            raise ConfigError(f"`{key}.a` and `{key}.b` must not share arms (got {self.a} and {self.b})")
        check_choice(f"{key}.direction", self.direction, CLAIM_DIRECTIONS)
        if self.min_effect is None:
            raise ConfigError(f"`{key}.min_effect` is required: the smallest effect a - b worth detecting, in the metric's "
                              f"units (a number > 0, e.g. 0.02 for clicks per request); the report gives the power to "
                              f"detect it and whether the effect exceeds it (got none)")
        check_range(f"{key}.min_effect", self.min_effect, 0.0, low_inclusive=False)
        check_int(f"{key}.from_step", self.from_step, 0)
        check_range(f"{key}.from_day", self.from_day, 0.0)
        check_choice(f"{key}.stage", self.stage, CLAIM_STAGES)
        check_range(f"{key}.headroom", self.headroom, 0.0)
        if isinstance(self.headroom_arms, str) or len(self.headroom_arms) != 2 or len(set(self.headroom_arms)) != 2:
            raise ConfigError(f"`{key}.headroom_arms` must name two different arms, the reference (e.g. the oracle) "
                              f"and the baseline (got {self.headroom_arms!r})")
        check_choice(f"{key}.scale", self.scale, CLAIM_SCALES)
        if self.scale == "headroom" and self.headroom <= 0:
            raise ConfigError(f"`{key}.headroom` must be > 0 with `scale: headroom` (the smallest gap, in the metric's "
                              f"units, a seed's share is computed over; got {self.headroom})")


@dataclass
class ExperimentConfig:
    """One run: one arm on one seed of one world, system and reward. Multirun sweeps ``controller`` and ``seed``."""

    name: str = "default"
    seed: int = 0
    arm: str = ""  # label of the arm in tables and plots; empty: the controller's name
    threads: int = 1  # torch threads
    out_dir: str | None = None  # None: Hydra's run dir (or the working directory outside Hydra)
    # the knowledge store: null = the one shared by every run ($AGENTIC_RS_STORE, else a file in the per-user data
    # folder: agents.infra.store.default_store_url), a SQLAlchemy URL, or a path relative to the run dir (its own)
    store: str | None = None
    world: WorldConfig = field(default_factory=lambda: WorldConfig(**WORLD_SIZES["tiny"]))
    system: SystemConfig = field(default_factory=lambda: static_baseline_config(fast=True))
    reward: RewardConfig = field(default_factory=RewardConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    evolution: EvolutionSettings = field(default_factory=EvolutionSettings)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    claims: list[ClaimConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_int("seed", self.seed, 0)
        check_int("threads", self.threads, 1)
        if not self.name or "/" in self.name:
            raise ConfigError(f"`name` must be a non-empty name without '/' (got {self.name!r})")
        if self.store is not None and (not isinstance(self.store, str) or not self.store.strip()):
            raise ConfigError(f"`store` must be null (the shared knowledge store), a SQLAlchemy URL or a path "
                              f"relative to the run dir (got {self.store!r})")
        names = [c.name for c in self.claims]
        if len(set(names)) != len(names):
            raise ConfigError(f"`claims` names must be unique (got {names})")
        twins = self.evolution.twins
        for c in self.claims:  # a claim on twin/ columns needs the windows it averages to have them
            if c.metric.startswith(TWIN_PREFIX) and (twins == "off" or (twins == "exploit" and c.stage != "exploit")):
                raise ConfigError(f"`claims[{c.name}].metric` = {c.metric!r} needs twins in its windows (stage "
                                  f"{c.stage!r}): set `evolution.twins` to 'all'" + (" or 'exploit'" if c.stage == "exploit"
                                  else "") + f" (got evolution.twins={twins!r})")
        if self.evolution.concurrency > self.world.num_users:
            raise ConfigError(f"`evolution.concurrency` must be <= `world.num_users`, one user per concurrent session "
                              f"(got {self.evolution.concurrency} > {self.world.num_users}); lower it or raise "
                              f"world.num_users")
        self.system.check_segments(self.world)

    @property
    def arm_label(self) -> str:
        """The arm's label in tables, plots and claims: ``arm`` (default the controller's name), with ``_r<n>``
        for A/A replicate n (:data:`REPLICATE_SUFFIX`)."""
        label = self.arm or self.controller.name
        return f"{label}{REPLICATE_SUFFIX}{self.controller.replicate}" if self.controller.replicate else label


def _prefixed(group: str, message: str) -> str:
    """Put ``group.`` in front of the first backticked key of an error message (unless it is there already)."""
    m = re.search(r"`([^`]+)`", message)
    if m is None or m.group(1).startswith((f"{group}.", f"{group}[", f"{group} ")) or m.group(1) == group:
        return message
    return f"{message[:m.start()]}`{group}.{m.group(1)}`{message[m.end():]}"


def _check_keys(node: Any, path: str = "") -> None:
    """Reject keys a dataclass node does not have (``+key=...`` adds them silently) with a did-you-mean."""
    if isinstance(node, DictConfig):
        cls = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(cls):
            allowed = [f.name for f in fields(cls)]
            for key in node.keys():
                if key not in allowed and not (key == "hydra" and not path):  # compose(return_hydra_config=True)
                    where = f"`{path}`" if path else "the config"
                    close = difflib.get_close_matches(str(key), allowed, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise ConfigError(f"`{path + '.' if path else ''}{key}` is not a key of {where} "
                                      f"(allowed: {allowed}){hint}")
        for key in node.keys():
            if not OmegaConf.is_missing(node, key):
                _check_keys(node[key], f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node):
            _check_keys(child, f"{path}.{i}")


def _check_segments(cfg: DictConfig) -> None:
    """Build each world segment on its own, so an error names the segment (``world.segments.new.drift_rate``)
    rather than the placeholder a segment's own validation uses."""
    segments = cfg.get("world", {}).get("segments") if isinstance(cfg.get("world"), DictConfig) else None
    if not isinstance(segments, DictConfig):
        return
    for name in segments.keys():
        node = segments[name]
        try:
            if isinstance(node, DictConfig):
                OmegaConf.to_object(node)
        except ConfigError as exc:
            raise ConfigError(_prefixed("world", str(exc).replace("segments.<segment>", f"segments.{name}"))) from None


def check_overrides(overrides: list[str], cfg: DictConfig) -> None:
    """Reject command-line overrides that Hydra would accept but that change nothing the user meant.

    ``key={}`` on a non-empty mapping is merged into it, leaving it unchanged (``world.segments={}`` keeps
    every segment): say so, and how to remove entries (``~key.name``).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_delete() or override.is_sweep_override():
            continue
        key = override.key_or_group
        value = override.value()
        if isinstance(value, dict) and not value:
            current = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
            if isinstance(current, DictConfig) and len(current):
                raise ConfigError(
                    f"`{key}={{}}` does not empty `{key}`: Hydra merges a mapping override into the existing one, so "
                    f"it would keep {sorted(str(k) for k in current.keys())}; remove an entry with `~{key}.<name>` "
                    f"or set the entries you want"
                )


def _parsed(overrides: list[str]) -> Iterator[tuple[str, Any]]:
    """Each override line with Hydra's parse of it; lines Hydra cannot parse are left out (Hydra's own message
    about them is clear)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for line in overrides:
        try:
            (override,) = parser.parse_overrides([line])
        except OverrideParseException:
            continue
        yield line, override


def mapping_overrides(overrides: list[str]) -> list[str]:
    """The override lines that set a key to a mapping (``key={...}``; not ``+``/``++`` additions or deletions)."""
    return [line for line, o in _parsed(overrides)
            if not (o.is_delete() or o.is_add() or o.is_force_add() or o.is_sweep_override())
            and isinstance(o.value(), dict)]


def check_mapping_overrides(overrides: list[str], cfg: DictConfig) -> None:
    """Refuse a mapping override (``key={...}``) whose key holds null or is past the end of a list in ``cfg``:
    Hydra merges a mapping into the value already there, and OmegaConf then raises a bare ``AttributeError``
    (a traceback, not a message). ``experiments.run`` composes the config with the other overrides first."""
    missing = object()
    for line in mapping_overrides(overrides):
        key = line.split("=", 1)[0].strip()
        try:
            current = OmegaConf.select(cfg, key, default=missing, throw_on_missing=False)
        except Exception:  # noqa: BLE001 - a key OmegaConf cannot even select: Hydra's own error says so
            continue
        if current is None or current is missing:
            what = "null" if current is None else "not in this config"
            raise ConfigError(f"`{key}` is {what}, so `{line}` cannot be applied: Hydra merges a mapping override "
                              f"into the mapping already at the key; set `{key}` in a config file instead (e.g. a "
                              f"`world=` preset of your own under conf/world/)")


INT64_MAX = 2**63 - 1


def check_override_values(overrides: list[str]) -> None:
    """Reject override values that no key accepts before Hydra applies them: OmegaConf raises a bare
    ``OverflowError`` (a traceback, not a message) for an integer too large for a float or int64 key.
    Lines Hydra cannot parse are left to Hydra, whose own message is clear."""
    for _, override in _parsed(overrides):
        for value in _values(override.value()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
                digits = len(str(abs(value)))
                raise ConfigError(f"`{override.key_or_group}` must be a number within +/-{INT64_MAX} "
                                  f"(got an integer of {digits} digits)")


def _values(value: Any) -> list[Any]:
    """The scalar values of a parsed override value (nested lists and dicts flattened)."""
    if isinstance(value, dict):
        return [v for item in value.values() for v in _values(item)]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _values(item)]
    return [value]


def load_config(cfg: DictConfig | ExperimentConfig | dict[str, Any]) -> ExperimentConfig:
    """Validate a composed config and build the dataclasses (before any simulation); errors name the full key."""
    if isinstance(cfg, ExperimentConfig):
        return cfg
    _check_arms_registered()
    if not isinstance(cfg, DictConfig) or OmegaConf.get_type(cfg) is not ExperimentConfig:  # e.g. a config.yaml read back
        cfg = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), cfg)
    _check_keys(cfg)
    check_int("seed", cfg.get("seed", 0), 0)  # before the parts that interpolate it
    _check_segments(cfg)
    values: dict[str, Any] = {}
    for f in fields(ExperimentConfig):
        if f.name not in cfg:
            continue
        try:
            node = cfg[f.name]
            values[f.name] = OmegaConf.to_object(node) if isinstance(node, (DictConfig, ListConfig)) else node
        except ConfigError as exc:
            group = "claims" if f.name == "claims" else f.name
            message = str(exc) if group in ("controller", "claims") else _prefixed(group, str(exc))
            raise ConfigError(message) from None
    return ExperimentConfig(**values)


def system_preset(name: str) -> dict[str, Any]:
    """The ``system=<name>`` option: :data:`agents.decision.configs.SYSTEM_PRESETS` ``[name]`` with fast rankers
    (runs of many windows), its seed the run's (``${seed}``)."""
    check_choice("system", name, list(SYSTEM_PRESETS))
    return {**dataclasses.asdict(SYSTEM_PRESETS[name](fast=True)), "seed": "${seed}"}


def world_size_node(name: str) -> dict[str, Any]:
    """The ``world/size=<name>`` option a world preset starts from (``defaults: [size@_here_: <name>]``)."""
    check_choice("world/size", name, list(WORLD_SIZES))
    return dict(WORLD_SIZES[name])


def register_configs() -> None:
    """Register the schema (``config_schema``) that ``conf/config.yaml`` starts from, the system presets
    (group ``system``) and the world sizes (group ``world/size``), so those values live only in Python."""
    store = ConfigStore.instance()
    store.store(name="config_schema", node=ExperimentConfig)
    for name in SYSTEM_PRESETS:
        store.store(group="system", name=name, node=system_preset(name))
    for name in WORLD_SIZES:
        store.store(group="world/size", name=name, node=world_size_node(name))


register_configs()
