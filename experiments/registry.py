"""The registry of arms (name -> arm), filled by :func:`experiments.arms.register_arm`, read by the config schema.

It holds no arm itself, so :mod:`experiments.config` validates ``controller.name`` and ``controller.options``
against it without importing :mod:`experiments.arms` (which imports the config's types): no import cycle.
Importing :mod:`experiments.arms` registers the built-in arms.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ARMS", "ArmSpec"]


class ArmSpec(Protocol):
    """What the config schema reads of an arm: its name and its options dataclass (None: no options)."""

    @property
    def name(self) -> str: ...

    @property
    def options(self) -> type | None: ...


ARMS: dict[str, ArmSpec] = {}
