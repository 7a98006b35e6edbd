"""Fusion agents: merge recall routes into one candidate set by quotas, and combine multi-task scores.

``QuotaFusion`` takes each route's best ``quota_r * size`` candidates, empties repeats (keeping the
first route that found an item as its provenance; empty entries are -1) and learns, if ``adapt_rate > 0``, to shift quota
toward routes whose items get clicked. ``MultiTaskFusion`` mixes the ranker's click, like and dwell
heads with weights (like and dwell are predicted given a click, so they are weighted by the click
probability) and learns a calibration of the click head from the probability it served and the clicks it got.
"""

from __future__ import annotations

import numpy as np
import torch

from agents.decision.context import Candidates
from agents.decision.params import Choice, DecisionAgent, ParamSpace, Range
from envs.log import InteractionLog
from rewards.inner import inner_metrics

__all__ = ["FUSION_SIZES", "MultiTaskFusion", "QuotaFusion", "dedupe"]

FUSION_SIZES = (100, 200, 300, 500)  # candidate set sizes fusion may produce


def dedupe(items: np.ndarray) -> np.ndarray:
    """(B, C) mask: True at the first occurrence of each non-negative item id in its row."""
    keep = items >= 0
    if items.shape[1] < 2:
        return keep
    # a stable sort keeps equal ids in left-to-right order; torch's row sort is ~2x numpy's argsort here
    srt, order = torch.sort(torch.from_numpy(items), dim=1, stable=True)
    repeat = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    rows, cols = torch.nonzero(repeat, as_tuple=True)
    keep[rows.numpy(), order[rows, cols + 1].numpy()] = False
    return keep


class QuotaFusion(DecisionAgent):
    """Merge routes by quota shares into ``size`` candidates (repeats and missing entries are -1)."""

    role = "fusion"

    def __init__(self, routes: list[str], name: str = "fusion", config: dict | None = None) -> None:
        self.route_names = list(routes)
        self.params = ParamSpace(
            [Choice("size", FUSION_SIZES, 500), Range("adapt_rate", 0.0, 0.5, 0.0)]
            + [Range(f"quota_{r}", 0.0, 1.0, 1.0) for r in self.route_names]
        )
        super().__init__(name, config)
        self.learned = np.ones(len(self.route_names))  # multiplicative quota adjustment, learned

    def quotas(self) -> np.ndarray:
        q = np.array([self.config[f"quota_{r}"] for r in self.route_names]) * self.learned
        return q / q.sum() if q.sum() > 0 else np.full(len(q), 1.0 / len(q))

    def act(self, routes: list[Candidates]) -> Candidates:
        size = int(self.config["size"])
        share = self.quotas()
        take = np.floor(share * size).astype(int)
        take[np.argmax(share)] += size - take.sum()  # rounding remainder to the largest quota
        parts = [(c.items[:, :t], c.scores[:, :t], c.route[:, :t]) for c, t in zip(routes, take) if t > 0]
        items = np.concatenate([p[0] for p in parts], axis=1)
        scores = np.concatenate([p[1] for p in parts], axis=1)
        route = np.concatenate([p[2] for p in parts], axis=1)
        items = np.where(dedupe(items), items, -1)  # repeats become empty entries, in place
        b, c = items.shape
        if c < size:
            pad = size - c
            items = np.concatenate([items, np.full((b, pad), -1, np.int64)], axis=1)
            scores = np.concatenate([scores, np.zeros((b, pad), np.float32)], axis=1)
            route = np.concatenate([route, np.zeros((b, pad), np.int16)], axis=1)
        return Candidates(items[:, :size], scores[:, :size], route[:, :size])

    def _route_counts(self, log: InteractionLog) -> tuple[np.ndarray, np.ndarray]:
        """Impressions and clicks per own route. The log's ``route`` ids index ``log.route_names`` (the system's
        routes, which a pipeline may hold a subset of, in another order); by position when the log names none."""
        imp = log.impressions
        names = list(log.route_names) or self.route_names
        ids = np.array([names.index(r) if r in names else -1 for r in self.route_names])
        n = max(len(names), int(imp["route"].max(initial=-1)) + 1)
        shown = np.bincount(imp["route"], minlength=n).astype(float)
        clicks = np.bincount(imp["route"], weights=imp["click"].astype(float), minlength=n)
        return np.where(ids >= 0, shown[ids], 0.0), np.where(ids >= 0, clicks[ids], 0.0)

    def observe(self, log: InteractionLog) -> None:
        rate = self.config["adapt_rate"]
        if rate <= 0 or not log.num_impressions:
            return
        shown, clicks = self._route_counts(log)
        ctr = (clicks + 1.0) / (shown + 10.0)
        self.learned = (1 - rate) * self.learned + rate * self.learned * ctr / ctr.mean()

    def probe(self) -> tuple:
        """Inputs for :func:`agents.protocol.promote`'s loop check: each route offering ``size`` distinct items."""
        size = int(self.config["size"])
        routes = [Candidates(np.arange(i * size, (i + 1) * size, dtype=np.int64)[None], np.zeros((1, size), np.float32),
                             np.full((1, size), i, np.int16)) for i in range(len(self.route_names))]
        return (routes,)

    def inner_metrics(self, log: InteractionLog) -> dict[str, float]:
        shown, clicks = self._route_counts(log)
        out = {f"inner/fusion/{self.name}/ctr": float(clicks.sum() / max(shown.sum(), 1.0))}
        for i, name in enumerate(self.route_names):
            out[f"inner/fusion/{self.name}/share/{name}"] = float(shown[i] / max(shown.sum(), 1.0))
        return out


class MultiTaskFusion(DecisionAgent):
    """Combine multi-task predictions: ``p_click * (w_click + w_like * p_like|click + w_dwell * dwell_norm|click)``.

    ``p_click = clip(calibration * click head, 0, 1)`` is the click probability it serves (logged per impression as
    ``p_click``, next to the ranker's raw ``score``). The calibration factor is learned from that served probability:
    once per window ``log f <- log f + CALIBRATION_RATE * log(clicks / sum p_click)`` over the window's impressions,
    clipped to ``CALIBRATION_BOUNDS``. Served ``p_click`` scales with ``f`` (below the clip at 1), so the ratio is
    about ``f* / f`` and the update is the damped fixed-point iteration ``log f <- (1 - rate) log f + rate log f*``:
    it converges to the factor at which the served probability's mean equals the click rate (ECE falls), while the
    ranker's own drift moves ``f*`` slowly. Its inner metrics (``rewards.inner`` for 'fusion': ECE, log-loss...) are
    those of ``p_click``, its own output.
    """

    role = "fusion"
    params = ParamSpace([
        Range("w_click", 0.0, 1.0, 1.0),
        Range("w_like", 0.0, 1.0, 0.3),
        Range("w_dwell", 0.0, 1.0, 0.2),
    ])
    CALIBRATION_RATE = 0.5  # damping of the fixed-point update in log space (1: jump to this window's estimate)
    CALIBRATION_BOUNDS = (0.01, 10.0)  # the factor stays in this range

    def __init__(self, name: str = "multitask", config: dict | None = None) -> None:
        super().__init__(name, config)
        self.calibration = 1.0  # multiplies the click head; learned from served probability vs clicks

    def calibrate(self, click: np.ndarray) -> np.ndarray:
        """The click probability served for click-head predictions ``click``: ``clip(calibration * click, 0, 1)``."""
        return np.clip(click * self.calibration, 0.0, 1.0).astype(np.float32)

    def act(self, heads: dict[str, np.ndarray]) -> np.ndarray:
        c = self.config
        dwell = np.clip(heads["dwell"] / 6.0, 0.0, 1.0)  # log-seconds, ~[0, 6] -> [0, 1]
        p_click = self.calibrate(heads["click"])
        # the like and dwell heads are learnt on clicked impressions: they are conditional on a click
        return (p_click * (c["w_click"] + c["w_like"] * heads["like"] + c["w_dwell"] * dwell)).astype(np.float32)

    def observe(self, log: InteractionLog) -> None:
        """One damped fixed-point step of the factor toward ``clicks / served probability`` of the window."""
        imp = log.impressions
        served = float(imp["p_click"].sum(dtype=np.float64))
        clicks = float(np.count_nonzero(imp["click"]))
        if served <= 0 or clicks <= 0:  # nothing served with a probability, or no click to calibrate against
            return
        step = self.CALIBRATION_RATE * np.log(clicks / served)
        low, high = self.CALIBRATION_BOUNDS
        self.calibration = float(np.clip(self.calibration * np.exp(step), low, high))

    def probe(self) -> tuple:
        """Inputs for :func:`agents.protocol.promote`'s loop check: a batch of click/like/dwell heads."""
        click = np.linspace(0.01, 0.6, 64, dtype=np.float32).reshape(4, 16)
        return ({"click": click, "like": np.full_like(click, 0.5), "dwell": np.full_like(click, 3.0)},)

    def inner_metrics(self, log: InteractionLog) -> dict[str, float]:
        """The score metrics of the probability it served (``rewards.inner`` for 'fusion': AUC, NDCG, log-loss, ECE
        of ``p_click``) and its calibration factor."""
        out = {k.replace("inner/fusion/", f"inner/fusion/{self.name}/"): v for k, v in inner_metrics("fusion", log).items()}
        out[f"inner/fusion/{self.name}/calibration_factor"] = self.calibration
        return out
