"""Plotting helpers shared by the experiments: curves over simulated days with the world's shifts marked."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

__all__ = ["day_curves"]


def day_curves(ax: Any, frame: pd.DataFrame, by: str, column: str, label: str,
               shifts: Iterable[tuple[int, str]], **style: Any) -> None:
    """One line per ``by`` group of ``column`` against ``day``; dashed verticals at the shift days (after day 0)."""
    for name, g in frame.groupby(by, sort=False):
        ax.plot(g["day"], g[column], label=name, **style)
    for day, kind in shifts:
        if day > 0:
            ax.axvline(day, color="grey", ls="--", lw=0.8)
            ax.text(day, ax.get_ylim()[1], kind, rotation=90, va="top", ha="right", fontsize=7, color="grey")
    ax.set_xlabel("simulated day")
    ax.set_ylabel(label)
    ax.set_title(label)
    ax.legend()
