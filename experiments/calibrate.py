"""Calibration to MovieLens-100K: fit the grounded world's scalar parameters and report, side by side, where the
simulation matches the data and where it does not.

``python -m experiments.calibrate [--out DIR] [--write-preset] [--seeds 3]`` writes ``DIR/calibration.md`` (the
report), ``calibration.json`` (every figure), ``calibration.png`` (real vs simulated, six panels) and
``recommenders.png`` (the held-out check). ``--write-preset`` also writes the fitted values into
``conf/world/ml100k.yaml``.

**What is compared.** The data's 100,000 ratings are consumption events (a user rated a movie: the user watched it);
the simulator's are clicks. The world (``world=ml100k``, grounded by ``envs.calibration``) is run under a logging
policy that resembles how the data was collected (:class:`LoggingPolicy`: popularity-biased exposure, a
personalised term and noise) until it has logged as many clicks as the data has ratings; both logs are described the
same way (:func:`describe`): the items' popularity (Lorenz curve, Gini), the users' activity, the genre (topic)
shares, session lengths (sessions: the data's by a gap of more than :data:`SESSION_GAP_HOURS` between ratings, the
simulator's its own), the gaps between a user's sessions, repeat consumption, and the like rate (the data: a rating
of 4 or 5) by popularity tier; each pair gets a distance (Kolmogorov-Smirnov and Wasserstein-1 for distributions,
total variation for shares, the difference for a scalar).

**What is fitted** (:func:`fit`, simulated method of moments: the simulator is run at candidate values until its
statistic matches the data's, by bisection, each statistic monotone in its parameter): ``steps_per_day`` (the clock)
to the geometric mean of the days between a user's sessions, a shift of every segment's ``patience`` to the geometric
mean session length, and ``items.zipf_exponent`` to the Gini of consumption per item. Read
directly from the data: each segment's request share (its users' share of the ratings, ``mix_of: requests``), its
mean history (ratings per user) and, for the generated users who replace churned ones, its interest concentration
(a Dirichlet's precision fitted by moments to its users' genre shares). :func:`fit` recovers parameters it planted
itself (fit, simulate, refit: ``tests/experiments/test_calibrate.py``).

**The held-out check** (:func:`recommender_check`): recommenders (random, popularity, item-kNN, user-kNN, two
matrix factorisations and the project's own ranker, :func:`ranker_scores`) trained on 80% of the data's ratings
(each user's first 80%, or the first 80% in time) and scored on the rest (recall@10 of the held-out movies) are
ranked; the same recommenders trained on the simulator's log serve users inside the calibrated world (clicks per
request); the report gives the rank correlation of the two orders.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from agents.decision.ranking import TorchRanker
from agents.evolution.offline import TrainRecipe
from envs.calibration import activity_segments, ground, grounding
from envs.config import WorldConfig
from envs.items import HEAD, TAIL, TORSO
from envs.movielens import load_ml100k
from envs.reward import ResponseReward
from envs.sessions import ObservationLayout, SessionBatch
from envs.validation import ConfigError, check_int, check_range
from envs.world import World
from experiments.plot import json_safe
from rewards.outer import gini
from rewards.stats import spearman

__all__ = ["SESSION_GAP_HOURS", "Consumption", "Fit", "LoggingPolicy", "compare", "describe", "fit", "main",
           "real_consumption", "recommender_check", "run", "simulate", "world_config"]

log = logging.getLogger(__name__)

SESSION_GAP_HOURS = 1.0  # the data's sessions: a user's ratings with no gap longer than this
TOP_N = 10  # recommenders' list length in the held-out check
PRESET = Path(__file__).resolve().parent.parent / "conf" / "world" / "ml100k.yaml"


@dataclass(frozen=True)
class Consumption:
    """One row per consumption event (a rating in the data, a click in the simulator), in time order per user."""

    user: np.ndarray  # (E,) int64: a person (the simulator's slot and its generation)
    item: np.ndarray  # (E,) int64
    day: np.ndarray  # (E,) float64 days since the log's start
    rating: np.ndarray  # (E,) float64 1-5: the data's rating; the simulator's stand-in, 5 for a liked click, 3 otherwise
    session: np.ndarray  # (E,) int64 session id
    num_items: int

    def __len__(self) -> int:
        return len(self.user)

    @property
    def liked(self) -> np.ndarray:
        """(E,) bool: a rating of 4 or 5 (the data), a like (the simulator)."""
        return self.rating >= 4


def _sessions_by_gap(user: np.ndarray, day: np.ndarray, gap_hours: float) -> np.ndarray:
    order = np.lexsort((day, user))
    u, d = user[order], day[order]
    new = np.r_[True, (u[1:] != u[:-1]) | (np.diff(d) * 24.0 > gap_hours)]
    session = np.empty(len(user), np.int64)
    session[order] = np.cumsum(new) - 1
    return session


def real_consumption(gap_hours: float = SESSION_GAP_HOURS) -> Consumption:
    """MovieLens-100K's ratings as consumption events; sessions split at gaps longer than ``gap_hours``."""
    ml = load_ml100k()
    day = (ml.timestamp - ml.timestamp.min()) / 86400.0
    return Consumption(ml.user, ml.item, day, ml.rating.astype(np.float64), _sessions_by_gap(ml.user, day, gap_hours),
                       ml.num_items)


@dataclass(frozen=True)
class LoggingPolicy:
    """Popularity-biased exposure, as in the data's collection (new users rated popular movies first, then the site's
    recommendations): a slate is the ``slate_size`` best of ``candidates`` uniformly drawn items by ``popularity *
    popularity feature + personal * <profile, embedding> + noise * Gumbel``, among the movies the user has not
    consumed yet (``unseen``)."""

    popularity: float = 1.0
    personal: float = 1.0
    noise: float = 0.5
    candidates: int = 200
    slate_size: int = 10
    concurrency: int = 100  # the experiments' default (evolution.concurrency): the same clock per request
    unseen: bool = True  # never show a user a movie it already consumed (the data has one rating per user and movie)

    def __post_init__(self) -> None:
        for key in ("popularity", "personal", "noise"):
            check_range(f"policy.{key}", getattr(self, key), 0.0, 100.0)
        check_int("policy.candidates", self.candidates, 1)
        check_int("policy.slate_size", self.slate_size, 1, self.candidates)
        check_int("policy.concurrency", self.concurrency, 1)


class Simulation:
    """The grounded world served by the logging policy or by a recommender, logging clicks as consumption."""

    def __init__(self, cfg: WorldConfig, seed: int, policy: LoggingPolicy | None = None) -> None:
        self.cfg, self.policy = cfg, policy or LoggingPolicy()
        self.world = World(cfg, seed=seed)
        self.layout = ObservationLayout.of(cfg)
        p = self.policy
        self.batch = SessionBatch(self.world, p.concurrency, p.candidates, p.slate_size, ResponseReward())
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
        self.slots = np.arange(p.concurrency)
        self.batch.start(self.slots)
        # what each user slot's current holder has consumed (a new holder, after churn, starts empty)
        self.seen = np.zeros((cfg.num_users, cfg.num_items), bool)
        self.holder = self.world.users.generation.copy()

    def run(self, events: int | None = None, requests: int | None = None,
            recommender: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> tuple[Consumption, float]:
        """Serve until ``events`` clicks or ``requests`` requests, by the logging policy or a ``recommender(persons,
        candidate_ids) -> scores`` (persons: :meth:`envs.users.Population.identity`); the clicks as consumption
        (``user``: the person) and the mean expected clicks per request."""
        if (events is None) == (requests is None):
            raise ConfigError(f"give exactly one of `events` and `requests` (got events={events}, requests={requests})")
        world, batch, layout, policy, slots = self.world, self.batch, self.layout, self.policy, self.slots
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("user", "item", "day", "liked", "session")}
        emb, pop = layout.item_embedding, layout.item("popularity")
        clicks, served, expected = 0, 0, 0.0
        while (clicks < events) if requests is None else (served < requests):
            obs = batch.observe()
            users = batch.users.copy()
            moved = np.flatnonzero(world.users.generation != self.holder)
            self.seen[moved], self.holder[moved] = False, world.users.generation[moved]
            if recommender is None:
                feats = obs["candidates"]
                score = policy.popularity * feats[..., pop] + policy.personal * np.einsum(
                    "bcd,bd->bc", feats[..., emb], obs["user"][:, layout.user_profile])
                score = score + policy.noise * self.rng.gumbel(size=score.shape)
            else:
                score = np.asarray(recommender(world.users.identity(users), batch.candidate_ids), np.float64)
            if policy.unseen:
                score = np.where(self.seen[users[:, None], batch.candidate_ids], -np.inf, score)
            action = np.argpartition(-score, policy.slate_size - 1, axis=1)[:, : policy.slate_size]
            result = batch.serve(slots, action)
            served += len(slots)
            expected += float(result.response.expected_clicks.sum())
            rows, pos = np.nonzero(result.response.click)
            self.seen[users[rows], result.slate[rows, pos]] = True
            person = world.users.identity(users[rows])
            cols["user"].append(person)
            cols["item"].append(result.slate[rows, pos])
            cols["day"].append(np.full(len(rows), world.now))
            cols["liked"].append(result.response.like[rows, pos])
            cols["session"].append(world.users.sessions[users[rows]])
            clicks += len(rows)
            batch.start(slots[result.terminated | result.truncated])
            world.tick()
        out = {k: np.concatenate(v) for k, v in cols.items()}
        _, session = np.unique(np.stack([out["user"], out["session"]], axis=1), axis=0, return_inverse=True)
        return (Consumption(out["user"].astype(np.int64), out["item"].astype(np.int64), out["day"],
                            np.where(out["liked"], 5.0, 3.0), session.ravel().astype(np.int64), self.cfg.num_items),
                expected / max(served, 1))


def simulate(cfg: WorldConfig, seed: int, events: int, policy: LoggingPolicy | None = None) -> tuple[Consumption, float]:
    """``events`` clicks of the world under the logging policy (:class:`Simulation`)."""
    return Simulation(cfg, seed, policy).run(events=events)


# ---------------------------------------------------------------------------------------------------- statistics
def tiers(rank: np.ndarray, head: float = 0.05, torso: float = 0.25) -> np.ndarray:
    """HEAD / TORSO / TAIL per item by popularity rank (1 = most popular), as the world's catalog tiers them."""
    n = len(rank)
    return np.where(rank <= round(head * n), HEAD, np.where(rank <= round((head + torso) * n), TORSO, TAIL)).astype(np.int8)


def lorenz(counts: np.ndarray, points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """The Lorenz curve of ``counts`` at ``points`` shares of items (least consumed first)."""
    x = np.sort(np.asarray(counts, np.float64))
    cum = np.r_[0.0, np.cumsum(x)] / max(x.sum(), 1e-12)
    share = np.linspace(0.0, 1.0, points)
    return share, np.interp(share * len(x), np.arange(len(x) + 1), cum)


def describe(c: Consumption, item_tier: np.ndarray, item_topic: np.ndarray, num_topics: int) -> dict[str, np.ndarray | float]:
    """The statistics both logs are compared on."""
    items = np.bincount(c.item, minlength=c.num_items)
    _, users = np.unique(c.user, return_counts=True)
    sessions = np.bincount(c.session)
    sessions = sessions[sessions > 0]
    # gaps between a user's consecutive sessions: the start of one to the end of the previous, in days
    order = np.lexsort((c.day, c.user))
    su, ss, sd = c.user[order], c.session[order], c.day[order]
    first = np.r_[True, ss[1:] != ss[:-1]]
    start_user, start_day = su[first], sd[first]
    end_day = sd[np.r_[np.flatnonzero(first)[1:] - 1, len(sd) - 1]]
    same = start_user[1:] == start_user[:-1]
    gaps = (start_day[1:] - end_day[:-1])[same]
    pair = c.user * (c.num_items + 1) + c.item
    repeat = 1.0 - len(np.unique(pair)) / max(len(pair), 1)
    tier = item_tier[c.item]
    like_by_tier = np.array([c.liked[tier == t].mean() if (tier == t).any() else math.nan for t in (HEAD, TORSO, TAIL)])
    share_by_tier = np.bincount(tier, minlength=3) / max(len(tier), 1)
    return {"item_counts": items, "gini": gini(items), "user_counts": users, "topic_shares":
            np.bincount(item_topic[c.item], minlength=num_topics) / max(len(c), 1), "session_lengths": sessions,
            "median_session": float(np.median(sessions)), "gaps_days": gaps, "repeat_share": repeat,
            "like_by_tier": like_by_tier, "share_by_tier": share_by_tier, "like_rate": float(c.liked.mean())}


def ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if not len(a) or not len(b):
        return math.nan
    grid = np.r_[a, b]
    return float(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)).max())


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 distance between two samples: the area between their empirical CDFs."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if not len(a) or not len(b):
        return math.nan
    grid = np.sort(np.r_[a, b])
    fa = np.searchsorted(a, grid[:-1], "right") / len(a)
    fb = np.searchsorted(b, grid[:-1], "right") / len(b)
    return float(np.sum(np.abs(fa - fb) * np.diff(grid)))


def compare(real: dict, sim: dict) -> list[dict[str, object]]:
    """One row per statistic: the real and simulated summaries and their distance."""
    def dist(name: str, key: str, summary: Callable[[np.ndarray], float], log_scale: bool = False) -> dict:
        a, b = np.asarray(real[key], np.float64), np.asarray(sim[key], np.float64)
        ta, tb = (np.log10(np.maximum(a, 1e-3)), np.log10(np.maximum(b, 1e-3))) if log_scale else (a, b)
        return {"statistic": name, "real": summary(a), "sim": summary(b), "ks": ks(ta, tb),
                "wasserstein": wasserstein(ta, tb), "scale": "log10" if log_scale else "linear"}

    rows = [
        {"statistic": "item popularity Gini", "real": real["gini"], "sim": sim["gini"],
         "difference": sim["gini"] - real["gini"]},
        dist("consumption per item (median)", "item_counts", np.median, log_scale=False),
        dist("events per user (median)", "user_counts", np.median, log_scale=True),
        {"statistic": "genre shares (total variation)", "real": float(np.max(real["topic_shares"])),
         "sim": float(np.max(sim["topic_shares"])),
         "tv": 0.5 * float(np.abs(real["topic_shares"] - sim["topic_shares"]).sum())},
        dist("events per session (median)", "session_lengths", np.median, log_scale=True),
        dist("days between sessions (median)", "gaps_days", np.median, log_scale=True),
        {"statistic": "repeat consumption share", "real": real["repeat_share"], "sim": sim["repeat_share"],
         "difference": sim["repeat_share"] - real["repeat_share"]},
    ]
    for t, name in ((HEAD, "head"), (TORSO, "torso"), (TAIL, "tail")):
        rows.append({"statistic": f"like rate, {name} items", "real": float(real["like_by_tier"][t]),
                     "sim": float(sim["like_by_tier"][t]), "difference": float(sim["like_by_tier"][t] - real["like_by_tier"][t])})
        rows.append({"statistic": f"share of events on {name} items", "real": float(real["share_by_tier"][t]),
                     "sim": float(sim["share_by_tier"][t]),
                     "difference": float(sim["share_by_tier"][t] - real["share_by_tier"][t])})
    return rows


def world_config(fitted: bool = True, **overrides: object) -> WorldConfig:
    """The ``world=ml100k`` preset (``conf/world/ml100k.yaml``; with ``fitted=False`` only its base,
    :data:`PRESET_BASE`, which is where the fit starts, so a fit does not depend on the last one) as a
    :class:`WorldConfig`, with dotted ``overrides`` (e.g. ``**{"items.zipf_exponent": 2.0}``)."""
    from omegaconf import OmegaConf

    conf = OmegaConf.merge(OmegaConf.structured(WorldConfig), OmegaConf.load(PRESET) if fitted else PRESET_BASE)
    for key, value in overrides.items():
        OmegaConf.update(conf, key, value, merge=True)
    return WorldConfig(**OmegaConf.to_container(conf))


# ---------------------------------------------------------------------------------------------------- the fit
@dataclass(frozen=True)
class Moment:
    """A parameter fitted by bisection so that a simulated statistic matches its target: ``keys`` (dotted world keys,
    all set to the value, or ``offsets`` added to their preset values), the search interval, whether the statistic
    grows with the parameter, and whether the parameter is an integer searched on a log scale."""

    statistic: str
    keys: tuple[str, ...]
    low: float
    high: float
    increasing: bool = True
    integer_log: bool = False
    offsets: bool = False


SEGMENTS = ("new", "casual", "heavy")
# in the order fitted: popularity moves session lengths and gaps too (more popular slates, more clicks per session),
# patience moves gaps, the clock moves neither of the others much
MOMENTS = (
    Moment("gini", ("items.zipf_exponent",), 0.0, 10.0),
    Moment("log_session", tuple(f"segments.{s}.patience" for s in SEGMENTS), -4.0, 8.0, offsets=True),
    Moment("log_gap", ("steps_per_day",), 1.0, 2000.0, increasing=False, integer_log=True),
)


@dataclass
class Fit:
    """Fitted world values (dotted keys, what ``--write-preset`` writes), the data's statistics they were fitted to and
    the simulation's statistics at the fit."""

    values: dict[str, float]
    targets: dict[str, float]
    achieved: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    seconds: float = 0.0


def _statistics(c: Consumption) -> dict[str, float]:
    """The fitted moments of a log: the Gini of consumption per item, the mean log10 events per session and the mean
    log10 days between a user's sessions (geometric means: smoother in the parameters than medians of counts)."""
    d = describe(c, np.zeros(c.num_items, np.int8), np.zeros(c.num_items, np.int64), 1)
    gaps = np.asarray(d["gaps_days"], np.float64)
    return {"gini": float(d["gini"]), "log_session": float(np.log10(d["session_lengths"]).mean()),
            "log_gap": float(np.log10(np.maximum(gaps, 1e-3)).mean()) if len(gaps) else math.nan}


def direct_values(c: Consumption, item_topic: np.ndarray, num_topics: int) -> dict[str, float]:
    """What the data gives without simulation: per activity segment, its share of the requests (its users' share of
    the events), its mean history and its interest concentration (Dirichlet precision by moments over its users'
    topic shares, the multinomial noise of finite counts removed, spread over the topics)."""
    _, user, counts = np.unique(c.user, return_inverse=True, return_counts=True)
    seg = activity_segments(counts, len(SEGMENTS))
    out: dict[str, float] = {"mix_of": "requests"}  # type: ignore[dict-item]
    topic_counts = np.zeros((len(counts), num_topics))
    np.add.at(topic_counts, (user.ravel(), item_topic[c.item]), 1.0)
    for s, name in enumerate(SEGMENTS):
        members = seg == s
        out[f"request_mix.{name}"] = round(float(counts[members].sum() / counts.sum()), 4)
        out[f"segments.{name}.history_mean"] = round(float(counts[members].mean()), 1)
        p = topic_counts[members] / counts[members, None]
        m, var = p.mean(axis=0), p.var(axis=0)
        noise = (p * (1 - p) / counts[members, None]).mean(axis=0)  # the part of the variance finite counts add
        ok = (m > 0) & (var - noise > 0)
        precision = float(np.median(m[ok] * (1 - m[ok]) / (var[ok] - noise[ok]) - 1.0)) if ok.any() else 1.0
        out[f"segments.{name}.interest_concentration"] = round(min(max(precision / num_topics, 1e-3), 1e4), 4)
    return out


def fit(targets: dict[str, float], base: dict[str, object] | None = None, seed: int = 0, events: int = 50_000,
        sweeps: int = 2, iterations: int = 6, policy: LoggingPolicy | None = None,
        moments: tuple[Moment, ...] = MOMENTS) -> Fit:
    """Simulated method of moments, every evaluation on seed ``seed`` (common random numbers): ``sweeps``
    coordinate-wise passes over the moments (:data:`MOMENTS`, in their order), each parameter by bisection with the
    others held (``iterations`` halvings, then a linear interpolation inside the last bracket). The statistics are
    coupled (more popular slates also lengthen sessions), hence the second pass. ``base``: dotted world values held
    fixed (and the start)."""
    start = time.perf_counter()
    values: dict[str, object] = dict(base or {})
    preset = world_config(fitted=False, **values)
    evaluations = 0

    def setting(m: Moment, z: float) -> dict[str, object]:
        """The world values of parameter ``m`` at ``z`` on its search scale (log for the clock)."""
        x = min(max(math.exp(z) if m.integer_log else z, m.low), m.high)
        if m.integer_log:
            return dict.fromkeys(m.keys, int(round(x)))
        if not m.offsets:
            return dict.fromkeys(m.keys, round(x, 4))
        out = {}
        for key in m.keys:
            _, name, param = key.split(".")
            out[key] = round(getattr(preset.segments[name], param) + x, 4)
        return out

    def statistics(point: dict[str, object]) -> dict[str, float]:
        nonlocal evaluations
        evaluations += 1
        return _statistics(simulate(world_config(False, **{**values, **point}), seed, events, policy)[0])

    scale = [(math.log(m.low), math.log(m.high)) if m.integer_log else (m.low, m.high) for m in moments]
    z = [(lo + hi) / 2 for lo, hi in scale]
    for _ in range(sweeps):
        for k, m in enumerate(moments):
            lo, hi = scale[k]
            seen: dict[float, float] = {}  # the statistic at each point evaluated (on the search scale)
            for _ in range(iterations):
                mid = (lo + hi) / 2
                seen[mid] = statistics(setting(m, mid))[m.statistic]
                if (seen[mid] > targets[m.statistic]) == m.increasing:
                    hi = mid
                else:
                    lo = mid
            z[k] = (lo + hi) / 2  # within the last bracket, interpolate where both ends were simulated (regula falsi)
            if lo in seen and hi in seen and seen[hi] != seen[lo]:
                z[k] = min(max(lo + (targets[m.statistic] - seen[lo]) / (seen[hi] - seen[lo]) * (hi - lo), lo), hi)
            values.update(setting(m, z[k]))
    achieved = statistics({})
    return Fit(dict(values), dict(targets), achieved, evaluations, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------------- held-out check
RECOMMENDERS = ("random", "popularity", "item_knn", "user_knn", "mf_8", "mf_64", "ranker")
NEIGHBOURS = 50  # the kNN recommenders' neighbourhood
RANKER_NEGATIVES = 4  # the ranker's sampled non-consumed items per consumption (ratings have no impressions)
RANKER_UPDATES = 1500  # its gradient steps
AGE_SCALE_DAYS = 3650.0  # freshness exp(-age / 10 years), as the preset's lifetimes


@dataclass(frozen=True)
class Training:
    """What a recommender learns from: the binary consumption matrix ``x`` (U, I) of the training events, and, for
    the project's ranker, item side information derived from those same events only (never from held-out ones):
    spectral embeddings (:func:`envs.calibration.ground` on the training events), shrunk mean rating, the popularity
    rank's log feature and freshness from the release age."""

    x: np.ndarray
    item_embedding: np.ndarray  # (I, D)
    item_features: np.ndarray  # (I, D + 3)


def training(user: np.ndarray, item: np.ndarray, rating: np.ndarray, num_users: int, num_items: int,
             age_days: np.ndarray, embedding_dim: int = 16) -> Training:
    """The :class:`Training` of events (``rating`` 1-5; the simulator's: 5 for a like, 3 otherwise)."""
    g = ground(user, item, rating, np.ones((num_items, 1), bool), ("all",), np.zeros(num_items), num_users,
               embedding_dim)
    pop = 1.0 - np.log(g.item_rank) / np.log(max(num_items, 2))
    feats = np.column_stack([g.item_embedding, g.item_quality, pop, np.exp(-age_days / AGE_SCALE_DAYS)])
    return Training(_matrix(user, item, num_users, num_items), g.item_embedding, feats.astype(np.float32))


def ranker_scores(train: Training, seed: int) -> np.ndarray:
    """(U, I) click probabilities of the project's ranker (``agents.decision.ranking.TorchRanker``, the static
    baseline's MLP of width 64, click head only) on the pipeline's observables: the user's profile (the normalised mean
    embedding of what it consumed), the item's embedding and features, and their product; trained on every consumption
    as a click and :data:`RANKER_NEGATIVES` uniformly drawn items it did not consume as non-clicks, for
    :data:`RANKER_UPDATES` steps with the offline recipe's optimiser (``agents.evolution.offline.TrainRecipe``)."""
    x, emb, feats = train.x, train.item_embedding, train.item_features
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    profile = _rows(x @ emb).astype(np.float32)

    def rows(u: np.ndarray, i: np.ndarray) -> np.ndarray:
        return np.hstack([profile[u], feats[i], profile[u] * emb[i]]).astype(np.float32)

    pu, pi = np.nonzero(x)
    nu = np.repeat(pu, RANKER_NEGATIVES)
    ni = rng.integers(0, x.shape[1], len(nu))
    keep = x[nu, ni] == 0
    u, i = np.r_[pu, nu[keep]], np.r_[pi, ni[keep]]
    y = np.zeros((len(u), 3), np.float32)
    y[: len(pu), 0] = 1.0
    recipe = TrainRecipe()
    ranker = TorchRanker(rows(u[:1], i[:1]).shape[1], 1, 1, arch="mlp", hidden=64, seed=seed,
                         config={**recipe.ranker_config(), "memory": 500_000},
                         loss_weights={"like": 0.0, "dwell": 0.0})
    order = rng.permutation(len(u))  # the memory keeps the latest rows: shuffle so a cap drops a random share
    ranker.learn_from((rows(u[order], i[order]), y[order], np.zeros(len(u), np.int64)), min_updates=RANKER_UPDATES)
    num_users, num_items = x.shape
    out = np.empty((num_users, num_items), np.float32)
    items = np.arange(num_items)
    with torch.inference_mode():
        for start in range(0, num_users, 64):
            users = np.arange(start, min(start + 64, num_users))
            uu, ii = np.repeat(users, num_items), np.tile(items, len(users))
            out[users] = ranker.predict(rows(uu, ii), np.zeros(len(uu), np.int64))["click"].reshape(len(users), num_items)
    return out


def _rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _top_k_rows(sim: np.ndarray, k: int) -> np.ndarray:
    """``sim`` with all but each row's ``k`` largest entries set to 0."""
    if k >= sim.shape[1]:
        return sim
    keep = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    out = np.zeros_like(sim)
    np.put_along_axis(out, keep, np.take_along_axis(sim, keep, axis=1), axis=1)
    return out


def recommender_scores(name: str, train: Training | np.ndarray, rng: np.random.Generator, seed: int = 0
                       ) -> np.ndarray:
    """(U, I) scores of recommender ``name`` (:data:`RECOMMENDERS`) trained on ``train`` (or just its binary
    consumption matrix, for all but the ranker): uniform noise, item popularity, item-kNN and user-kNN (cosine,
    :data:`NEIGHBOURS` neighbours), PureSVD of rank 8 or 64 (``x V_d V_d^T``), the project's ranker
    (:func:`ranker_scores`)."""
    x = train.x if isinstance(train, Training) else train
    if name == "ranker":
        if not isinstance(train, Training):
            raise ConfigError("the `ranker` recommender needs item side information: pass a Training (`training(...)`)")
        return ranker_scores(train, seed)
    if name == "random":
        return rng.random(x.shape)
    if name == "popularity":
        return np.broadcast_to(x.sum(axis=0), x.shape).copy()
    if name == "item_knn":
        sim = _rows(x.T) @ _rows(x.T).T
        np.fill_diagonal(sim, 0.0)
        return x @ _top_k_rows(sim, NEIGHBOURS).T
    if name == "user_knn":
        sim = _rows(x) @ _rows(x).T
        np.fill_diagonal(sim, 0.0)
        return _top_k_rows(sim, NEIGHBOURS) @ x
    if name.startswith("mf_"):
        d = int(name[3:])
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        return x @ vt[:d].T @ vt[:d]
    raise ConfigError(f"`recommender` must be one of {list(RECOMMENDERS)} (got {name!r})")


def _matrix(user: np.ndarray, item: np.ndarray, num_users: int, num_items: int) -> np.ndarray:
    x = np.zeros((num_users, num_items))
    x[user, item] = 1.0
    return x


def recall_at(scores: np.ndarray, train: np.ndarray, test: np.ndarray, n: int = TOP_N) -> float:
    """Mean over users with held-out items of the share of them in the top ``n`` of the items not in their train set."""
    scores = np.where(train > 0, -np.inf, scores)
    top = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    hits = np.take_along_axis(test, top, axis=1).sum(axis=1)
    has = test.sum(axis=1) > 0
    return float((hits[has] / test.sum(axis=1)[has]).mean())


SPLITS = ("user", "global")


def offline_recall(c: Consumption, num_users: int, age_days: np.ndarray, seed: int, split: str = "user",
                   share: float = 0.8) -> dict[str, float]:
    """Recall@10 of each recommender trained on the earlier ``share`` of the events (their ratings) and tested on
    the rest: each user's own first ``share`` (``split="user"``) or the first ``share`` of all events in time
    (``"global"``). The ranker's item side information comes from the training events only."""
    user, item, day, rating = c.user, c.item, c.day, c.rating
    if split == "global":
        early = day <= np.quantile(day, share)
    elif split == "user":
        order = np.lexsort((day, user))
        u = user[order]
        within = np.arange(len(u)) - np.searchsorted(u, u)  # the event's position in its user's history
        early = np.empty(len(u), bool)
        early[order] = within < np.ceil(share * np.bincount(u, minlength=num_users)[u])
    else:
        raise ConfigError(f"`split` must be one of {list(SPLITS)} (got {split!r})")
    train = training(user[early], item[early], rating[early], num_users, c.num_items, age_days)
    test = _matrix(user[~early], item[~early], num_users, c.num_items) * (1 - train.x)
    rng = np.random.default_rng(seed)
    return {name: recall_at(recommender_scores(name, train, rng, seed), train.x, test) for name in RECOMMENDERS}


def recommender_check(cfg: WorldConfig, seed: int, events: int, requests: int, policy: LoggingPolicy | None = None,
                      real: Consumption | None = None) -> dict[str, object]:
    """The held-out check: each recommender's recall@10 on the data's held-out 20% (trained on the rest; both
    :data:`SPLITS`), its recall on the simulator's log split the same way, and its clicks per request served for
    ``requests`` requests in a twin of the world at the end of the logging run (trained on the whole log, the same
    state and synchronised traffic for every recommender); Spearman correlations of the orders."""
    import copy

    if any(s.churn_probability > 0 for s in cfg.segments.values()):
        raise ConfigError("the held-out check serves the logged users again: every segment's `churn_probability` must be "
                          "0 (as in world=ml100k)")
    real = real or real_consumption()
    real_users = int(real.user.max()) + 1
    ages = grounding("ml100k", cfg.embedding_dim).item_age_days
    real_recall = {split: offline_recall(real, real_users, ages, seed, split) for split in SPLITS}
    sim = Simulation(cfg, seed, policy)
    logged, _ = sim.run(events=events)
    logged = replace(logged, user=logged.user & 0xFFFFFFFF)  # nobody churns: a person is its slot
    sim_recall = {split: offline_recall(logged, cfg.num_users, ages, seed, split) for split in SPLITS}
    train = training(logged.user, logged.item, logged.rating, cfg.num_users, cfg.num_items, ages)
    rng = np.random.default_rng(seed)
    online: dict[str, float] = {}
    for name in RECOMMENDERS:
        scores = recommender_scores(name, train, rng, seed)
        twin = copy.deepcopy(sim)  # same state, same synchronised traffic for every recommender
        _, online[name] = twin.run(requests=requests, recommender=lambda persons, cand, s=scores: s[
            (persons & 0xFFFFFFFF)[:, None], cand])
    order = list(RECOMMENDERS)
    out: dict[str, object] = {"recommenders": order, "sim_clicks": [online[k] for k in order]}
    for split in SPLITS:
        r, so = [real_recall[split][k] for k in order], [sim_recall[split][k] for k in order]
        out[f"real_recall_{split}"], out[f"sim_recall_{split}"] = r, so
        out[f"spearman_{split}_real_vs_sim_clicks"] = spearman(r, out["sim_clicks"])
        out[f"spearman_{split}_real_vs_sim_recall"] = spearman(r, so)
    return out


# ---------------------------------------------------------------------------------------------------- the report
PRESET_HEADER = """\
# A world grounded in MovieLens-100K (GroupLens; read from the installed recbole==1.2.1 wheel, never copied here; see
# the README's "Real data" section for the terms): its 1,682 movies (embeddings from a spectral factorisation of who
# rated what, the 18 genres as topics, popularity ranks, shrunk mean ratings as quality, ages from release years) and
# its 943 users (interests, activity as history, segments by activity: the lightest third `new`, the heaviest
# `heavy`); envs/calibration.py says what comes from the data and what does not. Stationary: runs in every preset
# (`python -m experiments.run -m experiment=<preset> world=ml100k`).
# Below the marker, the values are written by `python -m experiments.calibrate --write-preset` (experiments/calibrate.py:
# request shares, histories and interest concentrations read from the data; the Zipf exponent, the patience and the
# clock fitted by simulated method of moments to the data's Gini and the geometric means of session length and of the
# gap between sessions); its report says where the simulation still differs from the data.
# Not from the data: lifetimes of ten years that never expire within a run (movies age, freshness exp(-age / 10 years));
# the data's population is closed (943 users over 7 months): nobody churns; users keep their activity segment.
"""
# what the preset always sets (the data's sizes, the grounding, ageing without expiry, a closed population)
PRESET_BASE: dict[str, object] = {
    "num_items": 1682, "num_users": 943, "num_topics": 18, "num_creators": 100, "data": "ml100k",
    "graduate_after": 0, "items": {"lifetime_days": 3650.0, "lifetime_sigma": 0.0, "expire_after": 1000.0},
    "segments": {s: {"churn_probability": 0.0} for s in ("new", "casual", "heavy")},
}
FITTED_MARKER = "# ---- fitted by experiments.calibrate"


def preset_text(values: dict[str, object]) -> str:
    """``conf/world/ml100k.yaml``: the header, then :data:`PRESET_BASE` with the fitted ``values`` (dotted keys)."""
    from omegaconf import OmegaConf

    conf = OmegaConf.create(PRESET_BASE)
    for key, value in values.items():
        OmegaConf.update(conf, key, value, merge=True)
    return f"{PRESET_HEADER}{FITTED_MARKER} on {time.strftime('%Y-%m-%d')}\n{OmegaConf.to_yaml(conf)}"


def _fmt(x: object) -> str:
    if isinstance(x, (float, np.floating)):
        return "n/a" if not math.isfinite(float(x)) else f"{float(x):.3g}"
    return str(x)


def _figures(real: dict, sims: list[dict], topics: tuple[str, ...], check: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(16, 9))
    a = ax[0, 0]
    for d, label, style in [(real, "MovieLens-100K", "k-")] + [(s, f"simulated (seed {i})", "C0--") for i, s in enumerate(sims)]:
        x, y = lorenz(d["item_counts"])
        a.plot(x, y, style, label=f"{label}: Gini {d['gini']:.3f}", alpha=1.0 if label[0] == "M" else 0.7)
    a.plot([0, 1], [0, 1], ":", color="grey")
    a.set(title="Item popularity: Lorenz curve", xlabel="share of items (least consumed first)",
          ylabel="share of consumption")
    a.legend(fontsize=8)
    a = ax[0, 1]
    bins = np.logspace(0, np.log10(max(real["user_counts"].max(), max(s["user_counts"].max() for s in sims)) + 1), 30)
    a.hist(real["user_counts"], bins=bins, histtype="step", color="k", label="MovieLens-100K")
    for i, s in enumerate(sims):
        a.hist(s["user_counts"], bins=bins, histtype="step", color="C0", ls="--", label=f"simulated (seed {i})")
    a.set(xscale="log", title="User activity", xlabel="events per user", ylabel="users")
    a.legend(fontsize=8)
    a = ax[0, 2]
    idx = np.arange(len(topics))
    a.bar(idx - 0.2, real["topic_shares"], 0.4, color="k", label="MovieLens-100K")
    a.bar(idx + 0.2, np.mean([s["topic_shares"] for s in sims], axis=0), 0.4, color="C0", label="simulated (mean)")
    a.set_xticks(idx, topics, rotation=70, fontsize=7)
    a.set(title="Genre (topic) shares of consumption")
    a.legend(fontsize=8)
    for a, key, title, xlabel in ((ax[1, 0], "session_lengths", "Session length", "events per session"),
                                   (ax[1, 1], "gaps_days", "Gap between a user's sessions", "days")):
        logs = [(real, "k-", "MovieLens-100K")] + [(s, "C0--", f"simulated (seed {i})") for i, s in enumerate(sims)]
        for d, style, label in logs:
            v = np.sort(np.asarray(d[key], np.float64))
            if len(v):
                a.step(v, np.arange(1, len(v) + 1) / len(v), style, where="post", label=label)
        a.set(xscale="log", title=f"{title} (ECDF)", xlabel=xlabel, ylabel="share")
        a.legend(fontsize=8)
    a = ax[1, 2]
    idx = np.arange(3)
    a.bar(idx - 0.2, real["like_by_tier"], 0.4, color="k", label="MovieLens-100K: rating >= 4")
    a.bar(idx + 0.2, np.mean([s["like_by_tier"] for s in sims], axis=0), 0.4, color="C0", label="simulated: like")
    a.plot(idx - 0.2, real["share_by_tier"], "ks", zorder=3, markeredgecolor="w", label="share of events (data)")
    a.plot(idx + 0.2, np.mean([s["share_by_tier"] for s in sims], axis=0), "C1s", zorder=3, label="share of events (sim)")
    a.set_xticks(idx, ["head (5%)", "torso (25%)", "tail (70%)"])
    a.set(title="Like rate and share of events by popularity tier", ylim=(0, 1))
    a.legend(fontsize=8)
    fig.tight_layout()
    paths = [out / "calibration.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    for a, split in zip(ax, SPLITS):
        for i, c in enumerate(check):
            a.scatter(c[f"real_recall_{split}"], c["sim_clicks"], color=f"C{i}", label=f"seed {i}: Spearman "
                      f"{c[f'spearman_{split}_real_vs_sim_clicks']:.2f}")
            if i == 0:
                for name, x, y in zip(c["recommenders"], c[f"real_recall_{split}"], c["sim_clicks"]):
                    a.annotate(name, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
        a.set(title=f"Held-out check ({split} split)", xlabel="recall@10 on MovieLens-100K's held-out ratings",
              ylabel="clicks per request in the simulator")
        a.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "recommenders.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def run(out: str | Path, seeds: int = 2, write_preset: bool = False, fit_events: int | None = None,
        requests: int = 20_000, refit: bool = True) -> dict[str, object]:
    """Fit (unless ``refit=False``: the preset as it is) on logs of ``fit_events`` clicks (default: the data's size;
    the statistics depend on the log's size, e.g. the Gini falls as users run out of unseen popular movies), simulate
    ``seeds`` logs the data's size, compare, check the recommenders; write the report, figures and JSON under ``out``;
    return the JSON's content."""
    check_int("seeds", seeds, 1, 100)
    if fit_events is not None:
        check_int("fit_events", fit_events, 1000)
    check_int("requests", requests, 100)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    real = real_consumption()
    found = grounding("ml100k", world_config().embedding_dim)
    tier = tiers(found.item_rank)
    real_stats = describe(real, tier, found.item_topic, found.num_topics)
    fitted = None
    if refit:
        direct = direct_values(real, found.item_topic, found.num_topics)
        fitted = fit(_statistics(real), base=direct, events=fit_events or len(real))
        log.info("fitted in %.0f s (%d simulations): %s", fitted.seconds, fitted.evaluations, fitted.values)
        if write_preset:
            PRESET.write_text(preset_text(fitted.values))
            log.info("wrote %s", PRESET)
    cfg = world_config() if fitted is None else world_config(False, **fitted.values)
    sims, rows, check = [], [], []
    for seed in range(seeds):
        c, _ = simulate(cfg, seed, len(real))
        sims.append(describe(c, tier, found.item_topic, found.num_topics))
        rows.append(compare(real_stats, sims[-1]))
        check.append(recommender_check(cfg, seed, len(real), requests, real=real))
    figures = _figures(real_stats, sims, found.topics, check, out)
    result = {"fit": None if fitted is None else {"values": fitted.values, "targets": fitted.targets,
                                                  "achieved": fitted.achieved, "evaluations": fitted.evaluations,
                                                  "seconds": fitted.seconds},
              "comparison": rows, "recommenders": check, "seconds": time.perf_counter() - start,
              "figures": [p.name for p in figures]}
    (out / "calibration.json").write_text(json.dumps(json_safe(result), indent=1))
    (out / "calibration.md").write_text(render(result, seeds))
    return result


def render(result: dict, seeds: int) -> str:
    """The markdown report of :func:`run`."""
    lines = ["# MovieLens-100K vs the calibrated simulator (`world=ml100k`)", "",
             f"Simulated logs: {seeds} seed(s), each as many clicks as the data has ratings, under the logging policy "
             "(popularity-biased exposure, personalised, never a movie the user already consumed). "
             f"Runtime {result['seconds']:.0f} s.", ""]
    if result["fit"]:
        f = result["fit"]
        lines += ["## Fitted by simulated method of moments", "", "| statistic | data | simulated at the fit |",
                  "|---|---|---|"]
        lines += [f"| {k} | {_fmt(v)} | {_fmt(f['achieved'].get(k))} |" for k, v in f["targets"].items()]
        lines += ["", f"{f['evaluations']} simulations, {f['seconds']:.0f} s. Values: " +
                  ", ".join(f"`{k}={_fmt(v)}`" for k, v in f["values"].items()), ""]
    lines += ["## Side by side", "", "| statistic | data | simulated (per seed) | distance (per seed) |", "|---|---|---|---|"]
    for i, row in enumerate(result["comparison"][0]):
        per = [rows[i] for rows in result["comparison"]]
        dist = "; ".join(", ".join(f"{k} {_fmt(r[k])}" for k in ("ks", "wasserstein", "tv", "difference") if k in r)
                         for r in per)
        scale = " (log10 scale)" if row.get("scale") == "log10" else ""
        lines.append(f"| {row['statistic']}{scale} | {_fmt(row['real'])} | {', '.join(_fmt(r['sim']) for r in per)} | {dist} |")
    lines += ["", "![real vs simulated](calibration.png)", "", "## Held-out check: recommenders ranked on the data and in "
              "the simulator", "", "Recall@10 on the data's held-out ratings (`user`: each user's last 20%; `global`: "
              "the last 20% of all ratings in time), recall@10 on the simulator's log split the same way, and clicks "
              "per request when each recommender serves the simulated users (trained on the whole simulated log; "
              "every recommender on a twin of the same state).", "",
              "| recommender | data recall (user) | data recall (global) | sim recall (user) | sim clicks/request |",
              "|---|---|---|---|---|"]
    c0 = result["recommenders"][0]
    for i, name in enumerate(c0["recommenders"]):
        lines.append(f"| {name} | {_fmt(c0['real_recall_user'][i])} | {_fmt(c0['real_recall_global'][i])} | "
                     f"{_fmt(c0['sim_recall_user'][i])} | {_fmt(c0['sim_clicks'][i])} |")
    lines += ["", "Spearman rank correlation with the data's order (per seed):", ""]
    for split in SPLITS:
        lines.append(f"- {split} split: vs simulated clicks " + ", ".join(
            _fmt(c[f"spearman_{split}_real_vs_sim_clicks"]) for c in result["recommenders"]) + "; vs simulated recall "
            + ", ".join(_fmt(c[f"spearman_{split}_real_vs_sim_recall"]) for c in result["recommenders"]))
    lines += ["", "![recommenders](recommenders.png)", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/calibrate", help="folder for the report, figures and JSON")
    parser.add_argument("--seeds", type=int, default=2, help="simulated logs to compare (default 2)")
    parser.add_argument("--write-preset", action="store_true", help="write the fit into conf/world/ml100k.yaml")
    parser.add_argument("--no-fit", action="store_true", help="compare the preset as it is, without fitting")
    parser.add_argument("--fit-events", type=int, default=None, help="clicks per simulation while fitting (default: "
                        "as many as the data has ratings)")
    parser.add_argument("--requests", type=int, default=20_000, help="requests each recommender serves")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = run(args.out, args.seeds, args.write_preset, args.fit_events, args.requests, refit=not args.no_fit)
    except ConfigError as exc:  # bad arguments, or the data set's wheel missing: say so, no traceback
        parser.error(str(exc))
    print(f"report: {Path(args.out) / 'calibration.md'} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
