"""Functional agents: the traffic router (segment -> pipeline) and the experiment designer (A/B tests).

The experiment designer splits users between an incumbent (arm 0) and a candidate (arm 1) by a
deterministic hash of the user id, so a user stays in one arm across requests. Its decision rule:
the two-sample t-interval of (candidate - incumbent) on per-request outcomes, clustered by user (the unit the test
randomises: :func:`rewards.stats.clustered_difference_interval`; a per-request Welch interval treats a user's
correlated requests as independent and accepted equal arms several times as often as its level); the candidate
is **accepted** when the lower end of the two-sided ``1 - alpha`` interval for (candidate - incumbent) is above
``min_effect`` and every guardrail holds, **rejected** otherwise (including when the data are insufficient).

With ``method="interleaving"`` the designer splits nothing: every request of the test sees an interleaved slate of
both systems (:mod:`agents.evolution.interleaving`), the caller feeds it each request's credit difference
(candidate - incumbent) with :meth:`ExperimentDesigner.observe_paired`, and the same rule is applied to the
user-clustered t-interval of the mean difference (:func:`rewards.stats.clustered_mean_interval`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agents.decision.context import RequestBatch
from agents.decision.params import Choice, DecisionAgent, ParamSpace, Range
from envs.log import InteractionLog
from rewards.inner import inner_metrics, router_metrics
from rewards.stats import WelchInterval, clustered_difference_interval, clustered_mean_interval

__all__ = ["ABDecision", "ExperimentDesigner", "HashSplit", "SegmentRouter", "split_hash"]


class SegmentRouter(DecisionAgent):
    """Routes each request to a pipeline by the user's segment; learns per-(segment, pipeline) engagement.

    ``route_<segment>`` is each segment's assigned pipeline. With more than one pipeline the router also has a
    ``mode``: ``fixed`` (the default) serves the assignment and nothing else, so its statistics never reach its
    decisions (:func:`agents.protocol.promote` does not take it for an agent); ``bandit`` is epsilon-greedy per
    segment over pipelines: a share ``explore`` of the requests goes to a uniformly drawn pipeline (the router's own
    seeded generator), the others to the segment's greedy pipeline: the best lower confidence bound ``mean - Z * se``
    of clicks per request, from the statistics learned from the logs (decayed by ``DECAY`` per window), among the
    pipelines with at least ``MIN_EVIDENCE`` decayed requests; ``route_<segment>`` is the prior: it serves until
    another pipeline's bound beats its own. The bound keeps a pipeline with little evidence (only the explored
    share) from taking a segment on one lucky window.
    """

    role = "router"
    MODES = ("fixed", "bandit")
    DECAY = 0.8  # weight of the previous windows' statistics
    MIN_EVIDENCE = 20.0  # decayed requests of a (segment, pipeline) before its click rate may beat the prior
    Z = 1.0  # standard errors below the mean: the lower confidence bound pipelines are compared on

    def __init__(self, segment_names: list[str], pipeline_names: list[str], name: str = "router",
                 config: dict | None = None, seed: int = 0) -> None:
        self.segment_names, self.pipeline_names = list(segment_names), list(pipeline_names)
        params: list[Choice | Range] = [
            Choice(f"route_{s}", tuple(self.pipeline_names), self.pipeline_names[0]) for s in self.segment_names
        ]
        if len(self.pipeline_names) > 1:  # over one pipeline there is nothing to learn or explore
            params += [Choice("mode", self.MODES, "fixed"), Range("explore", 0.0, 0.5, 0.1)]
        self.params = ParamSpace(params)
        super().__init__(name, config)
        s, p = len(self.segment_names), len(self.pipeline_names)
        self.requests = np.zeros((s, p))
        self.clicks = np.zeros((s, p))
        self.squares = np.zeros((s, p))  # clicks squared, for the variance of clicks per request
        self.rng = np.random.default_rng(seed)

    @property
    def learning(self) -> bool:
        """Whether the learned statistics drive routing (``mode`` bandit)."""
        return self.config.get("mode", "fixed") == "bandit"

    def assignment(self) -> np.ndarray:
        """(S,) pipeline index per segment: the configured ``route_<segment>``."""
        return np.array([self.pipeline_names.index(self.config[f"route_{s}"]) for s in self.segment_names])

    def greedy(self) -> np.ndarray:
        """(S,) the pipeline each segment's non-exploring requests go to: the assignment in ``fixed`` mode; in
        ``bandit`` mode the pipeline with the best lower confidence bound of learned clicks per request among those
        with evidence, the assignment unless another's bound is higher."""
        prior = self.assignment()
        if not self.learning:
            return prior
        n = np.maximum(self.requests, 1e-12)
        mean = self.clicks / n
        se = np.sqrt(np.maximum(self.squares / n - mean**2, 0.0) / n)
        bound = np.where(self.requests >= self.MIN_EVIDENCE, mean - self.Z * se, -np.inf)
        best = bound.argmax(axis=1)
        rows = np.arange(len(prior))
        return np.where(bound[rows, best] > bound[rows, prior], best, prior)

    def reseed(self, seed: int) -> None:
        """Draw the explored requests from ``seed`` from now on (an A/A replicate of a running system)."""
        self.rng = np.random.default_rng(int(seed))

    def act(self, batch: RequestBatch) -> np.ndarray:
        pipe = self.greedy()[batch.segment]
        explore = self.config.get("explore", 0.0) if self.learning else 0.0
        if explore > 0:
            draw = self.rng.random(len(pipe)) < explore
            pipe[draw] = self.rng.integers(0, len(self.pipeline_names), int(draw.sum()))
        return pipe

    def observe(self, log: InteractionLog) -> None:
        """Decay the per-(segment, pipeline) requests, clicks and squared clicks, add the log's (pipelines beyond the
        router's, e.g. an A/B challenger appended to the system, are not counted)."""
        req = log.requests
        s, p = self.requests.shape
        mine = req["pipeline"] < p
        key = req["segment"][mine].astype(np.int64) * p + req["pipeline"][mine]
        self.requests = self.DECAY * self.requests + np.bincount(key, minlength=s * p)[: s * p].reshape(s, p)
        clicks = req["clicks"][mine].astype(np.float64)
        self.clicks = self.DECAY * self.clicks + np.bincount(key, weights=clicks, minlength=s * p)[: s * p].reshape(s, p)
        self.squares = self.DECAY * self.squares + np.bincount(key, weights=clicks**2, minlength=s * p)[: s * p].reshape(s, p)

    def probe(self) -> tuple:
        """Inputs for :func:`agents.protocol.promote`'s loop check: a batch of 64 requests of every segment."""
        n, segments = 64, len(self.segment_names)
        segment = np.repeat(np.arange(segments), n)
        users = np.arange(len(segment), dtype=np.int64)
        return (RequestBatch(users.copy(), users, segment, np.zeros((len(users), 0), np.float32),
                             np.zeros((len(users), 0), np.float32), np.zeros(len(users), np.int64)),)

    def inner_metrics(self, log: InteractionLog) -> dict[str, float]:
        """Clicks per request per segment and their mean (``rewards.inner`` for 'router'), and the share of segments
        whose greedy pipeline is now another than their assignment (``reassigned``)."""
        out = {f"inner/router/{self.name}/{k}": v for k, v in router_metrics(log).items()}
        out[f"inner/router/{self.name}/reassigned"] = float(np.mean(self.greedy() != self.assignment()))
        return out


@dataclass
class ABDecision:
    """Outcome of an A/B test: the effect (candidate - incumbent), its interval and the verdict."""

    metric: str
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    n_incumbent: int
    n_candidate: int
    accepted: bool
    reasons: list[str] = field(default_factory=list)
    guardrail_ok: bool = True  # the guardrail's increase was not significantly above its tolerance

    def as_dict(self) -> dict[str, float | int | bool | str]:
        return {
            "ab/metric": self.metric, "ab/effect": self.effect, "ab/ci_low": self.ci_low, "ab/ci_high": self.ci_high,
            "ab/p_value": self.p_value, "ab/n_incumbent": self.n_incumbent, "ab/n_candidate": self.n_candidate,
            "ab/accepted": self.accepted,
        }


def split_hash(users: np.ndarray, salt: int) -> np.ndarray:
    """A uniform number in [0, 1) per user id, fixed for a ``salt`` and independent across salts (splitmix64)."""
    with np.errstate(over="ignore"):
        z = np.asarray(users).astype(np.uint64) + np.uint64(int(salt) % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53


@dataclass(frozen=True)
class HashSplit:
    """Users split by :func:`split_hash`: arm 1 for the ``share`` of them below it, for a given ``salt`` (what an
    A/B router needs of an experiment designer, without its decision space: any share in [0, 1])."""

    share: float
    salt: int

    def arm(self, users: np.ndarray) -> np.ndarray:
        return (split_hash(users, self.salt) < self.share).astype(np.int64)


class ExperimentDesigner(DecisionAgent):
    """Splits traffic between incumbent and candidate, decides with a stated rule, reports effect and interval.

    ``method``: ``ab`` splits users by the hash (:meth:`arm`) and compares the arms' per-request outcomes
    (:meth:`observe`; the interval clustered by user); ``interleaving`` shows every request of the test an
    interleaved slate of both and compares the teams' credit within each request (:meth:`observe_paired`, the
    user-clustered interval of the mean difference); ``share`` does not apply to it and ``min_requests`` counts the
    test's requests.
    """

    role = "experiment"
    params = ParamSpace([
        Range("share", 0.05, 0.5, 0.5),  # traffic share of the candidate
        Choice("alpha", (0.01, 0.05, 0.1), 0.05),
        Range("min_effect", 0.0, 0.5, 0.0),  # the candidate must beat the incumbent by this much
        Choice("min_requests", (100, 1000, 5000), 1000),  # per arm
        Choice("method", ("ab", "interleaving"), "ab"),  # split users, or interleave both slates on every request
    ])

    def __init__(self, name: str = "experiment", config: dict | None = None, salt: int = 0) -> None:
        super().__init__(name, config)
        self.salt = salt
        self.outcomes: list[list[np.ndarray]] = [[], []]
        self.users: list[list[np.ndarray]] = [[], []]  # the user of each outcome: the clusters of the interval
        self.guardrails: list[list[np.ndarray]] = [[], []]
        self.paired: list[tuple[np.ndarray, np.ndarray]] = []  # interleaving: (credit difference, user) per request
        self.paired_guardrails: list[np.ndarray] = []

    @property
    def interleaving(self) -> bool:
        """Whether the test interleaves (``method`` interleaving) rather than splitting users."""
        return self.config.get("method", "ab") == "interleaving"

    def arm(self, users: np.ndarray) -> np.ndarray:
        """0 (incumbent) or 1 (candidate) per user, by a deterministic hash of (user id, salt): splitmix64's
        finaliser, so that two salts split users independently (a multiplicative hash of ``user + salt`` only
        rotates one split into the next: two salts' halves then overlap by any amount from 0 to 1)."""
        return HashSplit(self.config["share"], self.salt).arm(users)

    def act(self, batch: RequestBatch) -> np.ndarray:
        return self.arm(batch.users)

    def observe(self, log: InteractionLog, metric: str = "clicks", guardrail: str | None = "violations",
                arms: tuple[int | tuple[int, ...], int | tuple[int, ...]] = (0, 1)) -> None:
        """Collect per-request outcomes by arm: requests served by pipeline(s) ``arms[0]`` (the incumbent)
        and ``arms[1]`` (the candidate); other pipelines' requests are not part of the test."""
        req = log.requests
        for a, index in enumerate(arms):
            m = np.isin(req["pipeline"], np.atleast_1d(index))
            self.outcomes[a].append(req[metric][m].astype(np.float64))
            self.users[a].append(req["user"][m])
            if guardrail is not None:
                self.guardrails[a].append(req[guardrail][m].astype(np.float64))

    def observe_paired(self, difference: np.ndarray, users: np.ndarray, guardrail: np.ndarray | None = None) -> None:
        """Collect an interleaved test's per-request credit differences (candidate's team - incumbent's team, e.g.
        clicks), the requests' users (the clusters of the interval) and optionally the guardrail's difference
        (e.g. violations) of the same requests."""
        difference, users = np.asarray(difference, np.float64).ravel(), np.asarray(users).ravel()
        if len(difference) != len(users) or (guardrail is not None and len(np.ravel(guardrail)) != len(users)):
            raise ValueError(f"`difference`, `users` and `guardrail` must have one entry per request (got "
                             f"{len(difference)}, {len(users)}, {None if guardrail is None else len(np.ravel(guardrail))})")
        self.paired.append((difference, users))
        if guardrail is not None:
            self.paired_guardrails.append(np.asarray(guardrail, np.float64).ravel())

    def _rule(self, metric: str, interval: WelchInterval, n: tuple[int, int], too_few: str,
              guard: WelchInterval | None, guardrail_tolerance: float | None) -> ABDecision:
        """The decision rule: enough requests, the interval's lower end above ``min_effect``, the guardrail's
        increase not significantly above its tolerance."""
        effect, lo, hi, _, p = interval
        reasons = []
        enough = min(n) >= self.config["min_requests"]
        if not enough:
            reasons.append(f"{too_few} ({min(n)} < {self.config['min_requests']})")
        wins = lo > self.config["min_effect"]
        if enough and not wins:
            reasons.append(f"interval lower end {lo:.4f} <= min_effect {self.config['min_effect']}")
        guard_ok = True
        if guardrail_tolerance is not None and guard is not None:
            g_eff, g_lo = guard[0], guard[1]
            guard_ok = not (g_lo > guardrail_tolerance)
            if not guard_ok:
                reasons.append(f"guardrail worsened: increase {g_eff:.4f} (interval low {g_lo:.4f}) > {guardrail_tolerance}")
        return ABDecision(metric, effect, lo, hi, p, n[0], n[1], bool(enough and wins and guard_ok), reasons, guard_ok)

    def decide(self, metric: str = "clicks", guardrail_tolerance: float | None = None) -> ABDecision:
        """Apply the decision rule to everything observed so far (``method`` interleaving: to the paired credit
        differences of :meth:`observe_paired`; the decision's metric is then ``interleaving/<metric>`` and both
        of its counts are the test's requests)."""
        level = 1 - self.config["alpha"]
        if self.interleaving:
            d = np.concatenate([x for x, _ in self.paired]) if self.paired else np.zeros(0)
            users = np.concatenate([u for _, u in self.paired]) if self.paired else np.zeros(0, np.int64)
            guard = (clustered_mean_interval(np.concatenate(self.paired_guardrails), users, level)
                     if guardrail_tolerance is not None and self.paired_guardrails else None)
            return self._rule(f"interleaving/{metric}", clustered_mean_interval(d, users, level), (len(d), len(d)),
                              "too few interleaved requests", guard, guardrail_tolerance)
        a, b = (np.concatenate(x) if x else np.zeros(0) for x in self.outcomes)
        ua, ub = (np.concatenate(u) if u else np.zeros(0, np.int64) for u in self.users)
        guard = None
        if guardrail_tolerance is not None and self.guardrails[0]:
            ga, gb = (np.concatenate(g) for g in self.guardrails)
            guard = clustered_difference_interval(gb, ub, ga, ua, level)
        return self._rule(metric, clustered_difference_interval(b, ub, a, ua, level), (len(a), len(b)),
                          "too few requests per arm", guard, guardrail_tolerance)  # candidate - incumbent

    def reset(self) -> None:
        self.outcomes, self.users, self.guardrails = [[], []], [[], []], [[], []]
        self.paired, self.paired_guardrails = [], []

    def inner_metrics(self, log: InteractionLog) -> dict[str, float]:
        """The role's allocation metrics (``rewards.inner`` for 'experiment') and the current test's effect."""
        d = self.decide()
        out = {k.replace("inner/experiment/", f"inner/experiment/{self.name}/"): v
               for k, v in inner_metrics("experiment", log).items()}
        return out | {
            f"inner/experiment/{self.name}/effect": d.effect,
            f"inner/experiment/{self.name}/ci_width": d.ci_high - d.ci_low,
            f"inner/experiment/{self.name}/accepted": float(d.accepted),
        }
