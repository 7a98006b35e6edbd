"""Ranking model architectures beyond linear and MLP: Wide & Deep, a DCN cross network, factorisation machines, MMoE.

Each is a multi-task ``nn.Module`` with the interface :class:`~agents.decision.ranking.TorchRanker` trains and
serves: ``forward(x, segment) -> (n, 3)`` outputs (click logit, like logit, log-dwell) and ``input_layer`` (None:
no input map shared by every row, so serving materialises the pair features). What each adds over a linear model
is an interaction between input features that a weighted sum cannot represent:

- ``wide_deep``: a linear ("wide") part plus an MLP ("deep") part, summed (Cheng et al. 2016);
- ``dcn``: a cross network, ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l`` for ``cross_layers`` layers (explicit
  feature crosses of bounded degree, DCN-v2's full-rank form), beside an MLP; both feed the heads (Wang et al.);
- ``fm``: a linear part plus the factorisation machine's pairwise term ``sum_{i<j} <v_i, v_j> x_i x_j`` computed
  in O(F k) as ``0.5 ((x V)^2 - x^2 V^2)``, projected to the heads (Rendle 2010; DeepFM adds an MLP: ``deep``);
- ``mmoe``: ``experts`` MLP experts shared by the tasks, a softmax gate per task mixing them, and a tower per task
  (Ma et al. 2018).

``ModelDesign`` holds the knobs (``MODEL_ARCHITECTURES``, width, depth, cross layers, FM factors, experts); the
JSON form of a design is data validated against :data:`MODEL_DESIGN_SCHEMA`, never code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from envs.validation import ConfigError, check_choice, check_int

__all__ = ["HEAD_COUNT", "MODEL_ARCHITECTURES", "MODEL_DESIGN_SCHEMA", "ModelDesign", "build_model"]

HEAD_COUNT = 3  # click, like, dwell
MODEL_ARCHITECTURES = ("linear", "mlp", "wide_deep", "dcn", "fm", "mmoe")
WIDTHS = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ModelDesign:
    """A ranking model's structure: ``arch`` (one of :data:`MODEL_ARCHITECTURES`), ``hidden`` width of its MLP
    parts, ``depth`` (hidden layers of an MLP part, widths halving), ``cross_layers`` (dcn), ``fm_dim`` (fm factors),
    ``deep`` (fm: add an MLP part, i.e. DeepFM), ``experts`` (mmoe). Knobs an architecture does not use are kept
    and ignored (a design document may carry them)."""

    arch: str = "mlp"
    hidden: int = 64
    depth: int = 2
    cross_layers: int = 2
    fm_dim: int = 8
    deep: bool = False
    experts: int = 3

    def __post_init__(self) -> None:
        check_choice("model.arch", self.arch, MODEL_ARCHITECTURES)
        check_choice("model.hidden", self.hidden, WIDTHS)
        check_int("model.depth", self.depth, 1, 4)
        check_int("model.cross_layers", self.cross_layers, 1, 6)
        check_int("model.fm_dim", self.fm_dim, 2, 64)
        check_int("model.experts", self.experts, 2, 8)
        if not isinstance(self.deep, bool):
            raise ConfigError(f"`model.deep` must be true or false (got {self.deep!r})")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


MODEL_DESIGN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["arch", "hidden", "depth", "cross_layers", "fm_dim", "deep", "experts"],
    "properties": {
        "arch": {"enum": list(MODEL_ARCHITECTURES)},
        "hidden": {"enum": list(WIDTHS)},
        "depth": {"type": "integer", "minimum": 1, "maximum": 4},
        "cross_layers": {"type": "integer", "minimum": 1, "maximum": 6},
        "fm_dim": {"type": "integer", "minimum": 2, "maximum": 64},
        "deep": {"type": "boolean"},
        "experts": {"type": "integer", "minimum": 2, "maximum": 8},
    },
}


def _mlp(in_dim: int, hidden: int, depth: int) -> tuple[nn.Sequential, int]:
    """``depth`` Linear+ReLU layers of widths ``hidden, hidden/2, ...`` (at least 4); returns it and its output width."""
    layers: list[nn.Module] = []
    width, prev = hidden, in_dim
    for _ in range(depth):
        layers += [nn.Linear(prev, width), nn.ReLU()]
        prev, width = width, max(4, width // 2)
    return nn.Sequential(*layers), prev


class _Net(nn.Module):
    """Base: no input map shared by all rows (serving materialises features); ``segment`` is accepted and unused."""

    input_layer = None

    def forward(self, x: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError


class WideDeep(_Net):
    def __init__(self, in_dim: int, d: ModelDesign) -> None:
        super().__init__()
        self.wide = nn.Linear(in_dim, HEAD_COUNT)
        self.deep, width = _mlp(in_dim, d.hidden, d.depth)
        self.head = nn.Linear(width, HEAD_COUNT)

    def forward(self, x: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        return self.wide(x) + self.head(self.deep(x))


class CrossNet(_Net):
    """DCN: a cross network and an MLP side by side, their outputs concatenated into the heads."""

    def __init__(self, in_dim: int, d: ModelDesign) -> None:
        super().__init__()
        self.cross = nn.ModuleList([nn.Linear(in_dim, in_dim) for _ in range(d.cross_layers)])
        for layer in self.cross:  # start near the identity map x_{l+1} ~ x_l: the crosses grow from 0
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        self.deep, width = _mlp(in_dim, d.hidden, d.depth)
        self.head = nn.Linear(in_dim + width, HEAD_COUNT)

    def forward(self, x: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        xl = x
        for layer in self.cross:
            xl = x * layer(xl) + xl
        return self.head(torch.cat([xl, self.deep(x)], dim=1))


class FactorizationMachine(_Net):
    """Linear part + the FM's pairwise interactions (k factors, projected to the heads) (+ an MLP when ``deep``)."""

    def __init__(self, in_dim: int, d: ModelDesign) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, HEAD_COUNT)
        self.v = nn.Parameter(torch.randn(in_dim, d.fm_dim) * 0.05)
        self.project = nn.Linear(d.fm_dim, HEAD_COUNT)
        self.deep: nn.Module | None = None
        if d.deep:
            self.deep, width = _mlp(in_dim, d.hidden, d.depth)
            self.deep_head = nn.Linear(width, HEAD_COUNT)

    def forward(self, x: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        xv = x @ self.v
        pairwise = 0.5 * (xv * xv - (x * x) @ (self.v * self.v))  # (n, k): sum_{i<j} v_i v_j x_i x_j per factor
        out = self.linear(x) + self.project(pairwise)
        if self.deep is not None:
            out = out + self.deep_head(self.deep(x))
        return out


class MMoE(_Net):
    """Shared experts, one softmax gate and one tower per task (click, like, dwell)."""

    def __init__(self, in_dim: int, d: ModelDesign) -> None:
        super().__init__()
        made = [_mlp(in_dim, d.hidden, d.depth) for _ in range(d.experts)]
        self.experts = nn.ModuleList([m for m, _ in made])
        width = made[0][1]
        self.gates = nn.ModuleList([nn.Linear(in_dim, d.experts) for _ in range(HEAD_COUNT)])
        self.towers = nn.ModuleList([nn.Linear(width, 1) for _ in range(HEAD_COUNT)])

    def forward(self, x: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
        e = torch.stack([m(x) for m in self.experts], dim=1)  # (n, E, W)
        outs = []
        for gate, tower in zip(self.gates, self.towers):
            g = torch.softmax(gate(x), dim=1)  # (n, E)
            outs.append(tower((g[:, :, None] * e).sum(dim=1)))
        return torch.cat(outs, dim=1)


_BUILDERS = {"wide_deep": WideDeep, "dcn": CrossNet, "fm": FactorizationMachine, "mmoe": MMoE}


def build_model(design: ModelDesign, in_dim: int) -> nn.Module:
    """The module of a design's ``arch`` among ``wide_deep``, ``dcn``, ``fm``, ``mmoe`` (``linear`` and ``mlp``, with
    their per-segment towers and factorised serving, are :class:`~agents.decision.ranking.MultiTaskNet`'s)."""
    check_int("in_dim", in_dim, 1)
    if design.arch not in _BUILDERS:
        raise ConfigError(f"`model.arch` must be one of {sorted(_BUILDERS)} for build_model (got {design.arch!r}); "
                          f"linear and mlp are MultiTaskNet's")
    return _BUILDERS[design.arch](in_dim, design)
