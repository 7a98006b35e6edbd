"""The agent protocol and the promotion check that decides whether a module is an agent.

A module is promoted to an agent only when it (i) closes a loop: it acts and it learns from
feedback (``act`` and ``observe``), and what it learns reaches what it does: given a log of feedback,
``observe(log)`` changes the output of ``act`` on a fixed probe input; (ii) can be evaluated on its own:
``inner_metrics(log)`` returns numbers computed from the interaction log; and (iii) has an evolvable
decision space: a ``gymnasium.spaces.Space`` of configurations with more than one point.

The probe of (i) is the positional arguments of ``act``: passed to :func:`promote` as ``probe=``, or given by
the module's own ``probe()`` where it can build them alone (router, fusion stages);
:func:`agents.decision.system.probe_inputs` builds them for every agent of a running system.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces

from envs.log import InteractionLog

__all__ = ["ROLES", "Agent", "Promotion", "decision_space_size", "promote"]

ROLES = ("recall", "fusion", "ranking", "rerank", "router", "experiment")


@runtime_checkable
class Agent(Protocol):
    """What every decision agent offers (and, optionally, ``probe()``: the arguments of ``act`` for a loop check
    of :func:`promote`, where the agent can build them alone)."""

    name: str
    role: str  # one of ROLES
    decision_space: spaces.Space  # the configurations evolution may choose from
    config: dict[str, Any]  # the current point of the decision space

    def act(self, *args: Any, **kwargs: Any) -> Any:
        """Decide for a request batch (signature depends on the role)."""
        ...

    def observe(self, log: InteractionLog) -> None:
        """Learn from the feedback in a window of traffic."""
        ...

    def inner_metrics(self, log: InteractionLog) -> dict[str, float]:
        """The agent's local metrics, computed from the log, under ``inner/<role>/...`` keys."""
        ...

    def configure(self, config: dict[str, Any]) -> None:
        """Deploy a point of the decision space (validated against it)."""
        ...


@dataclass
class Promotion:
    """The verdict of :func:`promote`: which criteria hold, and why not where they fail."""

    name: str
    closes_loop: bool
    evaluable: bool
    evolvable: bool
    reasons: list[str] = field(default_factory=list)
    loop_checked: bool = False  # whether (i) was checked on behaviour (observe on a log, act on a probe)

    @property
    def promoted(self) -> bool:
        return self.closes_loop and self.evaluable and self.evolvable

    def __bool__(self) -> bool:
        return self.promoted

    def __str__(self) -> str:
        if self.promoted:
            unchecked = "" if self.loop_checked else " (structure only: no log to check the loop on)"
            return f"{self.name}: promoted to agent{unchecked}"
        return f"{self.name}: not an agent: " + "; ".join(self.reasons)


def decision_space_size(space: spaces.Space) -> float:
    """Number of points of a space (``inf`` for continuous ones with a non-degenerate interval)."""
    if isinstance(space, spaces.Discrete):
        return float(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return float(np.prod(space.nvec.astype(float)))
    if isinstance(space, spaces.MultiBinary):
        return float(2 ** int(np.prod(space.shape)))
    if isinstance(space, spaces.Box):
        return math.inf if np.any(space.high > space.low) else 1.0
    if isinstance(space, spaces.Dict):
        return float(np.prod([decision_space_size(s) for s in space.spaces.values()])) if len(space.spaces) else 1.0
    if isinstance(space, spaces.Tuple):
        return float(np.prod([decision_space_size(s) for s in space.spaces])) if len(space.spaces) else 1.0
    raise TypeError(f"decision space of type {type(space).__name__} is not supported "
                    "(use Discrete, MultiDiscrete, MultiBinary, Box, Dict or Tuple)")


def promote(module: Any, log: InteractionLog | None = None, probe: tuple | None = None) -> Promotion:
    """Check the three promotion criteria on ``module``; ``log`` (optional) is the feedback it is checked on.

    With a log, (i) is checked on behaviour: two deep copies of the module act on the probe, one of them after
    ``observe(log)``; the module closes its loop only if the outputs differ (with its current config: a module
    whose learning is switched off there is no agent there). ``probe`` is the tuple of ``act``'s positional
    arguments (deep-copied for each call, so both see identical inputs, a random generator's state included);
    without it, the module's own ``probe()``. The check is one-sided: a log that holds nothing the module reacts
    to also fails it, so pass a window of traffic with clicks on what it decides about. Without a log only the
    structure is checked (``loop_checked`` False) and ``inner_metrics`` is not called.

    Returns a :class:`Promotion` that is truthy only when all three hold; ``str()`` explains failures.
    """
    name = getattr(module, "name", type(module).__name__)
    reasons: list[str] = []

    act, observe = getattr(module, "act", None), getattr(module, "observe", None)
    closes_loop = callable(act) and callable(observe)
    loop_checked = False
    if not closes_loop:
        missing = [m for m, f in (("act", act), ("observe", observe)) if not callable(f)]
        reasons.append(f"does not close a loop (observe -> decide -> act -> feedback): no {' or '.join(missing)}()")
    elif log is not None:
        loop_checked = True
        why = _learning_reaches_act(module, log, probe)
        if why is not None:
            closes_loop = False
            reasons.append(f"does not close a loop (observe -> decide -> act -> feedback): {why}")

    metrics_fn = getattr(module, "inner_metrics", None)
    evaluable = callable(metrics_fn)
    if not evaluable:
        reasons.append("cannot be evaluated on its own: no inner_metrics(log)")
    elif log is not None:
        try:
            values = metrics_fn(log)
        except Exception as exc:  # noqa: BLE001 - report any failure as the reason
            evaluable = False
            reasons.append(f"cannot be evaluated on its own: inner_metrics(log) raised {type(exc).__name__}: {exc}")
        else:
            bad = not isinstance(values, dict) or not values or not all(
                isinstance(k, str) and isinstance(v, (int, float, np.floating, np.integer)) for k, v in values.items()
            )
            if bad:
                evaluable = False
                reasons.append("cannot be evaluated on its own: inner_metrics(log) must return a non-empty dict of numbers "
                               f"(got {values!r:.80})")

    space = getattr(module, "decision_space", None)
    evolvable = isinstance(space, spaces.Space)
    if not evolvable:
        reasons.append("has no evolvable decision space: decision_space must be a gymnasium.spaces.Space "
                       f"(got {type(space).__name__})")
    else:
        size = decision_space_size(space)
        if size <= 1:
            evolvable = False
            reasons.append(f"has no evolvable decision space: {space} has a single point")
    return Promotion(name, closes_loop, evaluable, evolvable, reasons, loop_checked)


def _learning_reaches_act(module: Any, log: InteractionLog, probe: tuple | None) -> str | None:
    """None when ``observe(log)`` changes ``act(*probe)``; otherwise why not (or why it could not be shown)."""
    if not log.num_requests and not log.num_impressions:
        return "the log holds no feedback to learn from (pass a window of traffic)"
    if probe is None:
        own = getattr(module, "probe", None)
        if not callable(own):
            return "no probe input to act on (pass promote(module, log, probe=<act's arguments>) or define probe())"
        probe = own()
    if not isinstance(probe, tuple):
        return f"the probe must be a tuple of act's positional arguments (got {type(probe).__name__})"
    try:
        before, after = copy.deepcopy(module), copy.deepcopy(module)
    except Exception as exc:  # noqa: BLE001 - report any failure as the reason
        return f"cannot copy the module to check its loop: {type(exc).__name__}: {exc}"
    try:
        after.observe(log)
    except Exception as exc:  # noqa: BLE001
        return f"observe(log) raised {type(exc).__name__}: {exc}"
    try:
        unchanged = _same(before.act(*copy.deepcopy(probe)), after.act(*copy.deepcopy(probe)))
    except Exception as exc:  # noqa: BLE001
        return f"act(probe) raised {type(exc).__name__}: {exc}"
    if unchanged:
        config = getattr(module, "config", None)
        at = f" with config {config}" if isinstance(config, dict) else ""
        return f"observe(log) does not change act: the same output on the probe before and after learning{at}"
    return None


def _same(a: Any, b: Any) -> bool:
    """Exact equality of act outputs: arrays (nan equal to nan), tensors, dicts, sequences, dataclasses, scalars."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor
        a = a.detach().cpu().numpy()
    if hasattr(b, "detach") and hasattr(b, "cpu"):
        b = b.detach().cpu().numpy()
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        if np.issubdtype(a.dtype, np.inexact) and np.issubdtype(b.dtype, np.inexact):
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    try:
        return bool(a == b) or (a != a and b != b)  # nan == nan
    except Exception:  # noqa: BLE001 - incomparable outputs count as different
        return False
