"""Decision spaces of agents: named parameters (choices or ranges) and the gymnasium Space they form.

An agent declares its evolvable configuration as a :class:`ParamSpace`; ``space`` is the
``gymnasium.spaces.Dict`` evolution searches (a ``Discrete`` index per choice, a ``Box`` per range),
``validate`` checks a human-readable config ``{"k": 100, "half_life": 2.0}`` with clear errors, and
``to_point`` / ``from_point`` convert between the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from envs.validation import ConfigError, check_action, check_choice, check_mapping, check_range

__all__ = ["Choice", "DecisionAgent", "ParamSpace", "Range"]


@dataclass(frozen=True)
class Choice:
    """A categorical parameter: one of ``options``."""

    name: str
    options: tuple[Any, ...]
    default: Any

    def validate(self, key: str, value: Any) -> Any:
        """The option equal to ``value`` (so ``100.0`` gives the option ``100``; ``True`` never stands for ``1``)."""
        return check_choice(key, value, self.options)


@dataclass(frozen=True)
class Range:
    """A continuous parameter in ``[low, high]``."""

    name: str
    low: float
    high: float
    default: float

    def validate(self, key: str, value: Any) -> float:
        return float(check_range(key, value, self.low, self.high))


@dataclass
class ParamSpace:
    """The decision space of one agent."""

    params: Sequence[Choice | Range] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.params = tuple(self.params)
        self.by_name = {p.name: p for p in self.params}

    @property
    def space(self) -> spaces.Dict:
        out: dict[str, spaces.Space] = {}
        for p in self.params:
            if isinstance(p, Choice):
                out[p.name] = spaces.Discrete(len(p.options))
            else:
                out[p.name] = spaces.Box(p.low, p.high, shape=(1,), dtype=np.float32)
        return spaces.Dict(out)

    def default(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate(self, config: dict[str, Any], agent: str = "agent") -> dict[str, Any]:
        """A complete, checked config: unknown keys rejected (with did-you-mean), missing keys defaulted."""
        check_mapping(f"{agent} config", config, "parameter -> value")
        out = self.default()
        for key, value in config.items():
            check_choice(f"{agent} config key", key, list(self.by_name))
            out[key] = self.by_name[key].validate(f"{agent}.{key}", value)
        return out

    def neighbours(self, config: dict[str, Any], n: int, rng: np.random.Generator, scale: float = 0.05
                   ) -> list[dict[str, Any]]:
        """``n`` configs that each differ from ``config`` in one parameter (drawn uniformly): a range moves by a normal
        step of sd ``scale`` times its width, reflected at its ends; a choice switches to another option."""
        base = self.validate(config)
        out = []
        for _ in range(n):
            c = dict(base)
            p = self.params[int(rng.integers(len(self.params)))]
            if isinstance(p, Choice):
                others = [o for o in p.options if o != c[p.name]]
                c[p.name] = others[int(rng.integers(len(others)))] if others else c[p.name]
            else:
                v = c[p.name] + rng.normal(0.0, scale) * (p.high - p.low)
                v = p.low + abs(v - p.low)  # reflected at the low end ...
                c[p.name] = float(min(max(p.high - abs(p.high - v), p.low), p.high))  # ... and at the high end
            out.append(c)
        return out

    def to_point(self, config: dict[str, Any]) -> dict[str, Any]:
        """Config -> a point of ``space``."""
        point: dict[str, Any] = {}
        for p in self.params:
            v = config[p.name]
            point[p.name] = p.options.index(v) if isinstance(p, Choice) else np.array([v], np.float32)
        return point

    def from_point(self, point: dict[str, Any], agent: str = "agent") -> dict[str, Any]:
        """A point of ``space`` -> config; raises ConfigError if the point is outside the space."""
        check_mapping(f"{agent} decision", point, "parameter -> point")
        if set(point) != set(self.by_name):
            raise ConfigError(f"`{agent}` decision must have the keys {list(self.by_name)} (got {sorted(map(str, point))})")
        space = self.space
        config = {}
        for p in self.params:
            v = point[p.name]
            if isinstance(p, Range) and isinstance(v, (int, float, np.integer, np.floating)):
                v = [v]  # a bare number for a range's (1,)-shaped point
            checked = check_action(space[p.name], v, key=f"{agent}.{p.name}")
            config[p.name] = p.options[int(checked)] if isinstance(p, Choice) else float(checked[0])
        return config


class DecisionAgent:
    """Shared bookkeeping of decision agents: name, role, decision space, current config."""

    role: str = ""
    params: ParamSpace = ParamSpace()

    def __init__(self, name: str, config: dict[str, Any] | None = None) -> None:
        self.name = name
        self.config = self.params.validate(config or {}, agent=name)

    @property
    def decision_space(self) -> spaces.Dict:
        return self.params.space

    def configure(self, config: dict[str, Any]) -> None:
        """Deploy a new configuration (merged over the current one, validated)."""
        self.config = self.params.validate({**self.config, **config}, agent=self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, config={self.config})"
