"""Functional agents: the traffic router (segment -> pipeline) and the experiment designer (A/B tests).

The experiment designer splits users between an incumbent (arm 0) and a candidate (arm 1) by a
deterministic hash of the user id, so a user stays in one arm across requests. Its decision rule:
Welch's two-sample z-interval on per-request outcomes; the candidate is **accepted** when the lower
end of the two-sided ``1 - alpha`` interval for (candidate - incumbent) is above ``min_effect`` and
every guardrail holds, **rejected** otherwise (including when the data are insufficient).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from agents.decision.context import RequestBatch
from agents.decision.params import Choice, DecisionAgent, ParamSpace, Range
from envs.log import InteractionLog

__all__ = ["ABDecision", "ExperimentDesigner", "SegmentRouter", "welch_interval"]


class SegmentRouter(DecisionAgent):
    """Routes each request to a pipeline by the user's segment; learns per-(segment, pipeline) engagement."""

    role = "router"

    def __init__(self, segment_names: list[str], pipeline_names: list[str], name: str = "router", config: dict | None = None) -> None:
        self.segment_names, self.pipeline_names = list(segment_names), list(pipeline_names)
        self.params = ParamSpace([Choice(f"route_{s}", tuple(self.pipeline_names), self.pipeline_names[0]) for s in self.segment_names])
        super().__init__(name, config)
        s, p = len(self.segment_names), len(self.pipeline_names)
        self.requests = np.zeros((s, p))
        self.clicks = np.zeros((s, p))

    def assignment(self) -> np.ndarray:
        """(S,) pipeline index per segment."""
        return np.array([self.pipeline_names.index(self.config[f"route_{s}"]) for s in self.segment_names])

    def act(self, batch: RequestBatch) -> np.ndarray:
        return self.assignment()[batch.segment]

    def observe(self, log: InteractionLog) -> None:
        req = log.requests
        s, p = self.requests.shape
        key = req["segment"].astype(np.int64) * p + req["pipeline"]
        self.requests = 0.8 * self.requests + np.bincount(key, minlength=s * p)[: s * p].reshape(s, p)
        self.clicks = 0.8 * self.clicks + np.bincount(key, weights=req["clicks"], minlength=s * p)[: s * p].reshape(s, p)

    def inner_metrics(self, log: InteractionLog) -> dict[str, float]:
        from rewards.inner import router_metrics

        return {f"inner/router/{self.name}/{k}": v for k, v in router_metrics(log).items()}


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

    def as_dict(self) -> dict[str, float | int | bool | str]:
        return {
            "ab/metric": self.metric, "ab/effect": self.effect, "ab/ci_low": self.ci_low, "ab/ci_high": self.ci_high,
            "ab/p_value": self.p_value, "ab/n_incumbent": self.n_incumbent, "ab/n_candidate": self.n_candidate,
            "ab/accepted": self.accepted,
        }


def welch_interval(a: np.ndarray, b: np.ndarray, alpha: float) -> tuple[float, float, float, float]:
    """Effect ``mean(b) - mean(a)``, two-sided ``1 - alpha`` normal interval (Welch s.e.), two-sided p-value."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return float("nan"), -math.inf, math.inf, 1.0
    effect = float(b.mean() - a.mean())
    se = math.sqrt(a.var(ddof=1) / na + b.var(ddof=1) / nb)
    if se == 0:
        return effect, effect, effect, 0.0 if effect != 0 else 1.0
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p = 2 * (1 - NormalDist().cdf(abs(effect) / se))
    return effect, effect - z * se, effect + z * se, p


class ExperimentDesigner(DecisionAgent):
    """Splits traffic between incumbent and candidate, decides with a stated rule, reports effect and interval."""

    role = "experiment"
    params = ParamSpace([
        Range("share", 0.05, 0.5, 0.5),  # traffic share of the candidate
        Choice("alpha", (0.01, 0.05, 0.1), 0.05),
        Range("min_effect", 0.0, 0.5, 0.0),  # the candidate must beat the incumbent by this much
        Choice("min_requests", (100, 1000, 5000), 1000),  # per arm
    ])

    def __init__(self, name: str = "experiment", config: dict | None = None, salt: int = 0) -> None:
        super().__init__(name, config)
        self.salt = salt
        self.outcomes: list[list[np.ndarray]] = [[], []]
        self.guardrails: list[list[np.ndarray]] = [[], []]

    def arm(self, users: np.ndarray) -> np.ndarray:
        """0 (incumbent) or 1 (candidate) per user, by a deterministic multiplicative hash of the user id."""
        h = ((users.astype(np.uint64) + np.uint64(self.salt)) * np.uint64(2654435761)) % np.uint64(2**32)
        return (h.astype(np.float64) / 2**32 < self.config["share"]).astype(np.int64)

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
            if guardrail is not None:
                self.guardrails[a].append(req[guardrail][m].astype(np.float64))

    def decide(self, metric: str = "clicks", guardrail_tolerance: float | None = None) -> ABDecision:
        """Apply the decision rule to everything observed so far."""
        a = np.concatenate(self.outcomes[0]) if self.outcomes[0] else np.zeros(0)
        b = np.concatenate(self.outcomes[1]) if self.outcomes[1] else np.zeros(0)
        effect, lo, hi, p = welch_interval(a, b, self.config["alpha"])
        reasons = []
        enough = min(len(a), len(b)) >= self.config["min_requests"]
        if not enough:
            reasons.append(f"too few requests per arm ({min(len(a), len(b))} < {self.config['min_requests']})")
        wins = lo > self.config["min_effect"]
        if enough and not wins:
            reasons.append(f"interval lower end {lo:.4f} <= min_effect {self.config['min_effect']}")
        guard_ok = True
        if guardrail_tolerance is not None and self.guardrails[0]:
            ga, gb = np.concatenate(self.guardrails[0]), np.concatenate(self.guardrails[1])
            g_eff, g_lo, _, _ = welch_interval(ga, gb, self.config["alpha"])
            guard_ok = not (g_lo > guardrail_tolerance)
            if not guard_ok:
                reasons.append(f"guardrail worsened: increase {g_eff:.4f} (interval low {g_lo:.4f}) > {guardrail_tolerance}")
        accepted = bool(enough and wins and guard_ok)
        return ABDecision(metric, effect, lo, hi, p, len(a), len(b), accepted, reasons)

    def reset(self) -> None:
        self.outcomes, self.guardrails = [[], []], [[], []]

    def inner_metrics(self, log: InteractionLog) -> dict[str, float]:
        """The role's allocation metrics (``rewards.inner`` for 'experiment') and the current test's effect."""
        from rewards.inner import inner_metrics

        d = self.decide()
        out = {k.replace("inner/experiment/", f"inner/experiment/{self.name}/"): v
               for k, v in inner_metrics("experiment", log).items()}
        return out | {
            f"inner/experiment/{self.name}/effect": d.effect,
            f"inner/experiment/{self.name}/ci_width": d.ci_high - d.ci_low,
            f"inner/experiment/{self.name}/accepted": float(d.accepted),
        }
