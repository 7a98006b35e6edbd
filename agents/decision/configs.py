"""Structured configs of the decision system (Hydra ConfigStore-ready dataclasses) and their builders.

A :class:`SystemConfig` lists pipelines (recall routes with quotas and parameters, fusion size,
ranker, score fusion and re-rank parameters) and the routing of segments to pipelines. Everything
is validated in ``__post_init__`` (route kinds and agent parameters against each agent's decision
space), so a bad config fails before any simulation; ``build_system`` turns it into agents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.decision.functional import SegmentRouter
from agents.decision.fusion import FUSION_SIZES, MultiTaskFusion, QuotaFusion
from agents.decision.ranking import ARCHITECTURES, PRERANK_KEEP, PreRanker, TorchRanker
from agents.decision.recall import RECALL_ROUTES, make_recall
from agents.decision.rerank import Reranker
from agents.decision.system import Pipeline, System, feature_dim
from envs.config import WorldConfig
from envs.validation import ConfigError, check_choice, check_int, check_range

__all__ = [
    "FAST_RANKER_PARAMS",
    "ROUTES",
    "SYSTEM_PRESETS",
    "PipelineConfig",
    "RankerConfig",
    "RouteConfig",
    "SystemConfig",
    "baseline_config",
    "build_pipeline",
    "cascade_config",
    "build_system",
    "cold_start_config",
    "lean_config",
    "lean_system_config",
    "linear_baseline_config",
    "segment_routed",
    "segment_routed_config",
    "static_baseline",
    "static_baseline_config",
]

ROUTES = tuple(RECALL_ROUTES)  # route ids are positions in this tuple, shared by all pipelines


@dataclass
class RouteConfig:
    """One recall route of a pipeline: its kind, its quota share in fusion, its own parameters."""

    kind: str = "popularity"
    quota: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("routes.kind", self.kind, ROUTES)
        check_range(f"routes[{self.kind}].quota", self.quota, 0.0, 1.0)
        RECALL_ROUTES[self.kind].params.validate(dict(self.params), agent=f"routes[{self.kind}].params")


@dataclass
class RankerConfig:
    """The ranking agent: architecture, width, per-segment towers, training parameters."""

    arch: str = "mlp"
    hidden: int = 64
    per_segment: bool = False
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("ranker.arch", self.arch, ARCHITECTURES)
        check_int("ranker.hidden", self.hidden, 2, 4096)
        TorchRanker.params.validate(dict(self.params), agent="ranker.params")


@dataclass
class PipelineConfig:
    """Recall routes -> quota fusion -> ranker -> multi-task score -> re-rank."""

    name: str = "baseline"
    routes: list[RouteConfig] = field(default_factory=lambda: [RouteConfig()])
    fusion_size: int = 500
    ranker: RankerConfig = field(default_factory=RankerConfig)
    scorer: dict[str, Any] = field(default_factory=dict)  # MultiTaskFusion parameters
    rerank: dict[str, Any] = field(default_factory=dict)  # Reranker parameters
    # a cascade: a linear pre-ranker scores the fused set and passes this many on to the ranker (None: no cascade)
    prerank_keep: int | None = None

    def __post_init__(self) -> None:
        self.routes = [r if isinstance(r, RouteConfig) else RouteConfig(**dict(r)) for r in self.routes]
        if isinstance(self.ranker, dict):
            self.ranker = RankerConfig(**self.ranker)
        p = f"pipelines[{self.name}]"
        if not self.routes:
            raise ConfigError(f"`{p}.routes` must hold at least one route (got none)")
        kinds = [r.kind for r in self.routes]
        if len(set(kinds)) != len(kinds):
            raise ConfigError(f"`{p}.routes` must use each route kind once (got {kinds})")
        if sum(r.quota for r in self.routes) <= 0:
            raise ConfigError(f"`{p}.routes` quotas must not all be 0 (got {[r.quota for r in self.routes]})")
        if self.fusion_size not in FUSION_SIZES:
            raise ConfigError(f"`{p}.fusion_size` must be one of {list(FUSION_SIZES)} (got {self.fusion_size})")
        MultiTaskFusion.params.validate(dict(self.scorer), agent=f"{p}.scorer")
        Reranker.params.validate(dict(self.rerank), agent=f"{p}.rerank")
        if self.prerank_keep is not None and self.prerank_keep not in PRERANK_KEEP:
            raise ConfigError(f"`{p}.prerank_keep` must be one of {list(PRERANK_KEEP)} or null (no cascade) "
                              f"(got {self.prerank_keep!r})")



@dataclass
class SystemConfig:
    """Pipelines and the routing of segments to them (segments not listed go to the first pipeline)."""

    pipelines: list[PipelineConfig] = field(default_factory=lambda: [PipelineConfig()])
    routing: dict[str, str] = field(default_factory=dict)  # segment name -> pipeline name
    seed: int = 0

    def __post_init__(self) -> None:
        self.pipelines = [p if isinstance(p, PipelineConfig) else PipelineConfig(**dict(p)) for p in self.pipelines]
        if not self.pipelines:
            raise ConfigError("`system.pipelines` must hold at least one pipeline (got none)")
        names = [p.name for p in self.pipelines]
        if len(set(names)) != len(names):
            raise ConfigError(f"`system.pipelines` names must be unique (got {names})")
        for segment, pipe in self.routing.items():
            check_choice(f"system.routing[{segment}]", pipe, names)
        check_int("system.seed", self.seed, 0)

    def check_segments(self, world: WorldConfig) -> None:
        for segment in self.routing:
            check_choice("system.routing key", segment, world.segment_names)


def build_pipeline(cfg: PipelineConfig, world: WorldConfig, seed: int = 0) -> Pipeline:
    """Agents of one pipeline from its config."""
    recalls = [make_recall(r.kind, r.kind, dict(r.params)) for r in cfg.routes]
    fusion = QuotaFusion(
        [r.kind for r in cfg.routes], name=f"{cfg.name}/quota",
        config={"size": cfg.fusion_size, **{f"quota_{r.kind}": r.quota for r in cfg.routes}},
    )
    rk = cfg.ranker
    ranker = TorchRanker(
        feature_dim(world, len(ROUTES)), len(world.segments), len(ROUTES), arch=rk.arch, hidden=rk.hidden,
        per_segment=rk.per_segment, name=f"{cfg.name}/{rk.arch}", config=dict(rk.params), seed=seed,
    )
    pre = None
    if cfg.prerank_keep is not None:
        pre = PreRanker(feature_dim(world, len(ROUTES)), len(world.segments), len(ROUTES), name=f"{cfg.name}/prerank",
                        config={**dict(rk.params), "keep": cfg.prerank_keep}, seed=seed + 7919)
    return Pipeline(cfg.name, recalls, fusion, ranker, MultiTaskFusion(f"{cfg.name}/multitask", dict(cfg.scorer)),
                    Reranker(f"{cfg.name}/mmr", dict(cfg.rerank)), pre)


def build_system(cfg: SystemConfig, world: WorldConfig) -> System:
    """The system graph of a config: pipelines (seeded ``seed + i``) and the segment router."""
    cfg.check_segments(world)
    pipelines = [build_pipeline(p, world, seed=cfg.seed + i) for i, p in enumerate(cfg.pipelines)]
    names = [p.name for p in pipelines]
    routing = {f"route_{s}": cfg.routing.get(s, names[0]) for s in world.segment_names}
    return System(pipelines, SegmentRouter(world.segment_names, names, config=routing), list(ROUTES))


# ---------------------------------------------------------------------- presets


# A ranker that trains briefly per window, for runs of many windows (the experiment app, the evolution envs):
# one epoch, at least 100 gradient steps, the last 50k impressions (TorchRanker's defaults: 2, 300, 200k).
FAST_RANKER_PARAMS: dict[str, Any] = {"epochs": 1, "min_updates": 100, "memory": 50_000}


def baseline_config(arch: str = "mlp", fast: bool = False) -> PipelineConfig:
    """The usual hand-tuned fixed pipeline: every route with fixed quotas, one ranker for everyone.

    ``fast``: its ranker trains briefly per window (:data:`FAST_RANKER_PARAMS`) instead of TorchRanker's defaults.
    """
    quotas = {"popularity": 0.3, "collaborative": 0.2, "content": 0.3, "fresh": 0.1, "exploration": 0.1}
    ranker = RankerConfig(arch, params=dict(FAST_RANKER_PARAMS) if fast else {})
    return PipelineConfig(
        "baseline", [RouteConfig(k, q) for k, q in quotas.items()], 500, ranker, rerank={"risk_threshold": 0.5}
    )


def cold_start_config(arch: str = "mlp", fast: bool = False) -> PipelineConfig:
    """Popularity-led recall for users without a profile; its ranker learns fast from a small traffic share (a higher
    learning rate, small batches, 4 epochs per window). ``fast``: the training schedule per window is the fast
    baseline's (:data:`FAST_RANKER_PARAMS`: 1 epoch, at least 100 steps, the last 50k impressions), its learning
    rate and batch size stay."""
    routes = [RouteConfig("popularity", 0.7, {"k": 400}), RouteConfig("exploration", 0.1, {"k": 100}),
              RouteConfig("fresh", 0.2, {"k": 100})]
    params = {"lr": 1e-2, "epochs": 4, "batch_size": 256}
    ranker = RankerConfig(arch, params={**params, **FAST_RANKER_PARAMS} if fast else params)
    return PipelineConfig("cold_start", routes, 300, ranker, rerank={"risk_threshold": 0.5})


def lean_config(fast: bool = False) -> PipelineConfig:
    """A first-version pipeline: the baseline with popularity and long-tail exploration recall only and a linear
    (logistic) ranker. Every parameter an evolution env tunes is there; what it lacks is structure (more routes,
    an MLP ranker), what the LLM designer can add and parametric search cannot (experiments.llm_design)."""
    pipe = baseline_config("linear", fast)
    pipe.routes = [RouteConfig("popularity", 0.7), RouteConfig("exploration", 0.3, {"k": 200})]
    return pipe


def static_baseline_config(arch: str = "mlp", seed: int = 0, fast: bool = False) -> SystemConfig:
    """One pipeline, one model for everyone: the :func:`baseline_config` pipeline alone."""
    return SystemConfig([baseline_config(arch, fast)], seed=seed)


def segment_routed_config(arch: str = "mlp", segment: str = "new", seed: int = 0, fast: bool = False) -> SystemConfig:
    """The baseline for everyone but ``segment``, whose requests go to the cold-start specialist.

    ``fast`` puts both pipelines' rankers on the fast training schedule (as in :func:`static_baseline_config`), so
    the two systems train on the same schedule and differ only by the specialist pipeline and who it serves.
    """
    return SystemConfig([baseline_config(arch, fast), cold_start_config(arch, fast)], {segment: "cold_start"}, seed)


def lean_system_config(seed: int = 0, fast: bool = False) -> SystemConfig:
    """The :func:`lean_config` pipeline alone."""
    return SystemConfig([lean_config(fast)], seed=seed)


def linear_baseline_config(seed: int = 0, fast: bool = False) -> SystemConfig:
    """The static baseline with a linear ranker: the production logistic regression an AutoModel run starts from
    (experiment C6)."""
    return static_baseline_config("linear", seed, fast)


def cascade_config(seed: int = 0, fast: bool = False) -> SystemConfig:
    """The static baseline (an MLP ranker) behind a cascade: a linear pre-ranker scores the 500 fused candidates
    and passes them all on (``prerank_keep`` 500), the starting point AutoPerf cuts ``keep`` from."""
    cfg = static_baseline_config("mlp", seed, fast)
    cfg.pipelines[0].prerank_keep = 500
    return cfg


# The named systems (``system=<name>`` in the experiment app, which builds them with ``fast=True``).
SYSTEM_PRESETS: dict[str, Callable[..., SystemConfig]] = {
    "static_baseline": static_baseline_config,
    "cascade": cascade_config,
    "linear_baseline": linear_baseline_config,
    "segment_routed": segment_routed_config,
    "lean": lean_system_config,
}


def static_baseline(world: WorldConfig, seed: int = 0, arch: str = "mlp") -> System:
    """The static baseline system: one pipeline, one model for everyone."""
    return build_system(static_baseline_config(arch, seed), world)


def segment_routed(world: WorldConfig, seed: int = 0, arch: str = "mlp", segment: str = "new") -> System:
    """The segment-routed system of :func:`segment_routed_config`."""
    return build_system(segment_routed_config(arch, segment, seed), world)
