"""The resource model: what a request costs each stage of a pipeline, fitted to timings of the real serving code.

A request batch flows recall -> fusion -> ranking -> re-ranking (:meth:`~agents.decision.system.Pipeline.serve`).
Each stage's work is counted in units that follow its config (:func:`stage_units`):

========  ==================================================================================================
stage     units per batch of ``B`` requests
========  ==================================================================================================
recall    ``B x routes`` (each route scores or samples the catalog for every request)
fusion    ``B x fusion_size`` (the candidates merged and de-duplicated)
ranking   ``B x fusion_size x flops_per_candidate`` (the ranker's forward pass over every candidate); with a
          cascade, ``B x (fusion_size x pre-ranker flops + keep x ranker flops)`` (the pre-ranker scores every
          candidate, the ranker the ``keep`` it passes on)
rerank    ``B x min(mmr_pool, fusion_size or keep) x slate_size`` (MMR's greedy picks over its shortlist)
========  ==================================================================================================

:func:`calibrate` serves real batches of several sizes through one or more pipelines with the stage clock of
``Pipeline.serve`` (the very code that serves, not a copy), takes the median of a few repeats, and fits per stage
``milliseconds = fixed_ms + per_unit_ms x units`` by least squares (non-negative). The fitted
:class:`ResourceProfile` then predicts, deterministically, the latency of any batch of any pipeline config:
:func:`window_costs` gives a window's per-request latency percentiles (a request waits for its whole batch), its
compute per request and its model FLOPs per request; budgets on them are constraints like any outer metric. The
profile is measured once (machines differ) and kept as JSON, so runs that load it are reproducible.
"""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.decision.context import CatalogView, RequestBatch
from agents.decision.system import Pipeline
from envs.log import InteractionLog
from envs.validation import ConfigError, check_int
from envs.world import World

__all__ = ["RESOURCE_KEYS", "STAGES", "ResourceProfile", "StageCost", "calibrate", "describe", "flops_per_candidate",
           "stage_units", "time_stages", "window_costs"]

STAGES: tuple[str, ...] = ("recall", "fusion", "ranking", "rerank")


def flops_per_candidate(ranker: Any) -> int:
    """Multiply-adds x 2 of the ranker's forward pass for one candidate: its linear layers' weights (the
    matmuls that dominate an MLP, a cross network or a factorisation machine's projection)."""
    model = getattr(ranker, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"`ranker` must have a torch `model` to count its FLOPs (got {type(ranker).__name__})")
    linear = [m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return 2 * int(sum(linear) if linear else sum(p.numel() for p in model.parameters()))


def stage_units(pipeline: Pipeline, batch_size: int, slate_size: int) -> dict[str, float]:
    """The work of one batch of ``batch_size`` requests in each stage, in the units of the module docstring."""
    b = float(check_int("batch_size", batch_size, 0))
    size = float(pipeline.fusion.config["size"])
    pre = getattr(pipeline, "preranker", None)  # (pipeline-like objects without a cascade need not have one)
    kept = size if pre is None else min(float(pre.config["keep"]), size)
    # a cascade that keeps fewer than the fused set: the pre-ranker scores them all, the ranker only what it keeps
    ranking = kept * flops_per_candidate(pipeline.ranker) + (size * flops_per_candidate(pre) if kept < size else 0.0)
    pool = min(float(pipeline.reranker.config.get("mmr_pool", kept)), kept)
    return {"recall": b * len(pipeline.recalls), "fusion": b * size, "ranking": b * ranking,
            "rerank": b * pool * slate_size}


@dataclass(frozen=True)
class StageCost:
    """One stage's fitted latency: ``fixed_ms + per_unit_ms x units`` per batch."""

    fixed_ms: float
    per_unit_ms: float

    def ms(self, units: float | np.ndarray) -> float | np.ndarray:
        return self.fixed_ms + self.per_unit_ms * units


@dataclass(frozen=True)
class ResourceProfile:
    """Per-stage latency models fitted by :func:`calibrate`, with what they were measured on."""

    stages: dict[str, StageCost]
    slate_size: int
    points: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (units, median ms) measured
    machine: str = ""
    threads: int = 1

    def batch_ms(self, pipeline: Pipeline, batch_size: int) -> dict[str, float]:
        """Predicted milliseconds of each stage for one batch of ``pipeline``."""
        return self.ms_of(stage_units(pipeline, batch_size, self.slate_size))

    def ms_of(self, units: dict[str, float]) -> dict[str, float]:
        """Predicted milliseconds of each stage for a batch's work ``units`` (:func:`stage_units`)."""
        return {s: float(self.stages[s].ms(units[s])) for s in STAGES}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> ResourceProfile:
        data = json.loads(text)
        missing = [s for s in STAGES if s not in data.get("stages", {})]
        if missing:
            raise ConfigError(f"a resource profile must have every stage {list(STAGES)} (missing {missing})")
        return cls({s: StageCost(**data["stages"][s]) for s in STAGES}, int(data["slate_size"]),
                   {s: [tuple(p) for p in v] for s, v in data.get("points", {}).items()},
                   data.get("machine", ""), int(data.get("threads", 1)))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> ResourceProfile:
        return cls.from_json(Path(path).read_text())


def time_stages(pipeline: Pipeline, world: World, users: np.ndarray, slate_size: int, *, repeats: int = 3,
                seed: int = 0) -> dict[str, float]:
    """Median wall-clock milliseconds of each stage serving the requests of ``users`` (one batch) through
    ``pipeline``, over ``repeats`` runs after one warm-up; the world and the pipeline are not changed (no
    learning, no world step)."""
    check_int("repeats", repeats, 1)
    batch = RequestBatch.of(world, users, np.arange(len(users)))
    catalog = CatalogView.of(world)
    laps: dict[str, list[float]] = {s: [] for s in STAGES}
    for r in range(repeats + 1):
        clock: dict[str, float] = {}
        with torch.no_grad():
            pipeline.serve(batch, catalog, np.random.default_rng([seed, r]), slate_size, clock=clock)
        if r:  # the first run warms caches and allocators
            for s in STAGES:
                laps[s].append(1000.0 * clock[s])
    return {s: statistics.median(v) for s, v in laps.items()}


def _fit(points: Sequence[tuple[float, float]]) -> StageCost:
    """Least squares of ``ms = fixed + per_unit x units`` with both coefficients kept >= 0."""
    x = np.array([p[0] for p in points], np.float64)
    y = np.array([p[1] for p in points], np.float64)
    if np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        if intercept < 0:  # through the origin
            slope, intercept = float(x @ y / (x @ x)), 0.0
        if slope < 0:
            slope, intercept = 0.0, float(y.mean())
    else:
        slope, intercept = 0.0, float(y.mean())
    return StageCost(float(intercept), float(slope))


def calibrate(world: World, pipelines: Sequence[Pipeline], slate_size: int, *,
              batch_sizes: Sequence[int] = (32, 128, 512), repeats: int = 3, seed: int = 0) -> ResourceProfile:
    """Time every stage of each of ``pipelines`` (configs that differ in fusion size, ranker width, ... make
    the per-unit costs identifiable) at each of ``batch_sizes`` and fit each stage's latency model."""
    if not pipelines:
        raise ConfigError("`pipelines` must name at least one pipeline to time (got none)")
    sizes = [int(check_int("batch_sizes", b, 1, world.cfg.num_users)) for b in batch_sizes]
    rng = np.random.default_rng(seed)
    points: dict[str, list[tuple[float, float]]] = {s: [] for s in STAGES}
    for pipeline in pipelines:
        for b in sizes:
            users = rng.choice(world.cfg.num_users, size=b, replace=False)
            ms = time_stages(pipeline, world, users, slate_size, repeats=repeats, seed=seed)
            units = stage_units(pipeline, b, slate_size)
            for s in STAGES:
                points[s].append((units[s], ms[s]))
    return ResourceProfile({s: _fit(points[s]) for s in STAGES}, slate_size, points,
                           f"{platform.machine()} {platform.processor() or ''}".strip(), torch.get_num_threads())


RESOURCE_KEYS = ("latency_p50_ms", "latency_p99_ms", "compute_ms_per_request", "flops_per_request")  # window_costs'


def window_costs(profile: ResourceProfile, pipelines: Sequence[Pipeline], log: InteractionLog) -> dict[str, float]:
    """A window's resource metrics from the profile: every request's latency is its batch's (the requests of
    one simulation step served by one pipeline), predicted stage by stage.

    Returns ``latency_p50_ms``, ``latency_p99_ms`` (over requests), ``compute_ms_per_request`` (a batch's
    milliseconds shared by its requests) and ``flops_per_request`` (the ranker's forward passes)."""
    req = log.requests
    if len(req["request"]) == 0:
        return dict.fromkeys(RESOURCE_KEYS, float("nan"))
    keys, counts = np.unique(np.stack([req["step"], req["pipeline"]]), axis=1, return_counts=True)
    latency = np.empty(len(counts))
    flops = np.empty(len(counts))
    for j, ((_, p), n) in enumerate(zip(keys.T, counts)):
        units = stage_units(pipelines[int(p)], int(n), profile.slate_size)
        latency[j] = sum(profile.ms_of(units).values())
        flops[j] = units["ranking"]  # the ranker's forward passes over every fused candidate
    per_request = np.repeat(latency, counts)
    return {"latency_p50_ms": float(np.percentile(per_request, 50)),
            "latency_p99_ms": float(np.percentile(per_request, 99)),
            "compute_ms_per_request": float(latency.sum() / counts.sum()),
            "flops_per_request": float(flops.sum() / counts.sum())}


def describe(profile: ResourceProfile) -> str:
    """One line per stage: the fitted model and the measured range."""
    lines = []
    for s in STAGES:
        c, pts = profile.stages[s], profile.points.get(s, [])
        span = f" (measured {min(p[1] for p in pts):.2f}-{max(p[1] for p in pts):.2f} ms)" if pts else ""
        lines.append(f"{s}: {c.fixed_ms:.3f} ms + {c.per_unit_ms:.3g} ms/unit{span}")
    return "\n".join(lines)
