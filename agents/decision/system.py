"""The system graph: router -> per-route pipeline (recall routes -> fusion -> ranking -> re-ranking) -> slate.

``Simulation(world, system).window(n)`` serves ``n`` requests of concurrent user sessions through the
system and returns the columnar :class:`InteractionLog` (request, user, segment, pipeline, item,
position, route provenance, scores, response); then every agent observes that log and learns.
Systems are built from configs in ``agents.decision.configs`` (``static_baseline``: the usual
hand-tuned fixed pipeline with one model for everyone).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.decision.context import Candidates, CatalogView, RequestBatch
from agents.decision.features import ImpressionRecorder
from agents.decision.functional import SegmentRouter
from agents.decision.fusion import MultiTaskFusion, QuotaFusion
from agents.decision.ranking import PreRanker, TorchRanker
from agents.decision.recall import RecallAgent
from agents.decision.rerank import Reranker
from envs.config import WorldConfig
from envs.items import ITEM_FEATURES
from envs.log import CANDIDATE_COLUMNS, IMPRESSION_COLUMNS, REQUEST_COLUMNS, InteractionLog
from envs.reward import ResponseReward
from envs.sessions import SessionBatch
from envs.validation import ConfigError, check_int, check_probability
from envs.world import World

__all__ = ["Pipeline", "Served", "Simulation", "System", "feature_dim", "input_dims", "probe_inputs"]

log = logging.getLogger(__name__)

SYSTEM_STREAM = 0x5157  # keys the per-step generator of the served system's own randomness


def input_dims(cfg: WorldConfig) -> tuple[int, int]:
    """(observable user features, item embedding size) of a world: what sizes a ranker's feature set."""
    return len(cfg.segments) + cfg.embedding_dim + 3, cfg.embedding_dim


def feature_dim(cfg: WorldConfig, num_routes: int) -> int:
    """Width of the ranker's (request, candidate) features for a world and a number of routes."""
    user, d = input_dims(cfg)
    item = d + len(ITEM_FEATURES)
    return user + item + d + num_routes + 1  # + 1: the position column


@dataclass
class Served:
    """What a pipeline served to a batch: slates and their provenance."""

    items: np.ndarray  # (B, K)
    route: np.ndarray  # (B, K)
    score: np.ndarray  # (B, K) the ranker's predicted click probability of each shown item
    p_click: np.ndarray  # (B, K) the click probability served: score fusion's calibration of ``score``
    features: np.ndarray  # (B, K, Fin) ranker features of the shown items (for learning)
    candidates: Candidates  # the fused candidate set, (B, C)
    routes: list[Candidates]  # each route's own output


class Pipeline:
    """Recall routes -> quota fusion -> (a cascade's pre-ranker ->) multi-task ranker -> score fusion -> re-ranker."""

    def __init__(
        self,
        name: str,
        recalls: list[RecallAgent],
        fusion: QuotaFusion,
        ranker: TorchRanker,
        scorer: MultiTaskFusion,
        reranker: Reranker,
        preranker: PreRanker | None = None,
    ) -> None:
        if not recalls:
            raise ConfigError(f"pipeline `{name}` must have at least one recall route (got none)")
        self.name, self.recalls, self.fusion, self.ranker = name, recalls, fusion, ranker
        self.scorer, self.reranker, self.preranker = scorer, reranker, preranker

    @property
    def agents(self) -> list:
        pre = [] if self.preranker is None else [self.preranker]
        return [*self.recalls, self.fusion, *pre, self.ranker, self.scorer, self.reranker]

    def swapped(self, name: str, swap: dict[int, Any]) -> Pipeline:
        """A pipeline named ``name`` with the same agents but those ``swap`` maps (by ``id``) to others: a concurrent
        control's copy of this pipeline with its copies of some agents, the rest shared. An agent inside an ensemble
        ranker cannot be swapped (the ensemble holds it): that is an error, not a silent no-op."""
        for member in getattr(self.ranker, "members", ()):
            if id(member) in swap:
                raise ConfigError(f"pipeline `{self.name}`: `{member.name}` is a member of the ensemble ranker "
                                  f"`{self.ranker.name}` and cannot be swapped for a control copy; evolve the ensemble "
                                  f"or a ranker that serves alone")
        s = lambda a: None if a is None else swap.get(id(a), a)  # noqa: E731
        return Pipeline(name, [s(r) for r in self.recalls], s(self.fusion), s(self.ranker), s(self.scorer),
                        s(self.reranker), s(self.preranker))

    def serve(self, batch: RequestBatch, catalog: CatalogView, rng: np.random.Generator, slate_size: int,
              clock: dict[str, float] | None = None) -> Served:
        """Serve one batch through recall -> fusion -> ranking -> re-ranking. ``clock`` (optional) accumulates the
        wall-clock seconds of each stage (``recall``, ``fusion``, ``ranking`` with a cascade's pre-ranker, ``rerank``):
        the resource model's measurements of this very code (:mod:`agents.decision.resources`)."""
        tick = time.perf_counter() if clock is not None else 0.0

        def lap(stage: str) -> None:
            nonlocal tick
            if clock is not None:
                now = time.perf_counter()
                clock[stage] = clock.get(stage, 0.0) + now - tick
                tick = now

        routes = [r.act(batch, catalog, rng) for r in self.recalls]
        lap("recall")
        cands = self.fusion.act(routes)
        lap("fusion")
        if self.preranker is not None:
            cands = self.preranker.narrow(batch, cands, catalog)
        heads = self.ranker.act(batch, cands, catalog)
        score = self.scorer.act(heads)
        lap("ranking")
        chosen = self.reranker.act(score, cands, catalog, slate_size)
        lap("rerank")
        items = np.take_along_axis(cands.items, chosen, axis=1)
        if (items < 0).any():
            raise RuntimeError(
                f"pipeline `{self.name}` could not fill slates of {slate_size}: too few candidates "
                f"(fusion size {self.fusion.config['size']}); raise recall k or fusion size"
            )
        route = np.take_along_axis(cands.route, chosen, axis=1)
        p_click = np.take_along_axis(heads["click"], chosen, axis=1)
        position = np.broadcast_to(np.arange(slate_size), items.shape)
        feats = self.ranker.features_of(batch, items, route, catalog, position)
        return Served(items, route, p_click, self.scorer.calibrate(p_click), feats, cands, routes)


class System:
    """A router over pipelines; route names are shared so provenance is comparable across pipelines."""

    def __init__(self, pipelines: list[Pipeline], router: SegmentRouter, route_names: list[str]) -> None:
        names = [p.name for p in pipelines]
        if len(set(names)) != len(names):
            raise ConfigError(f"pipeline names must be unique (got {names})")
        if router.pipeline_names != names:
            raise ConfigError(f"router pipelines {router.pipeline_names} must match the system's {names}")
        self.pipelines, self.router, self.route_names = pipelines, router, list(route_names)
        for p in pipelines:
            for r in p.recalls:
                if r.name not in self.route_names:
                    raise ConfigError(f"recall route `{r.name}` must be one of the system's routes {self.route_names}")
                r.route_id = self.route_names.index(r.name)

    @property
    def agents(self) -> list:
        seen, out = set(), []
        for a in [self.router, *(a for p in self.pipelines for a in p.agents)]:
            if id(a) not in seen:
                seen.add(id(a))
                out.append(a)
        return out

    def observe(self, log: InteractionLog) -> None:
        """Every agent learns once per window, from the requests of the pipelines it serves in."""
        self.router.observe(log)
        members: dict[int, tuple[object, list[int]]] = {}
        for i, p in enumerate(self.pipelines):
            for agent in p.agents:
                members.setdefault(id(agent), (agent, []))[1].append(i)
        for agent, pipes in members.values():
            whole = len(pipes) == len(self.pipelines)
            agent.observe(log if whole else log.where(np.isin(log.requests["pipeline"], pipes)))


class Simulation:
    """Concurrent sessions of the world's users served by a system, window after window."""

    def __init__(
        self,
        world: World,
        system: System,
        concurrency: int = 1000,
        slate_size: int = 10,
        candidate_log_rate: float = 0.05,
        seed: int = 0,
        max_session_steps: int = 200,
    ) -> None:
        check_int("concurrency", concurrency, 1)
        check_int("slate_size", slate_size, 1)
        check_probability("candidate_log_rate", candidate_log_rate)
        self.world, self.system, self.slate_size = world, system, slate_size
        self.candidate_log_rate = candidate_log_rate
        self.seed = int(seed)
        self.sessions = SessionBatch(world, concurrency, slate_size, slate_size, ResponseReward(), max_session_steps)
        self.sessions.start(np.arange(concurrency))
        self.next_request = 0
        self.windows = 0
        # set an ImpressionRecorder to keep what the rankers saw for offline evaluation (it reads, never draws)
        self.recorder: ImpressionRecorder | None = None

    def window(self, num_requests: int, learn: bool = True) -> InteractionLog:
        """Serve ``num_requests`` requests (whole steps of all sessions), then let the agents learn."""
        check_int("num_requests", num_requests, 1)
        world, system, sessions = self.world, self.system, self.sessions
        n = sessions.n
        imp, req, cand = [], [], []
        served_requests = 0
        while served_requests < num_requests:
            # the system's own randomness (exploration routes, candidate logging): a generator per step, so two runs
            # of one seed draw the same numbers at the same step whatever they served before
            rng = np.random.default_rng([self.seed, SYSTEM_STREAM, world.steps])
            slots = np.arange(n)
            request = self.next_request + slots
            self.next_request += n
            batch = RequestBatch.of(world, sessions.users, request)
            catalog = CatalogView.of(world)
            pipe = system.router.act(batch)
            items = np.zeros((n, self.slate_size), np.int64)
            route = np.zeros((n, self.slate_size), np.int16)
            score = np.zeros((n, self.slate_size), np.float32)
            served_p = np.zeros((n, self.slate_size), np.float32)
            scored = np.zeros(n, np.int32)
            feats = [None] * len(system.pipelines)
            rows_of = [np.flatnonzero(pipe == i) for i in range(len(system.pipelines))]
            for i, p in enumerate(system.pipelines):  # a loop over pipelines (a handful)
                rows = rows_of[i]
                if not len(rows):
                    continue
                out = p.serve(batch.subset(rows), catalog, rng, self.slate_size)
                items[rows], route[rows], score[rows], served_p[rows] = out.items, out.route, out.score, out.p_click
                scored[rows] = out.candidates.valid.sum(axis=1)
                feats[i] = out.features
                if self.candidate_log_rate > 0:
                    keep = rng.random(len(rows)) < self.candidate_log_rate
                    for r in out.routes:
                        sel = r.items[keep]
                        valid = sel >= 0
                        cand.append({
                            "request": np.repeat(request[rows][keep], sel.shape[1])[valid.ravel()],
                            "user": np.repeat(batch.users[rows][keep], sel.shape[1])[valid.ravel()],
                            "item": sel[valid], "route": r.route[keep][valid], "score": r.scores[keep][valid],
                        })
            segment = batch.segment.copy()
            result = sessions.serve_items(slots, items)
            resp = result.response
            if self.recorder is not None:
                self.recorder.add(batch, items, route, catalog, resp.click, resp.like, resp.dwell,
                                  len(system.route_names), len(world.cfg.segment_names))
            for i, p in enumerate(system.pipelines):  # ranker feedback, per pipeline
                rows = rows_of[i]
                if len(rows):
                    k = self.slate_size
                    p.ranker.remember(
                        feats[i].reshape(len(rows) * k, -1), np.repeat(segment[rows], k),
                        resp.click[rows].ravel(), resp.like[rows].ravel(), resp.dwell[rows].ravel(),
                    )
            done = result.terminated | result.truncated
            returned = np.zeros(n, bool)
            churned = np.zeros(n, bool)
            returned[done], churned[done] = result.ended.returned, result.ended.churned
            k = self.slate_size
            imp.append({
                "request": np.repeat(request, k), "step": np.full(n * k, world.steps), "user": np.repeat(batch.users, k),
                "segment": np.repeat(segment, k), "pipeline": np.repeat(pipe, k), "item": items.ravel(),
                "position": np.tile(np.arange(k), n), "route": route.ravel(), "score": score.ravel(),
                "p_click": served_p.ravel(),
                "creator": catalog.creator[items].ravel(), "topic": catalog.topic[items].ravel(),
                "tier": catalog.tier[items].ravel(), "freshness": catalog.column("freshness")[items].ravel(),
                "risk": catalog.column("risk")[items].ravel(), "cost": world.catalog.cost[items].ravel(),
                "click": resp.click.ravel(), "dwell": resp.dwell.ravel(),
                "like": resp.like.ravel(), "violation": resp.violation.ravel(),
                "click_exp": resp.expected_click.ravel(), "dwell_exp": resp.expected_dwell.ravel(),
                "like_exp": resp.expected_like.ravel(),
            })
            return_exp = np.zeros(n, np.float32)
            churn_exp = np.zeros(n, np.float32)
            return_exp[done], churn_exp[done] = result.ended.return_prob, result.ended.churn_prob
            req.append({
                "request": request, "step": np.full(n, world.steps), "user": batch.users.copy(), "segment": segment,
                "pipeline": pipe, "candidates_scored": scored, "clicks": resp.click.sum(axis=1),
                "dwell": resp.dwell.sum(axis=1), "violations": resp.violation.sum(axis=1),
                "session_end": done, "returned": returned, "churned": churned,
                "clicks_exp": resp.expected_clicks, "dwell_exp": resp.expected_dwell.sum(axis=1),
                "exit_exp": resp.exit_prob, "return_exp": return_exp, "churn_exp": churn_exp,
            })
            sessions.start(slots[done])
            world.tick()
            served_requests += n
        log = InteractionLog(
            _stack(imp, IMPRESSION_COLUMNS), _stack(req, REQUEST_COLUMNS), _stack(cand, CANDIDATE_COLUMNS),
            list(system.route_names), list(world.cfg.segment_names), world.cfg.num_items, world.cfg.num_creators,
        )
        if learn:
            system.observe(log)
        if self.recorder is not None:
            self.recorder.end_window()
        self.windows += 1
        return log


def _stack(rows: list[dict[str, np.ndarray]], columns: dict[str, type]) -> dict[str, np.ndarray]:
    if not rows:
        return {c: np.zeros(0, t) for c, t in columns.items()}
    return {c: np.concatenate([r[c] for r in rows]).astype(t, copy=False) for c, t in columns.items()}


def probe_inputs(world: World, system: System, users: np.ndarray | int = 256, slate_size: int = 10,
                 seed: int = 0) -> list[tuple[Any, tuple]]:
    """``(agent, act arguments)`` for every agent of ``system``: what its ``act`` receives on one batch of requests
    of the world's users, the probe :func:`agents.protocol.promote` calls ``act`` with before and after ``observe``.

    ``users``: the users who ask (e.g. those of the log the agents are checked on, so the probe meets what the log
    taught), or a number of users spread over the population (no random draw). Every pipeline serves the whole
    batch, stage by stage, on a deep copy of the system, so serving's side effects (exposure counts) stay off the
    agents; a recall route's random generator is a fresh ``default_rng(seed)`` (promote copies the arguments for
    each call, so both calls draw the same numbers).
    """
    if isinstance(users, (int, np.integer)):
        check_int("users", int(users), 1)
        users = np.linspace(0, world.cfg.num_users - 1, min(int(users), world.cfg.num_users)).astype(np.int64)
    users = np.asarray(users, dtype=np.int64)
    if users.ndim != 1 or not len(users) or users.min() < 0 or users.max() >= world.cfg.num_users:
        raise ConfigError(f"`users` must be a non-empty 1-D array of user ids in [0, {world.cfg.num_users}) (got {users!r:.80})")
    shadow = copy.deepcopy(system)
    twin = {id(a): b for a, b in zip(shadow.agents, system.agents)}
    batch = RequestBatch.of(world, users, np.arange(len(users)))
    catalog = CatalogView.of(world)
    out: dict[int, tuple[Any, tuple]] = {id(shadow.router): (twin[id(shadow.router)], (batch,))}
    for p in shadow.pipelines:
        routes = []
        for r in p.recalls:
            out.setdefault(id(r), (twin[id(r)], (batch, catalog, np.random.default_rng(seed))))
            routes.append(r.act(batch, catalog, np.random.default_rng(seed)))
        out.setdefault(id(p.fusion), (twin[id(p.fusion)], (routes,)))
        cands = p.fusion.act(routes)
        out.setdefault(id(p.ranker), (twin[id(p.ranker)], (batch, cands, catalog)))
        heads = p.ranker.act(batch, cands, catalog)
        out.setdefault(id(p.scorer), (twin[id(p.scorer)], (heads,)))
        out.setdefault(id(p.reranker), (twin[id(p.reranker)], (p.scorer.act(heads), cands, catalog, slate_size)))
    return list(out.values())
