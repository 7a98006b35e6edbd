"""Validation of user-supplied parameters: one error type, messages that name the key, the range and the value."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "ConfigError",
    "check_choice",
    "check_int",
    "check_probability",
    "check_range",
    "check_simplex",
]


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the key, the allowed values and what was given."""


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_range(
    key: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Check ``low <= value <= high`` (bounds optional, inclusivity per side) and return the value."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"`{key}` must be a number (got {type(value).__name__} {_fmt(value)})")
    if math.isnan(value):
        raise ConfigError(f"`{key}` must be a number (got nan)")
    below = low is not None and (value < low if low_inclusive else value <= low)
    above = high is not None and (value > high if high_inclusive else value >= high)
    if below or above:
        lo = "(-inf" if low is None else ("[" if low_inclusive else "(") + _fmt(low)
        hi = "inf)" if high is None else _fmt(high) + ("]" if high_inclusive else ")")
        raise ConfigError(f"`{key}` must be in {lo}, {hi} (got {_fmt(value)})")
    return value


def check_int(key: str, value: int, low: int | None = None, high: int | None = None) -> int:
    """Check that ``value`` is an integer within ``[low, high]`` and return it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"`{key}` must be an integer (got {type(value).__name__} {_fmt(value)})")
    check_range(key, value, low, high)
    return value


def check_probability(key: str, value: float) -> float:
    """Check that ``value`` is a probability in [0, 1]."""
    return check_range(key, value, 0.0, 1.0)


def check_choice(key: str, value: str, allowed: Iterable[str]) -> str:
    """Check that ``value`` is one of ``allowed``; suggest the closest name otherwise."""
    options = list(allowed)
    if value in options:
        return value
    close = difflib.get_close_matches(str(value), options, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"`{key}` must be one of {options} (got {_fmt(value)}){hint}")


def check_simplex(key: str, weights: Mapping[str, float], allowed: Iterable[str]) -> dict[str, float]:
    """Check a name -> weight mapping: known names, non-negative weights, positive total; return it normalised."""
    options = list(allowed)
    for name, w in weights.items():
        check_choice(f"{key} key", name, options)
        check_range(f"{key}.{name}", w, 0.0)
    total = float(sum(weights.values()))
    if total <= 0.0:
        raise ConfigError(f"`{key}` must have a positive total weight (got {dict(weights)})")
    return {name: float(w) / total for name, w in weights.items()}
