"""Flat encodings of an agent's decision space, so SB3 algorithms (which refuse Dict actions) can act on it.

``box``: one coordinate in ``[-1, 1]`` per parameter; a choice takes the option whose equal-width bin
holds the value, a range maps linearly onto ``[low, high]``. ``multidiscrete``: one categorical per
parameter; a range is cut into ``bins`` evenly spaced values. ``encode`` is the inverse up to the
binning, so ``decode(encode(config)) == config`` for every grid point.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from agents.decision.params import Choice, ParamSpace
from envs.validation import ConfigError, check_action, check_choice, check_int

__all__ = ["CODECS", "SpaceCodec"]

CODECS = ("box", "multidiscrete")


class SpaceCodec:
    """Maps configs of a :class:`ParamSpace` to and from a flat ``Box`` or ``MultiDiscrete`` action."""

    def __init__(self, params: ParamSpace, kind: str = "box", bins: int = 11) -> None:
        check_choice("codec", kind, CODECS)
        check_int("codec bins", bins, 2, 1001)
        if not params.params:
            raise ConfigError("the decision space to encode has no parameters (got an empty ParamSpace)")
        self.params, self.kind, self.bins = params, kind, bins
        n = len(params.params)
        if kind == "box":
            self.space: spaces.Space = spaces.Box(-1.0, 1.0, shape=(n,), dtype=np.float32)
        else:
            sizes = [len(p.options) if isinstance(p, Choice) else bins for p in params.params]
            self.space = spaces.MultiDiscrete(np.array(sizes, dtype=np.int64))

    @property
    def size(self) -> int:
        return len(self.params.params)

    def decode(self, action: np.ndarray) -> dict[str, Any]:
        """Action -> config; raises ConfigError (an ``ActionError`` naming ``action``, the space and the value) for
        anything but a point of the space: wrong shape, NaN/inf, bool/complex/object arrays, fractional indices."""
        a = check_action(self.space, action, meaning=f"one entry per parameter, {self.size} parameters")
        config: dict[str, Any] = {}
        for i, p in enumerate(self.params.params):
            if self.kind == "box":
                u = (float(a[i]) + 1.0) / 2.0  # [0, 1]
                if isinstance(p, Choice):
                    config[p.name] = p.options[min(int(u * len(p.options)), len(p.options) - 1)]
                else:
                    config[p.name] = p.low + u * (p.high - p.low)
            else:
                k = int(a[i])
                config[p.name] = p.options[k] if isinstance(p, Choice) else p.low + k * (p.high - p.low) / (self.bins - 1)
        return config

    def encode(self, config: dict[str, Any]) -> np.ndarray:
        """Config -> the action that decodes to it (a range value goes to its nearest grid point for multidiscrete)."""
        config = self.params.validate(config)
        out = np.zeros(self.size, np.float32 if self.kind == "box" else np.int64)
        for i, p in enumerate(self.params.params):
            v = config[p.name]
            if isinstance(p, Choice):
                k = p.options.index(v)
                out[i] = (2.0 * (k + 0.5) / len(p.options) - 1.0) if self.kind == "box" else k
            else:
                u = 0.0 if p.high == p.low else (v - p.low) / (p.high - p.low)
                out[i] = 2.0 * u - 1.0 if self.kind == "box" else int(round(u * (self.bins - 1)))
        return out

    def grid(self) -> list[dict[str, Any]]:
        """Every config of the multidiscrete grid (choices x ``bins`` values per range), for exhaustive search."""
        axes = [list(p.options) if isinstance(p, Choice) else list(np.linspace(p.low, p.high, self.bins))
                for p in self.params.params]
        mesh = np.array(np.meshgrid(*[np.arange(len(ax)) for ax in axes], indexing="ij")).reshape(len(axes), -1).T
        return [{p.name: (axes[j][k] if isinstance(p, Choice) else float(axes[j][k]))
                 for j, (p, k) in enumerate(zip(self.params.params, row))}
                for row in mesh]
