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
from torch.nn import functional as F

from agents.decision.context import Candidates, CatalogView, RequestBatch
from agents.decision.features import BASE_GROUPS, FeatureSet, FeatureState, Pairs
from agents.decision.models import MODEL_ARCHITECTURES, ModelDesign, build_model
from agents.decision.params import Choice, DecisionAgent, ParamSpace, Range
from envs.log import InteractionLog
from envs.validation import ConfigError, check_choice, check_int
from rewards.inner import ranking_metrics

__all__ = ["ARCHITECTURES", "LOSS_WEIGHTS", "PRERANK_KEEP", "EnsembleRanker", "FeatureRanker", "MultiTaskNet", "PreRanker",
           "TorchRanker", "flush_subnormal", "multitask_loss", "multitask_loss_grad", "pair_features"]

ARCHITECTURES = ("linear", "mlp")  # what the pipeline design language offers (models.MODEL_ARCHITECTURES: all)
HEADS = ("click", "like", "dwell")
PRERANK_KEEP = (25, 50, 100, 200, 300, 500)  # candidates a cascade's pre-ranker passes on (>= the fused set: all)
LOSS_WEIGHTS = {"like": 0.5, "dwell": 0.1}  # the like and dwell terms' weights next to the click term's 1
TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32; below it (but not 0) values are subnormal


def flush_subnormal(a: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``a`` with its subnormal float32 entries (0 < |x| < TINY) set to 0, in place; returns ``a``.

    Arithmetic on subnormals runs in CPU microcode (~100x slower per instruction): a handful of them in a
    weight matrix slows every matmul that reads it. Values that small are 0 for every purpose here.
    """
    if isinstance(a, torch.Tensor):
        a.masked_fill_(a.abs() < TINY, 0.0)
    else:
        a[np.abs(a) < TINY] = 0.0
    return a


def pair_features(
    batch: RequestBatch,
    items: np.ndarray,
    route: np.ndarray,
    catalog: CatalogView,
    num_routes: int,
    position: np.ndarray | None = None,
) -> np.ndarray:
    """(B, C, Fin) float32 features of each (request, candidate) pair; ``items`` may hold -1 (zeros).

    The last column is ``log1p(position)`` of a shown item (training), 0 when scoring candidates: the
    model learns the position bias of its logged clicks apart from the item's appeal, and serves as if
    every candidate were in the top position.
    """
    b, c = items.shape
    safe = np.maximum(items, 0)
    item = flush_subnormal(catalog.features[safe])  # (B, C, F), a copy; e.g. a Beta-drawn risk can be ~1e-41
    d = catalog.embedding_dim
    cross = item[..., :d] * batch.profile[:, None, :]
    user = np.broadcast_to(batch.user_features[:, None, :], (b, c, batch.user_features.shape[1]))
    onehot = np.zeros((b, c, num_routes), np.float32)
    np.put_along_axis(onehot, route[..., None].astype(np.int64), 1.0, axis=2)
    pos = np.zeros((b, c, 1), np.float32) if position is None else np.log1p(position, dtype=np.float32)[..., None]
    out = np.concatenate([user, item, cross, onehot, pos], axis=2)
    out[items < 0] = 0.0
    return out


class _InputParts:
    """The input layer ``W x + b`` over pair features ``x = [user | item | profile * embedding | route | 0]``, by parts.

    Per pair, one batched matmul of ``[embedding | 1 | route one-hot]`` (D + 1 + R numbers) with a
    per-request matrix ``[W_cross * profile | W_user u + b | W_route]`` adds the cross, user and route
    parts onto the item part ``W_item f_item``, which is computed once per catalog item.
    """

    @torch.no_grad()
    def __init__(self, layer: nn.Linear, catalog: CatalogView, user_dim: int, num_routes: int) -> None:
        d = catalog.embedding_dim
        item_dim = catalog.features.shape[1]
        # the position column (last) is 0 when serving, so its weights drop out
        self.w_user, w_item, self.w_cross, w_route, _ = torch.split(layer.weight, [user_dim, item_dim, d, num_routes, 1], dim=1)
        self.bias = layer.bias
        feats = torch.from_numpy(catalog.features)
        if bool((torch.abs(feats) < TINY).logical_and_(feats != 0).any()):  # e.g. a Beta-drawn risk of ~1e-41
            feats = flush_subnormal(feats.clone())
        self.item_part = feats @ w_item.T  # (N, H): once per call, shared by all requests
        self.embedding = feats[:, :d]
        self.route_part = w_route  # (H, R)
        self.num_routes = num_routes

    @torch.no_grad()
    def pre_activation(self, batch: RequestBatch, items: np.ndarray, route: np.ndarray) -> torch.Tensor:
        """(B, C, H) = item part + cross part + user part (with bias) + route part."""
        b, c = items.shape
        safe = torch.from_numpy(np.maximum(items, 0)).reshape(-1)
        d, r = self.embedding.shape[1], self.num_routes
        x = torch.zeros(b, c, d + 1 + r)
        x[..., :d] = torch.index_select(self.embedding, 0, safe).view(b, c, d)
        x[..., d] = 1.0
        x.view(-1, d + 1 + r)[torch.arange(b * c), d + 1 + torch.from_numpy(route.astype(np.int64)).reshape(-1)] = 1.0
        profile = torch.from_numpy(np.ascontiguousarray(batch.profile))
        user = torch.from_numpy(np.ascontiguousarray(batch.user_features)) @ self.w_user.T + self.bias  # (B, H)
        m = torch.cat([self.w_cross[None] * profile[:, None, :], user[:, :, None],
                       self.route_part[None].expand(b, -1, -1)], dim=2)  # (B, H, D + 1 + R)
        items_h = torch.index_select(self.item_part, 0, safe).view(b, c, -1)
        return torch.baddbmm(items_h, x, m.transpose(1, 2))


def multitask_loss(out: torch.Tensor, y: torch.Tensor, w_like: float = LOSS_WEIGHTS["like"],
                   w_dwell: float = LOSS_WEIGHTS["dwell"]) -> torch.Tensor:
    """The rankers' training loss: click log-loss plus, over the clicked rows, ``w_like`` x like log-loss and
    ``w_dwell`` x squared error of log-dwell (``y`` columns click, like, log-dwell; ``out`` the heads' outputs)."""
    bce = nn.functional.binary_cross_entropy_with_logits
    clicked = y[:, 0]  # 0 / 1: the like and dwell heads learn from clicked rows only
    # means over the clicked rows as masked sums (0 when none was clicked): no boolean indexing
    given_click = w_like * bce(out[:, 1], y[:, 1], reduction="none") + w_dwell * (out[:, 2] - y[:, 2]) ** 2
    return bce(out[:, 0], clicked) + (given_click * clicked).sum() / clicked.sum().clamp(min=1.0)


@torch.no_grad()
def multitask_loss_grad(out: torch.Tensor, y: torch.Tensor, w_like: float = LOSS_WEIGHTS["like"],
                        w_dwell: float = LOSS_WEIGHTS["dwell"]) -> torch.Tensor:
    """The gradient of :func:`multitask_loss` with respect to ``out``, in closed form (no autograd graph).

    Per row, with ``c`` the click (0 / 1), ``n`` the rows and ``k = max(sum c, 1)``: ``(sigmoid(out_click) - c) / n``,
    ``c w_like (sigmoid(out_like) - like) / k`` and ``c 2 w_dwell (out_dwell - log-dwell) / k``. Training calls
    ``out.backward(multitask_loss_grad(...))``: the same gradient as ``multitask_loss(...).backward()`` up to float
    rounding, without the loss's dozen autograd nodes (on batches of ~1k rows, torch's per-call overhead is the cost).
    """
    clicked = y[:, :1]
    g = out.detach().clone()
    g[:, :2].sigmoid_()
    g.sub_(y)
    scale = torch.tensor([0.0, w_like, 2.0 * w_dwell], dtype=g.dtype) / clicked.sum().clamp(min=1.0)
    scale[0] = 1.0 / len(g)
    weight = clicked * scale  # (n, 3): the like and dwell columns learn from clicked rows only
    weight[:, 0] = scale[0]
    return g.mul_(weight)


class MultiTaskNet(nn.Module):
    """Shared bottom (identity for ``linear``, an MLP otherwise) and per-segment (or shared) heads."""

    def __init__(self, in_dim: int, arch: str, hidden: int, num_segments: int, per_segment: bool) -> None:
        super().__init__()
        self.per_segment = per_segment
        if arch == "linear":
            self.first: nn.Linear | None = None
            self.rest: nn.Module = nn.Identity()
            out_dim = in_dim
        else:
            self.first = nn.Linear(in_dim, hidden)
            self.rest = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(hidden, hidden // 2), nn.ReLU(inplace=True))
            out_dim = hidden // 2
        towers = num_segments if per_segment else 1
        self.heads = nn.ModuleList([nn.Linear(out_dim, len(HEADS)) for _ in range(towers)])

    def forward(self, x: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        layer = self.input_layer
        return self.from_first(x if layer is None else F.linear(x, layer.weight, layer.bias), segment)

    @property
    def input_layer(self) -> nn.Linear | None:
        """The linear map applied to the raw features, if one is shared by all rows (else None)."""
        if self.first is not None:
            return self.first
        return None if self.per_segment else self.heads[0]

    def from_first(self, h: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        """The rest of the network after ``input_layer`` (for linear arch without towers: nothing)."""
        if self.first is None and not self.per_segment:
            return h
        if self.first is not None:  # the MLP's rest by functional calls: a module call costs more than its op here
            second = self.rest[1]
            h = F.linear(h.relu_(), second.weight, second.bias).relu_()
        if not self.per_segment:
            return F.linear(h, self.heads[0].weight, self.heads[0].bias)
        # every tower on every row in one matmul, then each row's own tower's columns: a few ops whatever the
        # number of towers, instead of a masked gather, matmul and scatter per tower. A tower with no row gets a
        # zero gradient here, where a tower never called gets none: training drops it (``absent_towers``)
        weight = torch.cat([head.weight for head in self.heads])
        bias = torch.cat([head.bias for head in self.heads])
        out = F.linear(h, weight, bias).view(h.shape[0], len(self.heads), len(HEADS))
        return out.gather(1, segment.view(-1, 1, 1).expand(-1, 1, len(HEADS))).squeeze(1)

    def absent_towers(self, segment: np.ndarray, batch: int) -> list[list[int]]:
        """Per batch of ``batch`` consecutive rows of ``segment``, the towers that none of its rows use (no towers:
        none); their parameters take no optimizer step (as the tower of a segment absent from a batch never did)."""
        towers, batches = len(self.heads), -(-len(segment) // batch)
        if not self.per_segment:
            return [[] for _ in range(batches)]
        rows = np.bincount(np.arange(len(segment)) // batch * towers + segment, minlength=batches * towers)
        return [np.flatnonzero(r == 0).tolist() for r in rows.reshape(batches, towers)]


class TorchRanker(DecisionAgent):
    """A multi-task click/like/dwell ranker learned online; ``arch`` linear or mlp; optional segment towers."""

    role = "ranking"
    params = ParamSpace([
        Choice("lr", (1e-3, 3e-3, 1e-2), 3e-3),
        Choice("epochs", (1, 2, 4), 2),
        Choice("batch_size", (256, 1024, 4096), 1024),
        Range("weight_decay", 0.0, 1e-2, 1e-5),
        Choice("memory", (50_000, 200_000, 500_000), 200_000),  # impressions kept for training
        Choice("min_updates", (0, 100, 300), 300),  # at least this many gradient steps per window
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
        design: ModelDesign | None = None,
        loss_weights: dict[str, float] | None = None,
    ) -> None:
        check_choice("ranker arch", arch, MODEL_ARCHITECTURES)
        if arch not in ARCHITECTURES and per_segment:
            raise ConfigError(f"per-segment towers are offered for {list(ARCHITECTURES)} only (got arch {arch!r})")
        weights = {**LOSS_WEIGHTS, **(loss_weights or {})}
        if set(weights) != set(LOSS_WEIGHTS) or any(not (0.0 <= float(v) <= 10.0) for v in weights.values()):
            raise ConfigError(f"`loss_weights` must map {sorted(LOSS_WEIGHTS)} to numbers in [0, 10] (got {loss_weights})")
        self.loss_weights = {k: float(v) for k, v in weights.items()}
        super().__init__(name or f"{arch}{'_towers' if per_segment else ''}", config)
        self.arch, self.hidden, self.per_segment = arch, hidden, per_segment
        self.in_dim, self.num_segments, self.num_routes = in_dim, num_segments, num_routes
        self.generator = torch.Generator().manual_seed(seed)
        # seeded init without touching the global torch RNG; parameters are ordinary tensors even when the
        # caller builds the system inside ``torch.inference_mode()`` (inference tensors cannot be trained)
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False):
            torch.manual_seed(seed)
            self.design: ModelDesign | None = None  # linear and mlp: MultiTaskNet's own structure (a design is ignored)
            if arch in ARCHITECTURES:
                self.model = MultiTaskNet(in_dim, arch, hidden, num_segments, per_segment)
            else:
                self.design = design if design is not None else ModelDesign(arch=arch, hidden=hidden)
                if self.design.arch != arch:
                    raise ConfigError(f"`design.arch` must match the ranker's arch (got {self.design.arch!r} vs {arch!r})")
                self.model = build_model(self.design, in_dim)
        self._opt = self._optimizer()
        self._buf_x = np.zeros((0, in_dim), np.float32)
        self._buf_y = np.zeros((0, 3), np.float32)
        self._buf_s = np.zeros(0, np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.trained_on = 0  # impressions passed through training, summed over windows
        self.updates = 0  # gradient steps taken

    def reseed(self, seed: int) -> None:
        """Draw the training minibatches' order from ``seed`` from now on (an A/A replicate of a running system)."""
        self.generator.manual_seed(int(seed))

    def _optimizer(self) -> torch.optim.Optimizer:
        # decoupled weight decay (AdamW: w <- w (1 - lr wd) per step). Adam's L2 term (wd w added to the gradient)
        # is divided by Adam's own running scale of that gradient: a weight with no data gradient (into or out of
        # a ReLU unit that never fires) then shrinks by a constant factor per step, geometrically toward 0, and
        # passes through the float32 subnormals, where every matmul reading it runs ~10x slower
        # (tests/agents/test_ranking_numerics.py)
        # fused: one kernel per step for all parameters and no per-tensor Python (tiny tensors: overhead is the cost;
        # bench/ranker_train.py); the same update as foreach's up to float rounding
        return torch.optim.AdamW(self.model.parameters(), lr=self.config["lr"], weight_decay=self.config["weight_decay"],
                                 fused=True)

    @torch.no_grad()
    def _flush_subnormal_state(self) -> None:
        """Zero the subnormal entries of the parameters and of the optimizer's state (once per window).

        Adam's first moment of a weight whose gradient became exactly 0 (a unit that stopped firing) decays by
        ``beta1`` per step, reaching subnormals within ~800 steps; the parameters do not (decoupled decay) but are
        flushed too, so serving never reads a subnormal weight whatever the optimizer state was loaded from.
        """
        for p in self.model.parameters():
            flush_subnormal(p)
        for state in self._opt.state.values():
            for v in state.values():
                if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim():
                    flush_subnormal(v)

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

    def act(
        self, batch: RequestBatch, candidates: Candidates, catalog: CatalogView, chunk: int = 32, factorized: bool = True
    ) -> dict[str, np.ndarray]:
        """Heads (B, C) for every candidate; invalid candidates get click and like 0 (and, factorized, dwell 0).

        ``factorized`` computes the input layer by parts instead of materialising (B, C, Fin) features:
        the user part once per request, the item part once per catalog item, and per pair only the
        profile x embedding part and the route; the same numbers as ``predict`` on ``pair_features``.
        """
        b, c = candidates.items.shape
        out = {h: np.zeros((b, c), np.float32) for h in HEADS}
        layer = self.model.input_layer if factorized else None
        parts = _InputParts(layer, catalog, batch.user_features.shape[1], self.num_routes) if layer is not None else None
        valid = candidates.valid
        for lo in range(0, b, chunk):  # chunks of requests bound memory; not a loop over users
            rows = np.arange(lo, min(lo + chunk, b))
            sub = batch.subset(rows)
            if parts is not None:
                # the valid candidates of each row first, the chunk cut to its widest row: repeats emptied by fusion
                # (~1/4 of a fused set) are not scored
                v = valid[rows]
                width = max(int(v.sum(axis=1).max()), 1)
                cols = np.argsort(~v, axis=1, kind="stable")[:, :width] if width < c else np.broadcast_to(np.arange(c), v.shape)
                items = np.take_along_axis(candidates.items[rows], cols, axis=1)
                route = np.take_along_axis(candidates.route[rows], cols, axis=1)
                heads = self._predict_parts(parts, sub, items, route, np.repeat(sub.segment, width))
                for h in HEADS:
                    out[h][rows[:, None], cols] = heads[h].reshape(len(rows), width)
            else:
                x = self.features_of(sub, candidates.items[rows], candidates.route[rows], catalog)
                heads = self.predict(x.reshape(-1, self.in_dim), np.repeat(sub.segment, c))
                for h in HEADS:
                    out[h][rows] = heads[h].reshape(len(rows), c)
        out["click"][~valid] = 0.0
        out["like"][~valid] = 0.0
        return out

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The feature groups this ranker reads (:mod:`agents.decision.features`): the base layout."""
        return BASE_GROUPS

    def features_of(self, batch: RequestBatch, items: np.ndarray, route: np.ndarray, catalog: CatalogView,
                    position: np.ndarray | None = None) -> np.ndarray:
        """(B, C, Fin) features of the pairs (``position``: of shown items, for training; None when scoring)."""
        return pair_features(batch, items, route, catalog, self.num_routes, position)

    @torch.no_grad()
    def _predict_parts(
        self, parts: _InputParts, batch: RequestBatch, items: np.ndarray, route: np.ndarray, segment: np.ndarray
    ) -> dict[str, np.ndarray]:
        h = parts.pre_activation(batch, items, route)
        out = self.model.from_first(h.reshape(-1, h.shape[-1]), torch.from_numpy(segment.astype(np.int64))).numpy()
        return {"click": 1.0 / (1.0 + np.exp(-out[:, 0])), "like": 1.0 / (1.0 + np.exp(-out[:, 1])), "dwell": out[:, 2]}

    # ------------------------------------------------------------------ learning
    def remember(self, x: np.ndarray, segment: np.ndarray, click: np.ndarray, like: np.ndarray, dwell: np.ndarray) -> None:
        """Store features of shown items with their outcome (dwell in seconds; 0 when not clicked)."""
        y = np.stack([click, like, np.where(click, np.log1p(dwell), 0.0)], axis=1).astype(np.float32)
        self._pending.append((x.astype(np.float32, copy=False), y, segment.astype(np.int64, copy=False)))

    def memory(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The remembered impressions (features (n, Fin), targets (n, 3): click, like, log-dwell, segments (n,)),
        oldest first, including those not yet trained on; copies."""
        xs, ys, ss = [self._buf_x], [self._buf_y], [self._buf_s]
        for x, y, s in self._pending:
            xs.append(x), ys.append(y), ss.append(s)
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(ss)

    def learn_from(self, memory: tuple[np.ndarray, np.ndarray, np.ndarray], min_updates: int | None = None) -> int:
        """Add another ranker's :meth:`memory` (same features) to this one's and train on it (at least
        ``min_updates`` gradient steps, default the config's); returns its size.

        How a new architecture starts warm: the features do not depend on the model, so the impressions
        a running ranker remembered are valid training data for a candidate. A running ranker has taken
        many gradient steps over its life; a candidate trained with one window's budget starts far behind
        it, hence ``min_updates`` (e.g. the incumbent's :attr:`updates`, capped).
        """
        x, y, s = memory
        if x.ndim != 2 or x.shape[1] != self.in_dim or y.shape != (len(x), 3) or s.shape != (len(x),):
            raise ValueError(f"learn_from: memory must be features (n, {self.in_dim}), targets (n, 3) and segments "
                             f"(n,) (got {x.shape}, {y.shape}, {s.shape})")
        if len(x):
            self._pending.append((x.astype(np.float32), y.astype(np.float32), s.astype(np.int64)))
            self._train(int(self.config["min_updates"]) if min_updates is None else check_int("min_updates", min_updates, 0))
        return len(x)

    def observe(self, log: InteractionLog) -> None:
        """Train on remembered impressions (this window's and older ones, up to ``memory``)."""
        self._train(int(self.config["min_updates"]))

    def _train(self, min_updates: int) -> None:
        # the system's own learning never depends on the caller's autograd mode: an evaluation loop or SB3's
        # ARS steps the env under ``torch.no_grad()``, others under ``torch.inference_mode()``
        with torch.inference_mode(False), torch.enable_grad():
            self._train_steps(min_updates)

    def _train_steps(self, min_updates: int) -> None:
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
        w_like, w_dwell = self.loss_weights["like"], self.loss_weights["dwell"]
        params = [p for group in self._opt.param_groups for p in group["params"]]
        towers = self.model if isinstance(self.model, MultiTaskNet) and self.model.per_segment else None
        self.model.train()
        bs = int(self.config["batch_size"])
        batches = -(-n // bs)
        epochs = max(int(self.config["epochs"]), -(-min_updates // batches))
        for _ in range(epochs):  # small buffers (early windows) get more passes: at least min_updates steps in all
            perm = torch.randperm(n, generator=self.generator)
            absent = towers.absent_towers(self._buf_s[perm.numpy()], bs) if towers is not None else [[]] * batches
            for i, lo in enumerate(range(0, n, bs)):
                idx = perm[lo : lo + bs]
                out = self.model(x.index_select(0, idx), s.index_select(0, idx))
                for p in params:  # zero_grad(set_to_none=True) without the optimizer's per-call hooks
                    p.grad = None
                # the gradient of multitask_loss in closed form: the same step without the loss's autograd graph
                out.backward(multitask_loss_grad(out, y.index_select(0, idx), w_like, w_dwell))
                for t in absent[i]:  # a tower no row of the batch used takes no step
                    towers.heads[t].weight.grad = towers.heads[t].bias.grad = None
                self._opt.step()
                self.updates += 1
        self.model.eval()
        self._flush_subnormal_state()
        self.trained_on += n

    def inner_metrics(self, log: InteractionLog) -> dict[str, float]:
        return {f"inner/ranking/{self.name}/{k}": v for k, v in ranking_metrics(log).items()}


class FeatureRanker(TorchRanker):
    """A :class:`TorchRanker` over a chosen :class:`~agents.decision.features.FeatureSet` (AutoFeature's edits).

    Its features are computed by the feature set from the pairs and its own :class:`FeatureState` (history and item
    statistics learned from the windows it observed, as of the start of the window being served), for scoring and
    for the impressions it remembers; serving always materialises them. ``dims``: (user features, embedding size)
    of the world, to size the input.
    """

    def __init__(self, features: FeatureSet, dims: tuple[int, int], num_segments: int, num_routes: int,
                 arch: str = "mlp", hidden: int = 64, name: str | None = None, config: dict | None = None,
                 seed: int = 0, **kwargs: object) -> None:
        self.features = features
        self.state = FeatureState()
        in_dim = features.width(dims[0], dims[1], num_routes, num_segments)
        super().__init__(in_dim, num_segments, num_routes, arch=arch, hidden=hidden,
                         name=name or f"{arch}+{'+'.join(features.names)}", config=config, seed=seed, **kwargs)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.features.names

    def features_of(self, batch: RequestBatch, items: np.ndarray, route: np.ndarray, catalog: CatalogView,
                    position: np.ndarray | None = None) -> np.ndarray:
        b, c = items.shape
        pairs = Pairs.of_candidates(batch, Candidates(items, np.zeros(items.shape, np.float32), route), catalog,
                                    self.num_routes, self.num_segments)
        if position is not None:
            pairs.position = np.asarray(position).reshape(-1)
        return self.features.matrix(pairs, self.state)[0].reshape(b, c, -1)

    def act(self, batch: RequestBatch, candidates: Candidates, catalog: CatalogView, chunk: int = 32,
            factorized: bool = True) -> dict[str, np.ndarray]:
        return super().act(batch, candidates, catalog, chunk, factorized=False)

    def observe(self, log: InteractionLog) -> None:
        """Add the window's impressions to the feature statistics, then train (the statistics serve the next window)."""
        self.state.update_log(log)
        super().observe(log)


class EnsembleRanker(DecisionAgent):
    """Rankers that score together: heads are a weighted mean of the members' (each keeps learning).

    ``weight_first`` is the weight of the first member; the rest share the remainder equally. The members
    remember and learn from every impression the ensemble served, so each stays a valid ranker alone.
    """

    role = "ranking"
    params = ParamSpace([Range("weight_first", 0.0, 1.0, 0.5)])

    def __init__(self, members: list[TorchRanker], name: str | None = None, config: dict | None = None) -> None:
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 rankers (got {len(members)})")
        layouts = {m.feature_names for m in members}
        if len(layouts) > 1:
            raise ConfigError(f"an ensemble's rankers must read one feature layout (got {sorted(layouts)})")
        super().__init__(name or "+".join(m.name for m in members), config)
        self.members = list(members)
        self.num_routes = members[0].num_routes

    def _weights(self) -> list[float]:
        w = self.config["weight_first"]
        rest = (1.0 - w) / (len(self.members) - 1)
        return [w] + [rest] * (len(self.members) - 1)

    def act(self, batch: RequestBatch, candidates: Candidates, catalog: CatalogView) -> dict[str, np.ndarray]:
        outs = [m.act(batch, candidates, catalog) for m in self.members]
        return {h: sum(w * o[h] for w, o in zip(self._weights(), outs)).astype(np.float32) for h in HEADS}

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.members[0].feature_names

    def features_of(self, batch: RequestBatch, items: np.ndarray, route: np.ndarray, catalog: CatalogView,
                    position: np.ndarray | None = None) -> np.ndarray:
        return self.members[0].features_of(batch, items, route, catalog, position)

    def remember(self, x: np.ndarray, segment: np.ndarray, click: np.ndarray, like: np.ndarray, dwell: np.ndarray) -> None:
        for m in self.members:
            m.remember(x, segment, click, like, dwell)

    def reseed(self, seed: int) -> None:
        for i, m in enumerate(self.members):
            m.reseed(int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0]))

    def observe(self, log: InteractionLog) -> None:
        for m in self.members:
            m.observe(log)

    def inner_metrics(self, log: InteractionLog) -> dict[str, float]:
        return {f"inner/ranking/{self.name}/{k}": v for k, v in ranking_metrics(log).items()}


class PreRanker(TorchRanker):
    """The cheap first stage of a cascade: scores every fused candidate (a linear model by default, learned online
    like any ranker) and passes the ``keep`` best by click probability to the pipeline's ranker, whose work (and
    FLOPs) then scale with ``keep`` instead of the fusion size. ``keep`` >= the fused set passes everything on."""

    params = ParamSpace([*TorchRanker.params.params, Choice("keep", PRERANK_KEEP, 100)])

    def __init__(self, in_dim: int, num_segments: int, num_routes: int, arch: str = "linear", hidden: int = 16,
                 name: str | None = None, config: dict | None = None, seed: int = 0) -> None:
        super().__init__(in_dim, num_segments, num_routes, arch=arch, hidden=hidden, name=name or "prerank",
                         config=config, seed=seed)

    def narrow(self, batch: RequestBatch, candidates: Candidates, catalog: CatalogView) -> Candidates:
        """The ``keep`` candidates of each request with the highest predicted click probability (invalid ones last)."""
        keep = int(self.config["keep"])
        if keep >= candidates.items.shape[1]:
            return candidates
        click = np.where(candidates.valid, self.act(batch, candidates, catalog)["click"], -np.inf)
        top = np.argpartition(-click, keep - 1, axis=1)[:, :keep]
        return Candidates(np.take_along_axis(candidates.items, top, axis=1),
                          np.take_along_axis(candidates.scores, top, axis=1),
                          np.take_along_axis(candidates.route, top, axis=1))
