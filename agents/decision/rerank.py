"""Re-ranking policy: risk filtering, freshness boost, per-item exposure caps and MMR diversity.

Picks the slate greedily, position by position, vectorised over requests, among the ``mmr_pool``
best candidates by score: ``mmr_k = (1 - lambda) * (score + freshness_boost * freshness) - lambda *
max(0, max cosine to items already chosen)``. Items whose estimated risk exceeds ``risk_threshold``, that
were seen violating policy in the log, or that reached ``exposure_cap`` impressions this window are pushed
below every admissible item
(and used only if a slate cannot be filled otherwise).
"""

from __future__ import annotations

import numpy as np

from agents.decision.context import Candidates, CatalogView, SlotTracker
from agents.decision.params import Choice, DecisionAgent, ParamSpace, Range
from agents.decision.recall import top_k
from envs.log import InteractionLog
from rewards.inner import rerank_metrics

__all__ = ["Reranker"]

PENALTY = 1e3  # pushes filtered items below every admissible one (scores are O(1); 1e6 lost their order in float32)


class Reranker(DecisionAgent):
    """The re-ranking stage; learns from the log which items were seen violating policy."""

    role = "rerank"
    params = ParamSpace([
        Range("mmr_lambda", 0.0, 1.0, 0.0),
        Range("freshness_boost", 0.0, 1.0, 0.0),
        Range("risk_threshold", 0.0, 1.0, 1.0),
        Choice("exposure_cap", (0, 100, 300, 1000), 0),  # impressions per item per window; 0 = no cap
        Choice("learn_violations", (True, False), True),
        Choice("mmr_pool", (20, 50, 100, 200), 100),  # MMR re-orders the best this-many by score
    ])

    def __init__(self, name: str = "rerank", config: dict | None = None) -> None:
        super().__init__(name, config)
        self.exposure: np.ndarray | None = None  # impressions this window, per item
        self.flagged: np.ndarray | None = None  # seen violating in the log
        self.slots = SlotTracker()
        self._embedding: np.ndarray | None = None  # the catalog's embeddings at the last act (for metrics)

    def _ensure(self, catalog: CatalogView) -> None:
        n = catalog.num_items
        if self.exposure is None or len(self.exposure) != n:
            self.exposure = np.zeros(n, np.int64)
            self.flagged = np.zeros(n, bool)
        reborn = self.slots.reborn(catalog)
        self.flagged[reborn] = False
        self.exposure[reborn] = 0

    def act(self, scores: np.ndarray, candidates: Candidates, catalog: CatalogView, slate_size: int) -> np.ndarray:
        """(B, K) indices into the candidate axis, in slate order."""
        self._ensure(catalog)
        self._embedding = catalog.embedding
        c = self.config
        items = candidates.items
        safe = np.maximum(items, 0)
        base = scores.astype(np.float32) + c["freshness_boost"] * catalog.column("freshness")[safe]
        blocked = catalog.column("risk")[safe] > c["risk_threshold"]
        if c["learn_violations"]:
            blocked |= self.flagged[safe]
        if c["exposure_cap"] > 0:
            blocked |= self.exposure[safe] >= c["exposure_cap"]
        base = np.where(blocked, base - PENALTY, base)
        base = np.where(items >= 0, base, -np.inf)
        b = len(items)
        rows = np.arange(b)
        lam = c["mmr_lambda"]
        if lam <= 0:
            chosen, _ = top_k(base, slate_size)
        else:
            pool, pool_base = top_k(base, max(int(c["mmr_pool"]), slate_size))  # (B, P) shortlist by score
            emb = catalog.embedding[np.take_along_axis(safe, pool, axis=1)]  # (B, P, D)
            max_sim = np.zeros(pool.shape, np.float32)
            picked = np.zeros((b, slate_size), np.int64)
            avail = np.isfinite(pool_base)
            base = np.where(avail, pool_base, 0.0)  # (0 * -inf would be nan at mmr_lambda = 1)
            for k in range(slate_size):  # a loop over slate positions (K), vectorised over requests
                mmr = np.where(avail, (1 - lam) * base - lam * max_sim, -np.inf)
                j = mmr.argmax(axis=1)
                picked[:, k] = j
                avail[rows, j] = False
                sim = np.einsum("bcd,bd->bc", emb, emb[rows, j])
                np.maximum(max_sim, sim, out=max_sim)
            chosen = np.take_along_axis(pool, picked, axis=1)
        if c["exposure_cap"] > 0:
            np.add.at(self.exposure, items[rows[:, None], chosen].ravel(), 1)
        return chosen

    def observe(self, log: InteractionLog) -> None:
        imp = log.impressions
        if self.flagged is not None and len(imp["item"]):
            self.flagged[imp["item"][imp["violation"]]] = True
        if self.exposure is not None:
            self.exposure[:] = 0  # caps are per window

    def inner_metrics(self, log: InteractionLog) -> dict[str, float]:
        """Diversity (with the embeddings of the catalog last served), freshness, risk and tail share."""
        if self._embedding is None:
            raise RuntimeError(f"re-ranker `{self.name}` has not served yet: no item embeddings to measure diversity")
        return {f"inner/rerank/{self.name}/{k}": v for k, v in rerank_metrics(log, self._embedding).items()}
