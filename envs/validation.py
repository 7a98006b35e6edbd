"""Validation of user-supplied parameters and actions: one error type, messages that name the key, the range and the value.

Every check runs before any simulation and never lets a value through that the simulation cannot use:
NaN and +/-inf are rejected everywhere (an unbounded side of a range means "any finite number"), integers
too large for a float are rejected without an ``OverflowError``, a non-mapping where a mapping is expected
is named with its type, and an action must be exactly a point of its space (:func:`check_action`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

import numpy as np
from gymnasium import spaces

__all__ = [
    "ActionError",
    "ConfigError",
    "check_action",
    "check_choice",
    "check_int",
    "check_mapping",
    "check_probability",
    "check_range",
    "check_simplex",
    "short_repr",
]

MAX_REPR = 120  # characters of a value quoted in an error message


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the key, the allowed values and what was given."""


class ActionError(ConfigError):
    """An action is not a point of its action space (a ``ValueError``, as Gymnasium envs raise for bad actions)."""


# ---------------------------------------------------------------------------------------------- formatting
def _fmt_int(value: int) -> str:
    """An int as text; one too long to print (Python refuses > 4300 digits) is described by its size."""
    if value.bit_length() <= 200:
        return str(value)
    digits = int(value.bit_length() * math.log10(2)) + 1
    return f"{'-' if value < 0 else ''}an integer of about {digits} digits"


def _fmt_scalar(value: Any) -> str:
    if isinstance(value, np.generic):  # np.float64(nan) -> nan
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return _fmt_int(int(value))
    if isinstance(value, str):
        return repr(value)
    return repr(value) if isinstance(value, (float, np.floating, complex, np.complexfloating)) else str(value)


def _fmt_seq(values: Any, budget: int) -> str:
    """A (nested) list or tuple as text, stopping once ``budget`` characters are used."""
    opening, closing = ("(", ")") if isinstance(values, tuple) else ("[", "]")
    parts: list[str] = []
    used = 0
    for item in values:
        if used > budget:
            parts.append("...")
            break
        text = _fmt_seq(item, budget - used) if isinstance(item, (list, tuple)) else _fmt_scalar(item)
        parts.append(text)
        used += len(text) + 2
    return opening + ", ".join(parts) + closing


def short_repr(value: Any, limit: int = MAX_REPR) -> str:
    """A value as text for an error message: strings quoted, huge ints described, long reprs cut to ``limit``."""
    if isinstance(value, np.ndarray):  # its values as nested lists (a long one flattened and cut)
        head = value.reshape(-1)[: limit // 2] if value.size > limit // 2 else value
        text = _fmt_seq(head.tolist(), limit) if head.ndim else _fmt_scalar(head.item())
        if head is not value:
            text = text[:-1] + ", ...]"
    elif isinstance(value, (list, tuple)):
        text = _fmt_seq(value, limit)
    else:
        text = _fmt_scalar(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(value: Any) -> str:
    return short_repr(value)


def _given(value: Any) -> str:
    return f"{type(value).__name__} {short_repr(value)}"


# ---------------------------------------------------------------------------------------------- numbers
def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_finite(value: int | float | np.integer | np.floating) -> bool:
    """Finite and representable as a float (an int beyond ~1.8e308 is not: it would overflow any float math)."""
    if isinstance(value, (int, np.integer)):
        return abs(int(value)) <= _FLOAT_MAX_INT
    return math.isfinite(value) if isinstance(value, float) else bool(np.isfinite(value))


_FLOAT_MAX_INT = int(np.finfo(np.float64).max)


def _interval(low: float | None, high: float | None, low_inclusive: bool, high_inclusive: bool) -> str:
    lo = "(-inf" if low is None else ("[" if low_inclusive else "(") + _fmt(low)
    hi = "inf)" if high is None else _fmt(high) + ("]" if high_inclusive else ")")
    return f"{lo}, {hi}"


def check_range(
    key: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Check that ``value`` is a finite real number with ``low <= value <= high`` and return it unchanged.

    Bounds are optional (``None``: no bound on that side, but the value must still be finite); inclusivity is
    set per side. NaN, +/-inf and integers beyond the float range are rejected; ints are compared exactly.
    """
    if not _is_real(value):
        raise ConfigError(f"`{key}` must be a number (got {_given(value)})")
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        raise ConfigError(f"`{key}` must be a number (got nan)")
    if not _is_finite(value):
        interval = _interval(low, high, low_inclusive, high_inclusive)
        raise ConfigError(f"`{key}` must be finite (got {_fmt(value)}); allowed: {interval}")
    below = low is not None and (value < low if low_inclusive else value <= low)
    above = high is not None and (value > high if high_inclusive else value >= high)
    if below or above:
        raise ConfigError(f"`{key}` must be in {_interval(low, high, low_inclusive, high_inclusive)} (got {_fmt(value)})")
    return value


def check_int(key: str, value: int, low: int | None = None, high: int | None = None) -> int:
    """Check that ``value`` is an integer (not a bool, not a float) within ``[low, high]`` and return it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"`{key}` must be an integer (got {_given(value)})")
    check_range(key, value, low, high)
    return value


def check_probability(key: str, value: float) -> float:
    """Check that ``value`` is a probability in [0, 1]."""
    return check_range(key, value, 0.0, 1.0)


def _same(option: Any, value: Any) -> bool:
    """``option == value`` without letting a bool stand for 1/0 or an array's element-wise ``==`` through."""
    if isinstance(option, (bool, np.bool_)) != isinstance(value, (bool, np.bool_)):
        return False
    try:
        return bool(option == value)
    except (ValueError, TypeError):
        return False


def check_choice(key: str, value: str, allowed: Iterable[str]) -> str:
    """Check that ``value`` is one of ``allowed`` and return that option; suggest the closest name otherwise."""
    options = list(allowed)
    if type(value) is str and value in options:  # the common case, without the general comparison below
        return value
    for option in options:
        if _same(option, value):
            return option
    names = [o for o in options if isinstance(o, str)]
    close = difflib.get_close_matches(value, names, n=1) if isinstance(value, str) else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"`{key}` must be one of {options} (got {_fmt(value)}){hint}")


def check_mapping(key: str, value: Any, what: str = "key -> value") -> Mapping[Any, Any]:
    """Check that ``value`` is a mapping (a dict, a Hydra ``DictConfig``); name the type given otherwise."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"`{key}` must be a mapping of {what} (got {_given(value)})")
    return value


def check_simplex(key: str, weights: Mapping[str, float], allowed: Iterable[str]) -> dict[str, float]:
    """Check a name -> weight mapping: known names, finite non-negative weights, positive total; return it normalised."""
    check_mapping(key, weights, "name -> weight")
    options = list(allowed)
    for name, w in weights.items():
        check_choice(f"{key} key", name, options)
        check_range(f"{key}.{name}", w, 0.0)
    values = {name: float(w) for name, w in weights.items()}
    total = sum(values.values())
    if not total > 0.0:
        raise ConfigError(f"`{key}` must have a positive total weight (got {short_repr(dict(weights))})")
    if not math.isfinite(total):  # weights near the float maximum: scale by the largest first
        top = max(values.values())
        values = {name: w / top for name, w in values.items()}
        total = sum(values.values())
    return {name: w / total for name, w in values.items()}


# ---------------------------------------------------------------------------------------------- actions
def _bounds(space: spaces.Space) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per-entry bounds of a space: low, high, and whether high is exclusive."""
    if isinstance(space, spaces.MultiDiscrete):
        return np.asarray(space.start), np.asarray(space.start) + np.asarray(space.nvec), True
    if isinstance(space, spaces.Discrete):
        return np.asarray(space.start), np.asarray(space.start + space.n), True
    if isinstance(space, spaces.Box):
        return space.low, space.high, False
    raise TypeError(f"check_action supports MultiDiscrete, Discrete and Box spaces (got {space})")


def _describe(space: spaces.Space, low: np.ndarray, high: np.ndarray, exclusive: bool) -> str:
    """What a space's entries may be, e.g. "integers in [0, 20)"."""
    kind = "integers" if np.issubdtype(space.dtype, np.integer) else "finite numbers"
    if low.size and (low == low.flat[0]).all() and (high == high.flat[0]).all():
        rng = f"[{_fmt_scalar(low.flat[0])}, {_fmt_scalar(high.flat[0])}{')' if exclusive else ']'}"
    elif isinstance(space, spaces.MultiDiscrete):
        rng = "[start, start + nvec) per entry" if low.any() else "[0, nvec) per entry"
    else:
        rng = "[low, high] per entry"
    return f"{kind} in {rng}"


def _numeric_object_array(arr: np.ndarray, fail: Any) -> np.ndarray:
    """An object array (e.g. from a list holding ints beyond int64) as an int64 or float64 array, checked per element."""
    flat = arr.reshape(-1).tolist()
    any_float = False
    for i, v in enumerate(flat):
        if not _is_real(v):
            fail(f"entry {_index(arr.shape, i)} is {_given(v)}, not a number")
        if isinstance(v, (int, np.integer)):
            if not -(2**63) <= int(v) < 2**63:
                fail(f"entry {_index(arr.shape, i)} = {_fmt_int(int(v))} is out of range")
        else:
            any_float = True
    return np.array(flat, dtype=np.float64 if any_float else np.int64).reshape(arr.shape)


def _index(shape: tuple[int, ...], flat: int) -> tuple[int, ...] | int:
    idx = tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()
    return idx[0] if len(idx) == 1 else idx


def check_action(space: spaces.Space, action: Any, key: str = "action", meaning: str = "") -> np.ndarray:
    """``action`` as an array of ``space``'s dtype, or an :class:`ActionError` naming ``key``, the space and the value.

    Accepted: a numpy array, a (nested) list or tuple, or anything ``np.asarray`` turns into a numeric array, with
    exactly the space's shape (no reshaping of ``(1, K)`` or ``(K, 1)``); real (int or float) values only, finite,
    within the space's bounds. For integer spaces (``MultiDiscrete``, ``Discrete``) a float is accepted only when it
    is integral (``3.0`` is ``3``; ``3.5`` is an error, never truncated). Rejected before any conversion that could
    overflow or wrap: bool, complex, string and non-numeric object arrays, NaN, +/-inf and ints beyond int64.
    ``meaning`` (e.g. "candidate indices") is added to the message.
    """
    low, high, exclusive = _bounds(space)
    shape = tuple(space.shape or ())
    integral = np.issubdtype(space.dtype, np.integer)

    def fail(problem: str) -> NoReturn:  # the message is built only on failure: step() stays cheap
        what = f" ({meaning})" if meaning else ""
        raise ActionError(
            f"`{key}` must lie in {short_repr(space, 80)} (got {short_repr(action)}: {problem}); "
            f"allowed: {_describe(space, low, high, exclusive)} of shape {shape}{what}"
        )

    if isinstance(action, np.ndarray):
        arr = action
    elif isinstance(action, (list, tuple)):  # element by element: np.asarray would turn [0, 2**63] into floats
        try:
            arr = np.array(action, dtype=object)
        except ValueError as exc:
            fail(f"not a rectangular array of numbers ({exc})")
    elif isinstance(action, (str, bytes, Mapping, set, frozenset)) or action is None:
        fail(f"a {type(action).__name__}, not an array")
    else:
        try:
            arr = np.asarray(action)
        except (ValueError, TypeError, OverflowError) as exc:
            fail(f"not a rectangular array of numbers ({exc})")
    kind = arr.dtype.kind
    if kind == "b":
        fail("a bool array; booleans are neither indices nor numbers here")
    if kind == "c":
        fail(f"a {arr.dtype} array; complex numbers are not allowed")
    if kind not in "iufO":
        fail(f"an array of dtype {arr.dtype}, not of numbers")
    if arr.shape != shape:
        fail(f"shape {arr.shape}, not {shape}; it is never reshaped")
    if kind == "O":
        arr = _numeric_object_array(arr, fail)
        kind = arr.dtype.kind
    if kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(-1))[0])
            fail(f"entry {_index(shape, i)} is {_fmt_scalar(arr.reshape(-1)[i])}")
        if integral:
            frac = arr != np.trunc(arr)
            if frac.any():
                i = int(np.flatnonzero(frac.reshape(-1))[0])
                fail(f"entry {_index(shape, i)} = {_fmt_scalar(arr.reshape(-1)[i])} is not an integer")
    outside = (arr < low) | ((arr >= high) if exclusive else (arr > high))
    if outside.any():
        i = int(np.flatnonzero(np.broadcast_to(outside, shape).reshape(-1))[0])
        fail(f"entry {_index(shape, i)} = {_fmt_scalar(arr.reshape(-1)[i])} is out of range")
    out = arr.astype(space.dtype)
    if not integral and not np.isfinite(out).all():
        fail(f"values overflow {space.dtype}")
    return out  # a point of the space: tests/test_properties.py checks this against ``space.contains``
