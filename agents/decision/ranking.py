"""Ranking agents: torch models trained online from logged feedback (linear, MLP, per-segment towers).

Each (request, candidate) pair is described by the user's observable features, the item's features,
the element-wise product of the user's profile and the item's embedding, and the one-hot recall route.
Three heads predict the click probability, the like probability and the log-dwell of a click.
``act`` scores candidates; ``remember`` stores the features of shown items with their outcome;
``observe`` trains on the remembered impressions of recent windows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from agents.decision.context import CatalogView, Candidates, RequestBatch
from agents.decision.params import Choice, DecisionAgent, ParamSpace, Range
from agents.infra.log import InteractionLog
from envs.validation import check_choice

__all__ = ["ARCHITECTURES", "MultiTaskNet", "TorchRanker", "pair_features"]

ARCHITECTURES = ("linear", "mlp")
HEADS = ("click", "like", "dwell")


def pair_features(batch: RequestBatch, items: np.ndarray, route: np.ndarray, catalog: CatalogView, num_routes: int) -> np.ndarray:
    """(B, C, Fin) float32 features of each (request, candidate) pair; ``items`` may hold -1 (zeros)."""
    b, c = items.shape
    safe = np.maximum(items, 0)
    item = catalog.features[safe]  # (B, C, F)
    d = catalog.embedding_dim
    cross = item[..., :d] * batch.profile[:, None, :]
    user = np.broadcast_to(batch.user_features[:, None, :], (b, c, batch.user_features.shape[1]))
    onehot = np.zeros((b, c, num_routes), np.float32)
    np.put_along_axis(onehot, route[..., None].astype(np.int64), 1.0, axis=2)
    out = np.concatenate([user, item, cross, onehot], axis=2)
    out[items < 0] = 0.0
    return out


class MultiTaskNet(nn.Module):
    """Shared bottom (identity for ``linear``, an MLP otherwise) and per-segment (or shared) heads."""

    def __init__(self, in_dim: int, arch: str, hidden: int, num_segments: int, per_segment: bool) -> None:
        super().__init__()
        self.per_segment = per_segment
        if arch == "linear":
            self.bottom: nn.Module = nn.Identity()
            out_dim = in_dim
        else:
            self.bottom = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 2), nn.ReLU())
            out_dim = hidden // 2
        towers = num_segments if per_segment else 1
        self.heads = nn.ModuleList([nn.Linear(out_dim, len(HEADS)) for _ in range(towers)])

    def forward(self, x: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        h = self.bottom(x)
        if not self.per_segment:
            return self.heads[0](h)
        out = torch.zeros(x.shape[0], len(HEADS), dtype=x.dtype)
        for s, head in enumerate(self.heads):  # a loop over segment towers (a handful), not rows
            m = segment == s
            if bool(m.any()):
                out[m] = head(h[m])
        return out


class TorchRanker(DecisionAgent):
    """A multi-task click/like/dwell ranker learned online; ``arch`` linear or mlp; optional segment towers."""

    role = "ranking"
    params = ParamSpace([
        Choice("lr", (1e-3, 3e-3, 1e-2), 3e-3),
        Choice("epochs", (1, 2, 4), 2),
        Choice("batch_size", (256, 1024, 4096), 1024),
        Range("weight_decay", 0.0, 1e-2, 1e-5),
        Choice("memory", (50_000, 200_000, 500_000), 200_000),  # impressions kept for training
    ])

    def __init__(
        self,
        in_dim: int,
        num_segments: int,
        num_routes: int,
        arch: str = "mlp",
        hidden: int = 64,
        per_segment: bool = False,
        name: str | None = None,
        config: dict | None = None,
        seed: int = 0,
    ) -> None:
        check_choice("ranker arch", arch, ARCHITECTURES)
        super().__init__(name or f"{arch}{'_towers' if per_segment else ''}", config)
        self.arch, self.hidden, self.per_segment = arch, hidden, per_segment
        self.in_dim, self.num_segments, self.num_routes = in_dim, num_segments, num_routes
        self.generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global torch RNG
            torch.manual_seed(seed)
            self.model = MultiTaskNet(in_dim, arch, hidden, num_segments, per_segment)
        self._opt = self._optimizer()
        self._buf_x = np.zeros((0, in_dim), np.float32)
        self._buf_y = np.zeros((0, 3), np.float32)
        self._buf_s = np.zeros(0, np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.trained_on = 0

    def _optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.config["lr"], weight_decay=self.config["weight_decay"])

    def configure(self, config: dict) -> None:
        super().configure(config)
        self._opt = self._optimizer()

    # ------------------------------------------------------------------ serving
    @torch.no_grad()
    def predict(self, x: np.ndarray, segment: np.ndarray) -> dict[str, np.ndarray]:
        """Heads for feature rows ``x`` (n, Fin): click and like probabilities, log-dwell."""
        out = self.model(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(segment.astype(np.int64)))
        out = out.numpy()
        return {
            "click": 1.0 / (1.0 + np.exp(-out[:, 0])),
            "like": 1.0 / (1.0 + np.exp(-out[:, 1])),
            "dwell": out[:, 2],
        }

    def act(self, batch: RequestBatch, candidates: Candidates, catalog: CatalogView, chunk: int = 256) -> dict[str, np.ndarray]:
        """Heads (B, C) for every candidate; invalid candidates get click and like 0."""
        b, c = candidates.items.shape
        out = {h: np.zeros((b, c), np.float32) for h in HEADS}
        for lo in range(0, b, chunk):  # chunks of requests bound memory; not a loop over users
            rows = np.arange(lo, min(lo + chunk, b))
            sub = batch.subset(rows)
            x = pair_features(sub, candidates.items[rows], candidates.route[rows], catalog, self.num_routes)
            seg = np.repeat(sub.segment, c)
            heads = self.predict(x.reshape(-1, self.in_dim), seg)
            for h in HEADS:
                out[h][rows] = heads[h].reshape(len(rows), c)
        valid = candidates.valid
        out["click"][~valid] = 0.0
        out["like"][~valid] = 0.0
        return out

    # ------------------------------------------------------------------ learning
    def remember(self, x: np.ndarray, segment: np.ndarray, click: np.ndarray, like: np.ndarray, dwell: np.ndarray) -> None:
        """Store features of shown items with their outcome (dwell in seconds; 0 when not clicked)."""
        y = np.stack([click, like, np.where(click, np.log1p(dwell), 0.0)], axis=1).astype(np.float32)
        self._pending.append((x.astype(np.float32), y, segment.astype(np.int64)))

    def observe(self, log: InteractionLog) -> None:
        """Train on remembered impressions (this window's and older ones, up to ``memory``)."""
        if self._pending:
            xs, ys, ss = zip(*self._pending)
            self._pending.clear()
            cap = int(self.config["memory"])
            self._buf_x = np.concatenate([self._buf_x, *xs])[-cap:]
            self._buf_y = np.concatenate([self._buf_y, *ys])[-cap:]
            self._buf_s = np.concatenate([self._buf_s, *ss])[-cap:]
        n = len(self._buf_x)
        if n == 0:
            return
        x, y, s = torch.from_numpy(self._buf_x), torch.from_numpy(self._buf_y), torch.from_numpy(self._buf_s)
        bce = nn.BCEWithLogitsLoss()
        self.model.train()
        for _ in range(int(self.config["epochs"])):
            perm = torch.randperm(n, generator=self.generator)
            for lo in range(0, n, int(self.config["batch_size"])):
                idx = perm[lo : lo + int(self.config["batch_size"])]
                out = self.model(x[idx], s[idx])
                yb = y[idx]
                clicked = yb[:, 0] > 0
                loss = bce(out[:, 0], yb[:, 0])
                if bool(clicked.any()):
                    loss = loss + 0.5 * bce(out[clicked, 1], yb[clicked, 1])
                    loss = loss + 0.1 * ((out[clicked, 2] - yb[clicked, 2]) ** 2).mean()
                self._opt.zero_grad()
                loss.backward()
                self._opt.step()
        self.model.eval()
        self.trained_on += n

    def inner_metrics(self, log: InteractionLog) -> dict[str, float]:
        from rewards.inner import ranking_metrics

        return {f"inner/ranking/{self.name}/{k}": v for k, v in ranking_metrics(log).items()}
