"""The user population: segments, true interests, observable profiles, fatigue and satisfaction.

Users are column arrays over ``num_users`` slots. A user who churns is replaced in the slot by a new
(cold-start) user, so shapes never change. Per-segment parameters are gathered into arrays indexed by
segment id so that a batch of users is handled without a Python loop over users.
"""

from __future__ import annotations

import logging

import numpy as np

from envs.config import SegmentConfig, WorldConfig
from envs.items import unit_rows

__all__ = ["Population", "SegmentTable"]

log = logging.getLogger(__name__)


class SegmentTable:
    """Per-segment parameters as arrays of length ``num_segments`` (gather with ``table.x[segment]``)."""

    def __init__(self, segments: dict[str, SegmentConfig]) -> None:
        self.names = list(segments)
        cfgs = list(segments.values())
        for key in SegmentConfig.__dataclass_fields__:
            setattr(self, key, np.array([getattr(c, key) for c in cfgs], np.float32))
        # utility weights of the observable item features, in ``envs.items.ITEM_FEATURES`` order
        self.feature_weights = np.stack(
            [self.quality_sensitivity, self.novelty_sensitivity, self.popularity_sensitivity, self.risk_appeal], axis=1
        )

    def __len__(self) -> int:
        return len(self.names)


class Population:
    """All users, as column arrays."""

    def __init__(self, cfg: WorldConfig, topic_centers: np.ndarray, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.rng = rng
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
        mix = np.array([cfg.request_mix.get(s, 0.0) for s in self.table.names])
        self._create(np.arange(n), segment=rng.choice(len(self.table), size=n, p=mix))

    # ------------------------------------------------------------------ creation
    def _create(self, slots: np.ndarray, segment: np.ndarray) -> None:
        rng, k = self.rng, len(slots)
        if k == 0:
            return
        t = self.topic_centers.shape[0]
        alpha = self.table.interest_concentration[segment]
        # Dirichlet per user with a per-segment concentration: normalised Gamma draws
        w = rng.gamma(np.repeat(alpha[:, None], t, axis=1))
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
        noise = 0.2 * rng.standard_normal((k, self.topic_centers.shape[1])).astype(np.float32)
        interest = unit_rows(w.astype(np.float32) @ self.topic_centers + noise)
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
        grad = self.cfg.graduate_to
        names = self.table.names
        if self.cfg.graduate_after > 0:
            p = np.array([grad.get(s, 0.0) for s in names])
            latent = rng.choice(len(names), size=k, p=p).astype(np.int16)
        else:
            latent = segment.astype(np.int16)
        self.latent_segment[slots] = np.where(segment == self.new_segment, latent, segment)

    def replace_with_new(self, slots: np.ndarray) -> None:
        """Churned (or displaced) users leave; new cold-start users take their slots."""
        self._create(slots, segment=np.full(len(slots), self.new_segment, np.int16))

    # ------------------------------------------------------------------ requests
    def sample(self, n: int, request_mix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` distinct users not in a session: a segment by the request mix, then a user in it."""
        free = ~self.in_session
        seg_of_request = rng.choice(len(self.table), size=n, p=request_mix)
        out = np.empty(n, np.int64)
        leftover = []
        for s in range(len(self.table)):  # a loop over segments (a handful), not over users
            want = np.flatnonzero(seg_of_request == s)
            if len(want) == 0:
                continue
            pool = np.flatnonzero(free & (self.segment == s))
            take = min(len(want), len(pool))
            out[want[:take]] = rng.choice(pool, size=take, replace=False) if take else []
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
            out[leftover] = rng.choice(pool, size=len(leftover), replace=False)
        return out

    def start_sessions(self, users: np.ndarray) -> None:
        self.in_session[users] = True
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
