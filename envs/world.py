"""The simulated world: a catalog, a user population, a clock with a shift schedule, and user responses.

Everything is vectorised over a batch of requests: ``respond(users, slates)`` takes ``B`` users and a
``(B, K)`` slate of item ids and answers with arrays. The world itself (catalog, initial users, what shifts
do to the catalog) draws from generators spawned from one ``SeedSequence``; every draw about a user or a
request (arrival, candidate set, choice, dwell, like, exit, return, churn, the newcomer who replaces a
churned user) comes from the synchronised streams of ``envs.streams``, keyed by a traffic seed (derived from
the seed unless given) and the user's own event counters. One seed gives bit-identical runs, and two runs of
one seed serving different systems share every uniform wherever their users' histories agree.

Per-step dynamics for user ``i`` shown slate ``s`` (all vectorised):

* utility ``u_k = a * <interest_i, e_k> + q * quality_k + n * freshness_k + p * popularity_k
  + r * risk_k - f * fatigue_i[topic_k] - v * #{j < k: topic_j = topic_k}`` with the segment's sensitivities
  ``(a, q, n, p, r, f)`` and slate satiation ``v`` (variety seeking within the slate; 0 by default);
* a multinomial-logit choice with position bias and a no-click option (``envs.choice``);
* a click yields dwell ``exp(3.4 + 0.8 <interest, e> + quality + 0.4 z)`` seconds and a like with
  probability ``sigmoid(-2 + 2 <interest, e> + 2 quality)``;
* experience ``x = click * (0.5 + quality + like) - 0.3 * (1 - click) - risk_sensitivity * violations``;
  satisfaction ``s <- 0.7 s + 0.3 x``; the session continues with probability ``sigmoid(patience + 2 s)``;
* on a click the interest drifts toward the item, the observable profile follows, topic fatigue grows;
* when a session ends the user returns next day with probability ``sigmoid(return_bias + mean x)``;
  a user who does not return churns with the segment's churn probability and is replaced by a new user.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from envs.calibration import grounding
from envs.choice import MultinomialLogitChoice
from envs.config import WorldConfig
from envs.items import Catalog, unit_rows
from envs.streams import Streams, box_muller
from envs.users import Population

__all__ = ["Response", "SessionEnd", "World"]

SMALL_BATCH = 8  # candidate draws for at most this many rows skip the full-catalog permutation
DWELL_LOG_BASE = 3.4  # log seconds: median dwell ~30 s on a neutral item
DWELL_NOISE = 0.4  # standard deviation of log dwell around its mean
RESPONSE_PURPOSES = ("choice", "dwell_u", "dwell_v", "like", "exit")  # the keyed uniforms of one response


def sigmoid(x: np.ndarray) -> np.ndarray:
    # clipped: float32 exp overflows past 88; |x| <= 80 leaves every value that is not already 0 or 1 unchanged
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


@dataclass
class Response:
    """What a batch of users did with their slates. Arrays are (B, K) per item or (B,) per request."""

    click: np.ndarray  # (B, K) bool
    dwell: np.ndarray  # (B, K) float32 seconds, 0 where not clicked
    like: np.ndarray  # (B, K) bool
    violation: np.ndarray  # (B, K) bool: the shown item violates policy
    exit: np.ndarray  # (B,) bool: the user ended the session after this slate
    choice_prob: np.ndarray  # (B, K + 1) choice probabilities; column 0 is no click
    experience: np.ndarray  # (B,) float32 per-step experience that drives satisfaction
    satisfaction: np.ndarray  # (B,) float32 satisfaction after the step (hidden state, for diagnostics)
    # what the choice model expected (the noise-free outcomes): E[click] per item is ``choice_prob[:, 1:]``
    expected_dwell: np.ndarray  # (B, K) float32 E[dwell seconds at k] = P(click k) E[dwell | click k]
    expected_like: np.ndarray  # (B, K) float32 P(click k and like)
    exit_prob: np.ndarray  # (B,) float32 P(the user ends the session after this slate)

    @property
    def clicked(self) -> np.ndarray:
        return self.click.any(axis=1)

    @property
    def expected_click(self) -> np.ndarray:
        """(B, K) P(click at k) under the choice model."""
        return self.choice_prob[:, 1:]

    @property
    def expected_clicks(self) -> np.ndarray:
        """(B,) expected clicks per request: 1 - P(no click)."""
        return 1.0 - self.choice_prob[:, 0]


@dataclass
class SessionEnd:
    """Outcome of ending sessions: next-day return and churn, per user in the batch."""

    returned: np.ndarray  # (B,) bool
    churned: np.ndarray  # (B,) bool
    session_steps: np.ndarray  # (B,) int
    session_clicks: np.ndarray  # (B,) int
    return_prob: np.ndarray  # (B,) float32 P(return next day) given the session
    churn_prob: np.ndarray  # (B,) float32 P(not returning and churning) given the session


class World:
    """Items, users, a clock and a shift schedule; answers requests with vectorised responses."""

    def __init__(self, cfg: WorldConfig | None = None, seed: int | np.random.SeedSequence | None = None,
                 traffic_seed: int | None = None) -> None:
        self.cfg = cfg if cfg is not None else WorldConfig()
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self.seed_sequence = ss
        items_ss, users_ss, _, _, _, shift_ss, traffic_ss = ss.spawn(7)  # 2-4: retired (sequential traffic streams)
        c = self.cfg
        self.catalog = Catalog(
            c.items, c.num_items, c.num_topics, c.embedding_dim, c.num_creators, np.random.default_rng(items_ss)
        )
        users_rng = np.random.default_rng(users_ss)
        self.users = Population(c, self.catalog.topic_centers, users_rng)
        if c.data:  # a data set's items and users replace the generated ones (envs.calibration)
            found = grounding(c.data, c.embedding_dim)
            self.catalog.ground(found)
            self.users.ground(found, users_rng)
        # every draw about a user or a request: synchronised streams keyed by the traffic seed (``envs.streams``)
        self.streams = Streams(traffic_ss if traffic_seed is None else np.random.SeedSequence(int(traffic_seed)))
        self._arrivals = 0  # arrivals so far (keys the next arrival's segment)
        self.users.schedule_return(np.arange(c.num_users), 0, self.streams)  # first visits: within about a day
        self.shift_rng = np.random.default_rng(shift_ss)  # what shifts do to the catalog (a world property)
        self.request_mix = np.array([c.request_mix.get(s, 0.0) for s in c.segment_names], np.float64)
        # requests per session by segment (mix_of="requests"): a prior from patience at a moderate satisfaction,
        # then each day half the last day's measured mean; and the day's ended sessions and their requests
        tab = self.users.table
        self.session_length = 1.0 / np.maximum(1.0 - sigmoid(tab.patience.astype(np.float64) + 1.0), 1e-9)
        self._ended = np.zeros((2, len(tab)), np.float64)  # sessions, requests
        self.steps = 0
        self.day = 0
        self.events: list[tuple[int, str]] = []
        self._choice: dict[int, MultinomialLogitChoice] = {}
        self._apply_shifts(day=0)

    # ------------------------------------------------------------------ clock
    @property
    def now(self) -> float:
        """Current time in days."""
        return self.steps / self.cfg.steps_per_day

    def tick(self) -> None:
        """Advance the clock by one step; at a day boundary expire items and apply scheduled shifts."""
        self.steps += 1
        day = self.steps // self.cfg.steps_per_day
        while self.day < day:
            self.day += 1
            self._update_session_length()
            self.catalog.expire(self.now)
            self._apply_shifts(self.day)
            self.catalog.refresh_features(self.now)

    def _update_session_length(self) -> None:
        sessions, requests = self._ended
        seen = sessions > 0
        self.session_length[seen] = 0.5 * self.session_length[seen] + 0.5 * requests[seen] / sessions[seen]
        self._ended[:] = 0.0

    @property
    def arrival_mix(self) -> np.ndarray:
        """The share of session starts by segment: the request mix itself (``mix_of="sessions"``), or the request
        mix divided by each segment's mean session length (``"requests"``), so that requests follow the mix."""
        if self.cfg.mix_of == "sessions":
            return self.request_mix
        weights = self.request_mix / self.session_length
        return weights / weights.sum()

    def _apply_shifts(self, day: int) -> None:
        cat, pop = self.catalog, self.users
        for i, shift in enumerate(self.cfg.shifts):
            if not shift.fires_on(day):
                continue
            if shift.kind == "segment_mix":
                mix = shift.request_mix or {}
                self.request_mix = np.array([mix.get(s, 0.0) for s in self.cfg.segment_names])
            elif shift.kind == "topic_shock":
                center = cat.topic_centers[shift.topic]
                pop.interest[:] = unit_rows(pop.interest + shift.strength * center)
                cat.topic_boost[shift.topic] += shift.strength
            elif shift.kind == "catalog_refresh":
                cat.refresh(shift.fraction, self.now)
            elif shift.kind == "cold_start_influx":
                free = np.flatnonzero(~pop.in_session)
                k = int(round(shift.fraction * len(free)))
                influx = self.streams.generator("shift", i, day).choice(free, size=k, replace=False)
                pop.replace_with_new(influx, self.streams)
                pop.due[influx] = self.steps  # the newcomers are due now
                mix = self.request_mix.copy()
                mix[pop.new_segment] *= 1.0 + shift.strength
                self.request_mix = mix / mix.sum()
            elif shift.kind == "taste":
                names = self.cfg.segment_names
                pop.table.set(shift.param, shift.value, names.index(shift.segment) if shift.segment else None)
            elif shift.kind == "risk_surge":
                cat.surge_risk(self.shift_rng.random(cat.num_items) < shift.fraction, 1.0 + shift.strength, self.shift_rng)
            self.events.append((day, shift.kind))
        cat.refresh_features(self.now)

    # ------------------------------------------------------------------ requests
    def new_requests(self, n: int) -> np.ndarray:
        """Start ``n`` sessions of distinct free users drawn by the current arrival mix (:attr:`arrival_mix`); return
        their ids."""
        users = self.users.sample(n, self.arrival_mix, self.streams, self._arrivals)
        self._arrivals += n
        self.users.start_sessions(users)
        return users

    def candidates(self, users: np.ndarray, size: int, features: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """A uniformly random candidate set of ``size`` distinct items for each of ``users`` at its next request:
        ids (n, size), features (n, size, F) (None with ``features=False``: ids only, no copy of item rows).

        Each set is a window of a permutation of the catalog drawn for this step (a uniform random subset; sets in
        one call overlap at random), starting where the user's stream (keyed by its request counter) says: a user
        offered candidates at the same step and request in two runs gets the same set. Windows are contiguous, so
        features are copied in blocks.
        """
        cat = self.catalog
        num = cat.num_items
        users = np.asarray(users, np.int64)
        if users.ndim != 1:
            raise TypeError(f"`users` must be a 1-D array of user ids (got shape {users.shape}); "
                            "candidate sets are drawn per user from its own stream")
        n = len(users)
        ident = self.users.identity(users)
        if n <= SMALL_BATCH:  # a few rows: draw each set directly (O(size), not O(num_items))
            ids = np.stack([_distinct(row, size, num) for row in self.streams.integers(
                "candidates", ident, self.users.requests[users], num, size + size // 2 + 8)]).reshape(n, size)
            return ids, (cat.features[ids] if features else None)
        perm = self.streams.generator("catalog_order", self.steps).permutation(num)
        ring = np.concatenate([perm, perm[: size - 1]])
        start = (self.streams.uniform("candidates", ident, self.users.requests[users]) * num).astype(np.int64)
        if not features:
            return ring[start[:, None] + np.arange(size)], None
        feats = np.take(cat.features, ring, axis=0)
        fs, ids = feats.strides, ring.strides
        win_f = as_strided(feats, shape=(num, size, feats.shape[1]), strides=(fs[0], fs[0], fs[1]), writeable=False)
        win_i = as_strided(ring, shape=(num, size), strides=(ids[0], ids[0]), writeable=False)
        return win_i[start], win_f[start]

    # ------------------------------------------------------------------ responses
    def choice_model(self, slate_size: int) -> MultinomialLogitChoice:
        if slate_size not in self._choice:
            self._choice[slate_size] = MultinomialLogitChoice(slate_size, self.cfg.position_decay)
        return self._choice[slate_size]

    def utility(self, users: np.ndarray, slate: np.ndarray, shown: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Utilities (B, K) of each slate item for its user, and the cosine affinities (B, K). ``shown``: the slate's
        first occurrences (computed when None), what slate satiation counts."""
        cat, pop, tab = self.catalog, self.users, self.users.table
        seg = pop.segment[users]
        d = cat.embedding.shape[1]
        f = np.take(cat.features, slate, axis=0)  # (B, K, D + 4): one gather for embedding and scalar features
        affinity = np.einsum("bkd,bd->bk", f[..., :d], pop.interest[users])
        fatigue = pop.fatigue[users[:, None], cat.topic[slate]]
        u = tab.affinity_scale[seg, None] * affinity
        u += np.einsum("bkf,bf->bk", f[..., d:], tab.feature_weights[seg])
        u -= tab.fatigue_sensitivity[seg, None] * fatigue
        satiation = tab.slate_satiation[seg]
        if satiation.any():  # items of the same topic shown above this one in the slate
            topic = cat.topic[slate]
            above = np.tri(slate.shape[1], k=-1, dtype=bool)  # above[k, j]: j < k
            shown = _first_occurrence(slate) if shown is None else shown
            seen = above & shown[:, None, :]  # a hidden copy of an item is not seen
            repeats = ((topic[:, :, None] == topic[:, None, :]) & seen).sum(axis=2, dtype=np.float32)
            u -= satiation[:, None] * repeats
        return u, affinity

    def respond(self, users: np.ndarray, slate: np.ndarray) -> Response:
        """Users ``(B,)`` (distinct, in session) see slates ``(B, K)`` of item ids; sample and apply their response.

        Every uniform is keyed by (user, its request counter) (``envs.streams``): a user shown the same slate in the
        same state in two runs responds the same way. The response also carries what the choice model expected
        (``expected_*``), the noise-free version of each outcome.
        """
        cat, pop, tab, streams = self.catalog, self.users, self.users.table, self.streams
        b, k = slate.shape
        seg = pop.segment[users]
        ident, counter = pop.identity(users), pop.requests[users]
        pop.requests[users] += 1
        shown = _first_occurrence(slate)  # later copies of an item in the same slate are not shown again
        utility, affinity = self.utility(users, slate, shown)
        model = self.choice_model(k)
        probs = model.probabilities(utility, tab.no_click_utility[seg], shown)
        u_choice, u_dwell, v_dwell, u_like, u_exit = streams.uniform(RESPONSE_PURPOSES, ident, counter).astype(np.float32)
        choice = model.sample(probs, u_choice)
        clicked = choice > 0
        pos = np.maximum(choice - 1, 0)
        rows = np.arange(b)
        click = np.zeros((b, k), bool)
        click[rows[clicked], pos[clicked]] = True
        item = slate[rows, pos]
        aff_c = affinity[rows, pos]
        q_c = cat.quality[item]
        z = box_muller(u_dwell, v_dwell)
        dwell_c = np.exp(DWELL_LOG_BASE + 0.8 * aff_c + q_c + DWELL_NOISE * z).astype(np.float32)
        like_c = u_like < sigmoid(-2.0 + 2.0 * aff_c + 2.0 * q_c)
        dwell = np.zeros((b, k), np.float32)
        dwell[rows[clicked], pos[clicked]] = dwell_c[clicked]
        like = np.zeros((b, k), bool)
        like[rows[clicked], pos[clicked]] = like_c[clicked]
        # expected outcomes per item: P(click at k), E[dwell 1{click at k}] (log-normal mean), P(like at k)
        p_item = probs[:, 1:]
        q_all = cat.quality[slate]
        expected_dwell = p_item * np.exp(DWELL_LOG_BASE + 0.8 * affinity + q_all + 0.5 * DWELL_NOISE**2)
        expected_like = p_item * sigmoid(-2.0 + 2.0 * affinity + 2.0 * q_all)
        violation = cat.violating[slate] & shown
        n_viol = violation.sum(axis=1)
        experience = np.where(clicked, 0.5 + q_c + like_c, -0.3) - tab.risk_sensitivity[seg] * n_viol
        experience = experience.astype(np.float32)
        sat = 0.7 * pop.satisfaction[users] + 0.3 * experience
        pop.satisfaction[users] = sat
        pop.session_steps[users] += 1
        pop.session_clicks[users] += clicked
        pop.session_experience[users] += experience
        pop.fatigue[users] *= tab.fatigue_decay[seg, None]  # fatigue fades every step, grows on clicks
        stay = sigmoid(tab.patience[seg] + 2.0 * sat)
        exit_ = u_exit >= stay
        self._learn(users[clicked], item[clicked], seg[clicked])
        return Response(click, dwell, like, violation, exit_, probs, experience, sat.astype(np.float32),
                        expected_dwell.astype(np.float32), expected_like.astype(np.float32), (1.0 - stay).astype(np.float32))

    def _learn(self, users: np.ndarray, item: np.ndarray, seg: np.ndarray) -> None:
        """Consumption changes users: interest drift, observable profile, history, topic fatigue, graduation."""
        cat, pop, tab = self.catalog, self.users, self.users.table
        if len(users) == 0:
            return
        emb = cat.embedding[item]
        eta = tab.drift_rate[seg, None]
        pop.interest[users] = unit_rows((1.0 - eta) * pop.interest[users] + eta * emb)
        pop.profile[users] = 0.9 * pop.profile[users] + 0.1 * emb
        pop.history[users] += 1
        pop.fatigue[users, cat.topic[item]] += tab.fatigue_increment[seg]
        grad = self.cfg.graduate_after
        if grad > 0:
            done = (seg == pop.new_segment) & (pop.history[users] >= grad)
            pop.segment[users[done]] = pop.latent_segment[users[done]]

    def close_sessions(self, users: np.ndarray) -> SessionEnd:
        """Draw the outcome of ending the sessions of ``users`` (next-day return, churn).

        The users stay reserved (not drawn for new requests, not yet replaced if they churn) until
        :meth:`release`, so the ended session can still be observed as it was.
        """
        pop, tab, streams = self.users, self.users.table, self.streams
        if not len(users):
            empty = np.zeros(0, np.float32)
            return SessionEnd(np.zeros(0, bool), np.zeros(0, bool), np.zeros(0, np.int32), np.zeros(0, np.int32), empty, empty)
        seg = pop.segment[users]
        ident, session = pop.identity(users), pop.sessions[users]
        steps = pop.session_steps[users].copy()
        clicks = pop.session_clicks[users].copy()
        mean_x = pop.session_experience[users] / np.maximum(steps, 1)
        p_return = sigmoid(tab.return_bias[seg] + mean_x)
        p_churn = tab.churn_probability[seg]
        u_return, u_churn = streams.uniform(("return", "churn"), ident, session)
        returned = u_return < p_return
        churned = ~returned & (u_churn < p_churn)
        if self.cfg.mix_of == "requests":  # session lengths weigh arrivals only then
            self._ended[0] += np.bincount(seg, minlength=len(tab))[: len(tab)]
            self._ended[1] += np.bincount(seg, weights=steps, minlength=len(tab))[: len(tab)]
        return SessionEnd(returned, churned, steps, clicks, p_return.astype(np.float32),
                          ((1.0 - p_return) * p_churn).astype(np.float32))

    def release(self, users: np.ndarray, churned: np.ndarray) -> None:
        """Free users whose sessions were closed; churned ones leave and new users take their slots."""
        self.users.in_session[users] = False
        self.users.replace_with_new(users[churned], self.streams)
        self.users.schedule_return(users, self.steps, self.streams)

    def end_sessions(self, users: np.ndarray) -> SessionEnd:
        """Close and release at once: draw return and churn, free the users, replace the churned."""
        ended = self.close_sessions(users)
        self.release(users, ended.churned)
        return ended


def _distinct(draws: np.ndarray, size: int, num: int) -> np.ndarray:
    """The first ``size`` distinct values of ``draws`` (keyed uniform integers in [0, num)), in draw order; topped up
    with the smallest unused ids in the rare case that too few are distinct (only when ``size`` nears ``num``)."""
    _, first = np.unique(draws, return_index=True)
    out = draws[np.sort(first)[:size]]
    if len(out) < size:
        out = np.concatenate([out, np.setdiff1d(np.arange(num), out)[: size - len(out)]])
    return out


def _first_occurrence(slate: np.ndarray) -> np.ndarray:
    """(B, K) mask, True where the item has not appeared earlier in its row."""
    shown = np.ones(slate.shape, bool)
    if slate.shape[1] < 2:
        return shown
    srt = np.sort(slate, axis=1)  # cheaper than argsort: the usual slate has no repeats
    if not (srt[:, 1:] == srt[:, :-1]).any():
        return shown
    order = np.argsort(slate, axis=1, kind="stable")  # equal ids keep their left-to-right order
    srt = np.take_along_axis(slate, order, axis=1)
    repeat = srt[:, 1:] == srt[:, :-1]
    if repeat.any():
        rows, cols = np.nonzero(repeat)
        shown[rows, order[rows, cols + 1]] = False
    return shown
