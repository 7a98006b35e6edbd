"""Interleaved tests: both systems rank every request, the user sees one slate mixing the two, clicks say who won.

An A/B test compares two groups of users; an interleaved test compares two rankings *within each request*, so the
user-to-user variance that dominates an A/B test's per-request outcomes cancels. This module holds:

* the interleaving methods, vectorised over requests (a loop over the K slate positions only), with ``-1`` padding
  in the ranked lists and every item at most once per slate:

  - :func:`team_draft` (Radlinski et al. 2008) and its several-ranker form :func:`team_draft_multileave` (Schuth
    et al. 2014): round after round, the teams in a random order each add their best item not yet in the slate;
    an item both lists hold is added once, by (and credited to) the team whose turn it is;
  - :func:`probabilistic_interleave` (Hofmann et al. 2011): at each position a fair coin picks a team, which draws
    an item from the softmax of its ranking over the items not yet shown (``P(rank r) ~ 1 / (r + 1)^tau``);

* credit and the test: :func:`team_credit` (per request, each team's clicks, expected clicks ``click_exp`` when
  the log has them, or any impression column) and :func:`preference_test` (the per-request difference challenger
  - incumbent, or its sign, with the user-clustered t-interval of its mean
  (:func:`rewards.stats.clustered_mean_interval`): effect, interval, p and a verdict);

* serving: :func:`interleaved_system` wraps an incumbent and a challenger system as one system of one
  :class:`InterleavedPipeline`, which, for every request batch, lets each side's router pick its pipeline, has
  each side rank the SAME requests (its top ``length`` items in its re-ranker's order, default ``2 K``: the first K
  are the slate it would serve alone), interleaves them and records each impression's team.
  :meth:`agents.evolution.deployment.Deployment.serve_interleaved` serves a window of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.decision.context import Candidates, CatalogView, RequestBatch
from agents.decision.ranking import pair_features
from agents.decision.system import Served, System
from envs.log import InteractionLog
from envs.validation import ConfigError, check_choice, check_int, check_range
from rewards.stats import clustered_mean_interval

__all__ = ["CREDIT_METRICS", "METHODS", "STATISTICS", "InterleavedPipeline", "Interleaving", "PreferenceTest",
           "adjust_for_design", "design_covariates",
           "interleave", "interleaved_system", "preference_test", "probabilistic_interleave", "team_credit",
           "team_draft", "team_draft_multileave"]

METHODS = ("team_draft", "probabilistic")
STATISTICS = ("difference", "wins")  # the credit difference per request, or its sign
# credit metric -> impression column; "expected_clicks" is the choice model's click probability where the log has it
CREDIT_METRICS = {"clicks": "click", "expected_clicks": "click_exp", "dwell": "dwell", "likes": "like",
                  "violations": "violation"}


@dataclass
class Interleaving:
    """An interleaved slate per request: ``items`` (B, K) (``-1`` where no team had an item left), ``team`` (B, K)
    the team that placed each item (``-1`` with no item), ``rank`` (B, K) its index in that team's ranked list."""

    items: np.ndarray
    team: np.ndarray
    rank: np.ndarray


def _lists(rankings: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    r = np.stack([np.asarray(x) for x in rankings]) if not isinstance(rankings, np.ndarray) else rankings
    if r.ndim != 3 or r.shape[0] < 2 or r.shape[2] < 1:
        raise ConfigError(f"`rankings` must be >= 2 ranked lists of shape (B, L), L >= 1 (got shape {r.shape})")
    return r.astype(np.int64, copy=False)


def _take(items: np.ndarray, avail: np.ndarray, team: np.ndarray, idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Place ``items[team, row, idx]``; mark that item taken in every list; returns the items (-1 where team < 0)."""
    ok = team >= 0
    t = np.where(ok, team, 0)
    item = np.where(ok, items[t, rows, idx], -1)
    avail &= ~((items == item[None, :, None]) & ok[None, :, None])
    return item


def team_draft_multileave(rankings: Sequence[np.ndarray] | np.ndarray, slate_size: int,
                          rng: np.random.Generator | None = None, order: np.ndarray | None = None) -> Interleaving:
    """Team-draft multileaving of M ranked lists per request ((M, B, L) or M arrays (B, L), ``-1`` padding).

    Rounds: in each round every team that still has an item left adds its highest-ranked item not yet in the slate,
    the teams in the round's order. Concretely, at each position the teams with items left that have placed the
    fewest items are due, and the one first in ``order[:, r]`` picks, ``r`` being that fewest count (the round).
    ``order`` (B, R, M): a permutation of the teams per request and round (R >= ceil(K / M)); drawn from ``rng``
    when not given. With M = 2 this is team-draft interleaving (:func:`team_draft`).
    """
    items = _lists(rankings)
    m, b, length = items.shape
    check_int("slate_size", slate_size, 1)
    rounds = -(-slate_size // m)
    if order is None:
        if rng is None:
            raise ConfigError("team-draft needs `rng` (a numpy Generator) or an explicit `order` (got neither)")
        order = rng.permuted(np.broadcast_to(np.arange(m), (b, rounds, m)), axis=2)
    order = np.asarray(order)
    if order.shape[0] != b or order.shape[2] != m or order.ndim != 3 or order.shape[1] < rounds:
        raise ConfigError(f"`order` must have shape (B={b}, R>={rounds}, M={m}) (got {order.shape})")
    priority = np.argsort(order, axis=2)  # priority[b, r, team]: the team's place in round r's order
    avail = items >= 0
    count = np.zeros((b, m), np.int64)
    rows = np.arange(b)
    out = Interleaving(np.full((b, slate_size), -1, np.int64), np.full((b, slate_size), -1, np.int64),
                       np.full((b, slate_size), -1, np.int64))
    big = np.iinfo(np.int64).max // 4
    for k in range(slate_size):  # a loop over slate positions, vectorised over requests
        left = avail.any(axis=2).T  # (B, M) teams with an item left
        cnt = np.where(left, count, big)
        fewest = cnt.min(axis=1)
        rnd = np.minimum(fewest, order.shape[1] - 1)
        due = left & (cnt == fewest[:, None])
        team = np.where(due, priority[rows, rnd], big).argmin(axis=1)
        team = np.where(left.any(axis=1), team, -1)
        idx = avail[np.maximum(team, 0), rows].argmax(axis=1)  # the team's best item not yet in the slate
        out.items[:, k] = _take(items, avail, team, idx, rows)
        out.team[:, k], out.rank[:, k] = team, np.where(team >= 0, idx, -1)
        count[rows[team >= 0], team[team >= 0]] += 1
    return out


def team_draft(a: np.ndarray, b: np.ndarray, slate_size: int, rng: np.random.Generator | None = None,
               coins: np.ndarray | None = None) -> Interleaving:
    """Team-draft interleaving of two ranked lists per request, ``a`` (team 0) and ``b`` (team 1), each (B, L).

    Each round both teams add their best item not yet in the slate; ``coins[:, r]`` (B, R) decides who goes first
    in round ``r``: 0 team ``a``, 1 team ``b`` (drawn from ``rng`` when not given). A team whose list is used up
    drops out and the other fills the slate.
    """
    if coins is None:
        return team_draft_multileave([a, b], slate_size, rng)
    first = np.asarray(coins).astype(np.int64)
    if first.ndim != 2 or not np.isin(first, (0, 1)).all():
        raise ConfigError(f"`coins` must be a (B, R) array of 0 (team a first) and 1 (team b first) (got {first!r:.80})")
    return team_draft_multileave([a, b], slate_size, order=np.stack([first, 1 - first], axis=2))


def probabilistic_interleave(a: np.ndarray, b: np.ndarray, slate_size: int, rng: np.random.Generator,
                             tau: float = 3.0) -> Interleaving:
    """Probabilistic interleaving (Hofmann et al. 2011) of two ranked lists per request, each (B, L).

    At each position a fair coin picks a team (the other one if the picked team has no item left); the team draws
    an item among those of its list not yet in the slate with probability ``~ 1 / (r + 1)^tau``, ``r`` the item's
    rank in the list (a softmax ranker; ``tau`` large: its best item, team-draft like; 0: uniform). The credit is
    assigned to the team that drew (not marginalised over assignments).
    """
    check_range("tau", tau, 0.0)
    items = _lists([a, b])
    _, bsz, length = items.shape
    check_int("slate_size", slate_size, 1)
    weight = 1.0 / (np.arange(length) + 1.0) ** tau
    avail = items >= 0
    rows = np.arange(bsz)
    out = Interleaving(np.full((bsz, slate_size), -1, np.int64), np.full((bsz, slate_size), -1, np.int64),
                       np.full((bsz, slate_size), -1, np.int64))
    for k in range(slate_size):  # a loop over slate positions, vectorised over requests
        left = avail.any(axis=2).T  # (B, 2)
        coin = rng.integers(0, 2, bsz)
        team = np.where(left[rows, coin], coin, 1 - coin)
        team = np.where(left.any(axis=1), team, -1)
        w = np.where(avail[np.maximum(team, 0), rows], weight, 0.0)  # (B, L)
        cum = np.cumsum(w, axis=1)
        u = rng.random(bsz) * cum[:, -1]
        idx = np.minimum((cum <= u[:, None]).sum(axis=1), length - 1)
        out.items[:, k] = _take(items, avail, team, idx, rows)
        out.team[:, k], out.rank[:, k] = team, np.where(team >= 0, idx, -1)
    return out


def interleave(method: str, a: np.ndarray, b: np.ndarray, slate_size: int, rng: np.random.Generator,
               tau: float = 3.0) -> Interleaving:
    """Interleave ``a`` (team 0) and ``b`` (team 1) by ``method`` (one of :data:`METHODS`)."""
    check_choice("method", method, list(METHODS))
    if method == "team_draft":
        return team_draft(a, b, slate_size, rng)
    return probabilistic_interleave(a, b, slate_size, rng, tau)


# ---------------------------------------------------------------------------------------------- credit and test
def credit_column(log: InteractionLog, metric: str) -> str:
    """The impression column a credit metric reads: ``expected_clicks`` reads ``click_exp`` where the log has it and
    falls back to the realised ``click`` where it does not."""
    check_choice("credit metric", metric, list(CREDIT_METRICS))
    column = CREDIT_METRICS[metric]
    return column if column in log.impressions else "click"


def team_credit(log: InteractionLog, team: np.ndarray, metric: str = "clicks",
                teams: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per request of the test (requests with at least one impression of team >= 0), each team's credit: the sum of
    ``metric`` (see :data:`CREDIT_METRICS`, :func:`credit_column`) over the impressions it placed.

    ``team``: (impressions,) the team of each impression of ``log`` (-1: not part of the test). Returns the
    requests' ids (n,), their users (n,) and the credit (n, teams).
    """
    imp = log.impressions
    team = np.asarray(team).ravel()
    if len(team) != len(imp["request"]):
        raise ValueError(f"`team` must have one entry per impression (got {len(team)} for {len(imp['request'])})")
    value = imp[credit_column(log, metric)].astype(np.float64)
    inside = team >= 0
    requests, index = np.unique(imp["request"][inside], return_inverse=True)
    n = len(requests)
    credit = np.bincount(index * teams + team[inside], weights=value[inside], minlength=n * teams).reshape(n, teams)
    users = np.zeros(n, np.int64)
    users[index] = imp["user"][inside]
    return requests, users, credit


def design_covariates(log: InteractionLog, team: np.ndarray, requests: np.ndarray, method: str) -> np.ndarray:
    """The randomised part of each request's interleaving, centred at its design mean: (n, m) ``team - 1/2`` of the
    positions the coins decide (team draft: every round's first pick, the even positions; probabilistic: every
    position). Regressing the credit difference on them (:func:`preference_test` ``covariates``) removes the
    variance due to which team happened to go first without biasing the mean, because the coins are independent of
    the rankers (a CUPED-style adjustment by design variables)."""
    check_choice("method", method, list(METHODS))
    imp = log.impressions
    pos = imp["position"].astype(np.int64)
    step = 2 if method == "team_draft" else 1
    width = (int(pos.max(initial=0)) // step) + 1
    idx = np.searchsorted(requests, imp["request"])
    keep = (np.asarray(team) >= 0) & (pos % step == 0) & np.isin(imp["request"], requests)
    x = np.zeros((len(requests), width))
    x[idx[keep], pos[keep] // step] = np.asarray(team)[keep] - 0.5
    return x


@dataclass
class PreferenceTest:
    """An interleaved test's result: ``effect`` the mean per-request statistic (challenger - incumbent: the credit
    difference, or its sign for ``wins``), its ``1 - alpha`` user-clustered interval and p-value; the requests
    the challenger won, lost and tied; ``verdict``: ``challenger`` (interval above ``min_effect``), ``incumbent``
    (interval below ``-min_effect``) or ``none``."""

    metric: str
    statistic: str
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    n_requests: int
    n_users: int
    wins: int
    losses: int
    ties: int
    verdict: str
    column: str  # the impression column the credit read

    @property
    def preference(self) -> float:
        """``(wins + ties / 2) / n - 1/2``: the challenger's share of won comparisons above one half."""
        return (self.wins + 0.5 * self.ties) / max(self.n_requests, 1) - 0.5

    def as_dict(self) -> dict[str, float | int | str]:
        return {f"interleaving/{k}": v for k, v in self.__dict__.items()} | {"interleaving/preference": self.preference}


def adjust_for_design(stat: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    """``stat`` less its least-squares fit on the centred design ``covariates`` (see :func:`design_covariates`)."""
    x = np.asarray(covariates, np.float64)
    if x.ndim != 2 or len(x) != len(stat):
        raise ValueError(f"`covariates` must be (n, m) with one row per request (got {x.shape} for {len(stat)} requests)")
    x = x[:, np.ptp(x, axis=0) > 0]  # constant columns carry nothing
    if len(stat) <= x.shape[1] + 2 or not x.shape[1]:
        return stat
    beta, *_ = np.linalg.lstsq(np.column_stack([np.ones(len(stat)), x]), stat, rcond=None)
    return stat - x @ beta[1:]


def preference_test(credit: np.ndarray, users: np.ndarray | None = None, alpha: float = 0.05,
                    statistic: str = "difference", min_effect: float = 0.0, metric: str = "clicks",
                    column: str = "", covariates: np.ndarray | None = None) -> PreferenceTest:
    """Test an interleaved comparison: ``credit`` (n, 2) per request (incumbent's team, challenger's team), ``users``
    (n,) the clusters (None: requests independent). The per-request statistic is ``credit[:, 1] - credit[:, 0]``
    (``difference``) or its sign (``wins``); its mean is judged with the user-clustered ``1 - alpha`` t-interval.
    ``covariates`` (the design's randomised first picks, :func:`design_covariates`): the ``difference`` statistic is
    adjusted for them first (same mean in expectation, less variance)."""
    check_choice("statistic", statistic, list(STATISTICS))
    check_range("alpha", alpha, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    credit = np.asarray(credit, np.float64)
    if credit.ndim != 2 or credit.shape[1] != 2:
        raise ValueError(f"`credit` must be (n, 2): incumbent's and challenger's credit per request (got {credit.shape})")
    diff = credit[:, 1] - credit[:, 0]
    stat = np.sign(diff) if statistic == "wins" else diff
    if covariates is not None and statistic == "difference":
        stat = adjust_for_design(stat, covariates)
    effect, lo, hi, _, p = clustered_mean_interval(stat, users, 1 - alpha)
    verdict = "challenger" if lo > min_effect else "incumbent" if hi < -min_effect else "none"
    n_users = len(np.unique(users)) if users is not None else len(diff)
    return PreferenceTest(metric, statistic, effect, lo, hi, p, len(diff), n_users, int((diff > 0).sum()),
                          int((diff < 0).sum()), int((diff == 0).sum()), verdict, column)


# ---------------------------------------------------------------------------------------------- serving
def _by_identity(objects: Iterable[Any]) -> list[Any]:
    """Distinct objects (by identity, not equality), in order of first appearance: agents two sides share count once."""
    return list({id(o): o for o in objects}.values())


class _Router:
    """The interleaved system's router: every request to its one pipeline (not an evolvable agent)."""

    name = "interleaving_router"
    role = "router"

    def __init__(self, pipeline_names: list[str]) -> None:
        self.pipeline_names = list(pipeline_names)

    def act(self, batch: RequestBatch) -> np.ndarray:
        return np.zeros(len(batch), np.int64)

    def observe(self, log: InteractionLog) -> None:
        pass


class _Feedback:
    """Stands for the interleaved pipeline's ranker where the simulation hands it the shown items' feedback:
    each impression goes to the ranker of the pipeline that placed it, and only when the test learns."""

    def __init__(self, owner: InterleavedPipeline) -> None:
        self.owner = owner

    def remember(self, x: np.ndarray, segment: np.ndarray, click: np.ndarray, like: np.ndarray, dwell: np.ndarray) -> None:
        if not self.owner.learn or self.owner._source is None:
            return
        source = self.owner._source.ravel()
        for i, ranker in enumerate(self.owner._rankers):
            m = source == i
            if m.any():
                ranker.remember(x[m], segment[m], click[m], like[m], dwell[m])


class InterleavedPipeline:
    """One pipeline standing for two systems: for every request both rank, the user sees their interleaving.

    For a batch, each side's router picks the side's pipeline per request (once, when both sides share the router
    object); each side's pipeline ranks the requests routed to it: its top ``length`` items in its re-ranker's order
    (``Pipeline.serve`` with ``length`` slots: the first K are the slate it would serve alone). Requests both sides
    route to the same pipeline object are served by it once, its own slate, and are not part of the test (team -1).
    The other requests get the ``method``'s interleaving of the two lists (coins from ``rng``); every shown item
    keeps the score, served probability and route of the side that placed it. ``team_of`` gives each impression's
    team after the window (0 incumbent, 1 challenger, -1 outside the test).

    Side effects: both sides serve (recall draws, exposure counts of a capped re-ranker count ``length`` items per
    request); the shown items' feedback reaches the rankers that placed them only when ``learn`` (as set by
    :meth:`~agents.evolution.deployment.Deployment.serve_interleaved`). No candidate provenance is logged for an
    interleaved window (``routes`` is empty); ``candidates_scored`` counts both sides' candidates.
    """

    role = "pipeline"

    def __init__(self, incumbent: System, challenger: System, method: str, rng: np.random.Generator,
                 length: int | None = None, tau: float = 3.0, name: str = "interleaved") -> None:
        check_choice("method", method, list(METHODS))
        if length is not None:
            check_int("length", length, 1)
        missing = [r.name for p in challenger.pipelines for r in p.recalls if r.name not in incumbent.route_names]
        if missing:
            raise ConfigError(f"the challenger's recall routes must be among the running system's routes "
                              f"{incumbent.route_names} (got {missing})")
        self.name, self.sides, self.method, self.rng = name, (incumbent, challenger), method, rng
        self.length, self.tau, self.learn = length, tau, False
        self.ranker = _Feedback(self)
        self.records: list[tuple[np.ndarray, np.ndarray]] = []  # (request ids (B,), team (B, K)) per batch served
        self._rankers: list[Any] = []
        self._source: np.ndarray | None = None  # (B, K) index into _rankers of the last batch's shown items

    def _pipelines(self) -> list[Any]:
        return _by_identity(p for s in self.sides for p in s.pipelines)

    @property
    def recalls(self) -> list[Any]:
        return _by_identity(r for p in self._pipelines() for r in p.recalls)

    @property
    def agents(self) -> list[Any]:
        return _by_identity(a for p in self._pipelines() for a in p.agents)

    def serve(self, batch: RequestBatch, catalog: CatalogView, rng: np.random.Generator, slate_size: int) -> Served:
        inc, ch = self.sides
        b, k = len(batch), slate_size
        length = max(self.length or 2 * k, k)
        pick = [np.asarray(inc.router.act(batch))]
        pick.append(pick[0] if ch.router is inc.router else np.asarray(ch.router.act(batch)))
        ident = [np.array([id(p) for p in s.pipelines], np.int64)[pk] for s, pk in zip(self.sides, pick)]
        same = ident[0] == ident[1]
        lists = np.full((2, b, length), -1, np.int64)
        route = np.zeros((2, b, length), np.int16)
        score = np.zeros((2, b, length), np.float32)
        p_click = np.zeros((2, b, length), np.float32)
        owner = np.zeros((2, b), np.int64)
        rankers: dict[int, int] = {}
        cand_items: list[np.ndarray] = []
        for side, (system, pk) in enumerate(zip(self.sides, pick)):
            width = max((p.fusion.config["size"] for p in system.pipelines), default=1)
            c_items = np.full((b, width), -1, np.int64)
            for i, p in enumerate(system.pipelines):  # a loop over pipelines (a handful)
                rows = np.flatnonzero((pk == i) & ((side == 0) | ~same))
                if not len(rows):
                    continue
                n = min(length, int(p.fusion.config["size"]))
                out = p.serve(batch.subset(rows), catalog, rng, max(n, k))
                m = out.items.shape[1]
                lists[side, rows, :m], route[side, rows, :m] = out.items, out.route
                score[side, rows, :m], p_click[side, rows, :m] = out.score, out.p_click
                c_items[rows, : out.candidates.items.shape[1]] = out.candidates.items
                owner[side, rows] = rankers.setdefault(id(p.ranker), len(rankers))
            cand_items.append(c_items)
        self._rankers = self._ranker_list(rankers)
        mixed = interleave(self.method, lists[0], lists[1], k, self.rng, self.tau)
        team, rank = mixed.team, mixed.rank
        team[same], rank[same] = 0, np.arange(k)  # one pipeline: its own slate, outside the test
        if (np.take_along_axis(lists[0][same], rank[same], axis=1) < 0).any() or (mixed.items[~same] < 0).any():
            raise RuntimeError(f"interleaved pipeline `{self.name}` could not fill slates of {k}: the ranked lists "
                               "hold too few items")
        items = np.take_along_axis(lists[team, np.arange(b)[:, None]], rank[..., None], axis=2)[..., 0]
        at = (team, np.arange(b)[:, None], rank)
        shown_route, shown_score, shown_p = route[at], score[at], p_click[at]
        self._source = owner[team, np.arange(b)[:, None]]
        recorded = np.where(same[:, None], -1, team).astype(np.int8)
        self.records.append((batch.request.copy(), recorded))
        position = np.broadcast_to(np.arange(k), items.shape)
        num_routes = self.sides[0].pipelines[0].ranker.num_routes
        feats = pair_features(batch, items, shown_route, catalog, num_routes, position)
        every = np.concatenate(cand_items, axis=1)
        cands = Candidates(every, np.zeros(every.shape, np.float32), np.zeros(every.shape, np.int16))
        return Served(items, shown_route, shown_score, shown_p, feats, cands, [])

    def _ranker_list(self, index: dict[int, int]) -> list[Any]:
        by_id = {id(p.ranker): p.ranker for p in self._pipelines()}
        out: list[Any] = [None] * len(index)
        for rid, i in index.items():
            out[i] = by_id[rid]
        return out

    def team_of(self, request: np.ndarray, position: np.ndarray) -> np.ndarray:
        """The team (0 incumbent, 1 challenger, -1 outside the test) of impressions given by request id and
        position, from what this pipeline served."""
        if not self.records:
            return np.full(len(request), -1, np.int8)
        ids = np.concatenate([r for r, _ in self.records])
        teams = np.concatenate([t for _, t in self.records])
        order = np.argsort(ids)
        at = order[np.searchsorted(ids, request, sorter=order)]
        if not (ids[at] == request).all():
            raise ValueError("some impressions' requests were not served by this interleaved pipeline")
        return teams[at, np.asarray(position, np.int64)]


def interleaved_system(incumbent: System, challenger: System, method: str, rng: np.random.Generator,
                       length: int | None = None, tau: float = 3.0) -> tuple[System, InterleavedPipeline]:
    """A system of one :class:`InterleavedPipeline` over ``incumbent`` (team 0) and ``challenger`` (team 1), and
    that pipeline (for its ``team_of`` after serving)."""
    pipe = InterleavedPipeline(incumbent, challenger, method, rng, length, tau)
    return System([pipe], _Router([pipe.name]), incumbent.route_names), pipe  # type: ignore[list-item]
