"""The user population: segments, true interests, observable profiles, fatigue and satisfaction.

Users are column arrays over ``num_users`` slots. A user who churns is replaced in the slot by a new
(cold-start) user, so shapes never change. Per-segment parameters are gathered into arrays indexed by
segment id so that a batch of users is handled without a Python loop over users.
"""

from __future__ import annotations

import logging

import numpy as np

from envs.calibration import Grounding, activity_segments
from envs.config import SegmentConfig, WorldConfig
from envs.items import unit_rows
from envs.streams import KeyedDraws, Streams

__all__ = ["Population", "SegmentTable"]

log = logging.getLogger(__name__)


class SegmentTable:
    """Per-segment parameters as arrays of length ``num_segments`` (gather with ``table.x[segment]``)."""

    def __init__(self, segments: dict[str, SegmentConfig]) -> None:
        self.names = list(segments)
        cfgs = list(segments.values())
        for key in SegmentConfig.__dataclass_fields__:
            setattr(self, key, np.array([getattr(c, key) for c in cfgs], np.float32))
        self._weights()

    def _weights(self) -> None:
        # utility weights of the observable item features, in ``envs.items.ITEM_FEATURES`` order
        self.feature_weights = np.stack(
            [self.quality_sensitivity, self.novelty_sensitivity, self.popularity_sensitivity, self.risk_appeal], axis=1
        )

    def set(self, key: str, value: float, segment: int | None = None) -> None:
        """Set parameter ``key`` of ``segment`` (every segment when None) to ``value`` (a ``taste`` shift)."""
        column = getattr(self, key)
        column[slice(None) if segment is None else segment] = value
        self._weights()

    def __len__(self) -> int:
        return len(self.names)


class Population:
    """All users, as column arrays."""

    def __init__(self, cfg: WorldConfig, topic_centers: np.ndarray, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.table = SegmentTable(cfg.segments)
        self.topic_centers = topic_centers
        n, d, t = cfg.num_users, topic_centers.shape[1], topic_centers.shape[0]
        self.num_users = n
        self.new_segment = self.table.names.index(cfg.new_user_segment)
        self.segment = np.zeros(n, np.int16)
        self.latent_segment = np.zeros(n, np.int16)  # what a new user becomes once it graduates
        self.interest = np.zeros((n, d), np.float32)  # true, hidden
        self.profile = np.zeros((n, d), np.float32)  # observable: EMA of clicked item embeddings
        self.history = np.zeros(n, np.int32)  # observable: number of past clicks
        self.fatigue = np.zeros((n, t), np.float32)  # hidden, per topic
        self.satisfaction = np.zeros(n, np.float32)  # hidden, within-session EMA of experience
        self.in_session = np.zeros(n, bool)
        self.session_steps = np.zeros(n, np.int32)
        self.session_clicks = np.zeros(n, np.int32)
        self.session_experience = np.zeros(n, np.float32)  # sum of per-step experience this session
        # event counters that key the synchronised random streams (``envs.streams``): requests this user answered,
        # sessions it started, and how many users have held its slot before it
        self.requests = np.zeros(n, np.int64)
        self.sessions = np.zeros(n, np.int64)
        self.generation = np.zeros(n, np.int64)
        # when each free user's next visit is due (in steps): the free user due first makes the next request of its
        # segment; set from the user's own stream when it becomes free (``schedule_return``)
        self.due = np.zeros(n, np.float64)
        mix = np.array([cfg.request_mix.get(s, 0.0) for s in self.table.names])
        self._create(np.arange(n), rng.choice(len(self.table), size=n, p=mix), rng)

    # ------------------------------------------------------------------ creation
    def ground(self, found: Grounding, rng: np.random.Generator) -> None:
        """The initial users become a data set's users (:class:`envs.calibration.Grounding`): their interests, their
        number of ratings as history, and segments by activity (:func:`envs.calibration.activity_segments`)."""
        segment = activity_segments(found.user_activity, len(self.table))
        self._create(np.arange(self.num_users), segment, rng, interest=found.user_interest,
                     history=found.user_activity.astype(np.int32))

    def _create(self, slots: np.ndarray, segment: np.ndarray, rng: np.random.Generator | KeyedDraws,
                interest: np.ndarray | None = None, history: np.ndarray | None = None) -> None:
        """New users in ``slots``: interests drawn around the segment's topic mix and a Poisson history, unless given."""
        k = len(slots)
        if k == 0:
            return
        if interest is None:
            t = self.topic_centers.shape[0]
            alpha = self.table.interest_concentration[segment]
            # Dirichlet per user with a per-segment concentration: normalised Gamma draws
            w = rng.gamma(np.repeat(alpha[:, None], t, axis=1))
            w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
            noise = 0.2 * rng.standard_normal((k, self.topic_centers.shape[1])).astype(np.float32)
            interest = unit_rows(w.astype(np.float32) @ self.topic_centers + noise)
        if history is None:
            history = rng.poisson(self.table.history_mean[segment]).astype(np.int32)
        # the observable profile is a noisy estimate of the interest that sharpens with history
        conf = (history / (history + 5.0)).astype(np.float32)[:, None]
        est = unit_rows(interest + rng.standard_normal(interest.shape).astype(np.float32) / np.sqrt(history + 1.0)[:, None])
        self.segment[slots] = segment
        self.interest[slots] = interest
        self.profile[slots] = conf * est
        self.history[slots] = history
        self.fatigue[slots] = 0.0
        self.satisfaction[slots] = 0.0
        self.in_session[slots] = False
        self.session_steps[slots] = 0
        self.session_clicks[slots] = 0
        self.session_experience[slots] = 0.0
        self.requests[slots] = 0
        self.sessions[slots] = 0
        grad = self.cfg.graduate_to
        names = self.table.names
        if self.cfg.graduate_after > 0:
            p = np.array([grad.get(s, 0.0) for s in names])
            latent = rng.choice(len(names), size=k, p=p).astype(np.int16)
        else:
            latent = segment.astype(np.int16)
        self.latent_segment[slots] = np.where(segment == self.new_segment, latent, segment)

    def replace_with_new(self, slots: np.ndarray, streams: Streams) -> None:
        """Churned (or displaced) users leave; new cold-start users take their slots.

        The newcomer in a slot is drawn from the synchronised streams keyed by (slot, the slot's generation)
        (``envs.streams.KeyedDraws``), so two runs of one traffic seed that replace the same user get the same newcomer.
        """
        slots = np.asarray(slots, np.int64)
        self.generation[slots] += 1
        draws = KeyedDraws(streams, "new_user", slots, self.generation[slots])
        self._create(slots, np.full(len(slots), self.new_segment, np.int16), draws)

    # ------------------------------------------------------------------ requests
    def sample(self, n: int, request_mix: np.ndarray, streams: Streams, first: int = 0) -> np.ndarray:
        """Draw ``n`` distinct users not in a session: a segment by the request mix, then a user in it.

        Synchronised draws (``envs.streams``): the ``first + r``-th arrival of the run (``first``: arrivals so far) is
        of the segment a uniform keyed by ``first + r`` picks, and it is the free user of that segment whose
        return is due first (:attr:`due`, a time each user draws from its own stream when it becomes free). Two runs
        of one traffic seed therefore see the same users arrive in the same order wherever their sets of free users
        agree, even when sessions end at other steps.
        """
        free = ~self.in_session
        u = streams.uniform("segment", first + np.arange(n))
        cum = np.cumsum(request_mix / request_mix.sum())
        seg_of_request = np.minimum(np.searchsorted(cum, u, side="right"), len(self.table) - 1)
        out = np.empty(n, np.int64)
        leftover = []
        for s in range(len(self.table)):  # a loop over segments (a handful), not over users
            want = np.flatnonzero(seg_of_request == s)
            if len(want) == 0:
                continue
            pool = np.flatnonzero(free & (self.segment == s))
            take = min(len(want), len(pool))
            if take:
                out[want[:take]] = _lowest(pool, self.due[pool], take)
            free[out[want[:take]]] = False
            leftover.extend(want[take:])
        if leftover:  # a segment ran dry: fall back to any free user, and say so
            log.warning(
                "%d requests found no free user in their segment; served by users of other segments "
                "(the request mix is not met: raise `world.num_users` or lower the concurrency)", len(leftover)
            )
            pool = np.flatnonzero(free)
            if len(pool) < len(leftover):
                raise RuntimeError(
                    f"not enough free users for {n} concurrent requests (num_users={self.num_users}); "
                    "raise `world.num_users` above the number of parallel sessions"
                )
            out[leftover] = _lowest(pool, self.due[pool], len(leftover))
        return out

    def schedule_return(self, users: np.ndarray, now: int, streams: Streams) -> None:
        """Users who just became free (or were just created) are due back after an exponential gap with a mean of
        one day of steps, keyed by (user, its sessions so far)."""
        u = streams.uniform("arrival", self.identity(users), self.sessions[users])
        self.due[users] = now - np.log1p(-u) * self.cfg.steps_per_day

    def identity(self, users: np.ndarray) -> np.ndarray:
        """Who holds each slot, as a stream key: the slot plus its generation (a newcomer is a new person)."""
        return np.asarray(users, np.int64) + (self.generation[users] << 32)

    def start_sessions(self, users: np.ndarray) -> None:
        self.in_session[users] = True
        self.sessions[users] += 1
        self.session_steps[users] = 0
        self.session_clicks[users] = 0
        self.session_experience[users] = 0.0
        self.satisfaction[users] = 0.0
        self.fatigue[users] *= 0.5  # a night's rest

    def observation(self, users: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Observable user features: segment one-hot, log history, profile, session progress."""
        s = len(self.table)
        d = self.profile.shape[1]
        k = len(users)
        if out is None:
            out = np.zeros((k, self.observation_size), np.float32)
        else:
            out[:] = 0.0
        out[np.arange(k), self.segment[users]] = 1.0
        out[:, s] = np.log1p(self.history[users]) / 7.0
        out[:, s + 1 : s + 1 + d] = self.profile[users]
        steps = self.session_steps[users]
        out[:, s + 1 + d] = np.minimum(steps, 100) / 100.0
        out[:, s + 2 + d] = self.session_clicks[users] / np.maximum(steps, 1)
        return out

    @property
    def observation_size(self) -> int:
        return len(self.table) + self.profile.shape[1] + 3


def _lowest(pool: np.ndarray, priority: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` members of ``pool`` with the lowest ``priority``, in increasing priority."""
    if k < len(pool):
        part = np.argpartition(priority, k - 1)[:k]
        return pool[part[np.argsort(priority[part], kind="stable")]]
    return pool[np.argsort(priority, kind="stable")]
