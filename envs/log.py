"""The columnar interaction log: what the system showed, why, and how users responded.

Three tables of numpy columns (one array per column, equal lengths within a table):

* ``impressions``: one row per shown item (request, position);
* ``requests``: one row per request (a slate served to one user);
* ``candidates``: one row per candidate a recall route returned for a request (provenance).

Logs from successive windows are joined with :meth:`InteractionLog.concat`; ``to_frames`` gives pandas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: pandas is imported by to_frames, so the log itself needs numpy alone
    import pandas

__all__ = ["CANDIDATE_COLUMNS", "IMPRESSION_COLUMNS", "REQUEST_COLUMNS", "InteractionLog"]

# column -> dtype; every table is a dict of 1-D arrays with these columns
IMPRESSION_COLUMNS: dict[str, type] = {
    "request": np.int64,  # request id (unique within a log)
    "step": np.int64,  # world step at serving time
    "user": np.int64,
    "segment": np.int16,
    "pipeline": np.int16,  # which pipeline served the request (router decision)
    "item": np.int64,
    "position": np.int16,
    "route": np.int16,  # recall route that found the item (index into ``route_names``)
    "score": np.float32,  # the ranker's predicted click probability (its raw click head)
    "p_click": np.float32,  # the click probability served: the score fusion's calibration of ``score``
    "creator": np.int32,
    "topic": np.int32,
    "tier": np.int8,  # popularity tier at serving time: 0 head, 1 torso, 2 tail
    "freshness": np.float32,
    "risk": np.float32,  # estimated risk the recommender saw
    "cost": np.float32,  # the platform's cost of serving the item (the catalog's ``cost``)
    "click": np.bool_,
    "dwell": np.float32,  # seconds
    "like": np.bool_,
    "violation": np.bool_,
    # what the choice model expected of this impression (the noise-free outcome; ``envs.world.Response``)
    "click_exp": np.float32,  # P(click)
    "dwell_exp": np.float32,  # E[dwell seconds] = P(click) E[dwell | click]
    "like_exp": np.float32,  # P(click and like)
}
REQUEST_COLUMNS: dict[str, type] = {
    "request": np.int64,
    "step": np.int64,
    "user": np.int64,
    "segment": np.int16,
    "pipeline": np.int16,
    "candidates_scored": np.int32,  # resource cost: candidates passed to the ranker
    "clicks": np.int16,
    "dwell": np.float32,
    "violations": np.int16,
    "session_end": np.bool_,  # the session ended after this request
    "returned": np.bool_,  # next-day return (meaningful where session_end)
    "churned": np.bool_,  # (meaningful where session_end)
    # expected versions (violations need none: the shown items' latent flags decide them, so realised = expected)
    "clicks_exp": np.float32,  # 1 - P(no click)
    "dwell_exp": np.float32,  # expected dwell seconds of the slate
    "exit_exp": np.float32,  # P(the session ends after this slate)
    "return_exp": np.float32,  # P(next-day return) given the session (where session_end, else 0)
    "churn_exp": np.float32,  # P(no return and churn) given the session (where session_end, else 0)
}
CANDIDATE_COLUMNS: dict[str, type] = {
    "request": np.int64,
    "user": np.int64,
    "item": np.int64,
    "route": np.int16,
    "score": np.float32,  # the route's own retrieval score
}


def _empty(columns: dict[str, type]) -> dict[str, np.ndarray]:
    return {name: np.zeros(0, dtype) for name, dtype in columns.items()}


def _check(name: str, table: dict[str, np.ndarray], columns: dict[str, type]) -> dict[str, np.ndarray]:
    missing = [c for c in columns if c not in table]
    extra = [c for c in table if c not in columns]
    if missing or extra:
        raise ValueError(f"`{name}` table columns must be {list(columns)} (missing {missing}, unknown {extra})")
    lengths = {len(v) for v in table.values()}
    if len(lengths) > 1:
        raise ValueError(f"`{name}` columns must have equal lengths (got {sorted(lengths)})")
    return {c: np.asarray(table[c], dtype=columns[c]) for c in columns}


@dataclass
class InteractionLog:
    """Impressions, requests and candidate provenance of one or more windows of traffic."""

    impressions: dict[str, np.ndarray] = field(default_factory=lambda: _empty(IMPRESSION_COLUMNS))
    requests: dict[str, np.ndarray] = field(default_factory=lambda: _empty(REQUEST_COLUMNS))
    candidates: dict[str, np.ndarray] = field(default_factory=lambda: _empty(CANDIDATE_COLUMNS))
    route_names: list[str] = field(default_factory=list)
    segment_names: list[str] = field(default_factory=list)
    num_items: int = 0  # catalog size (for coverage and exposure Gini)
    num_creators: int = 0

    def __post_init__(self) -> None:
        self.impressions = _check("impressions", self.impressions, IMPRESSION_COLUMNS)
        self.requests = _check("requests", self.requests, REQUEST_COLUMNS)
        self.candidates = _check("candidates", self.candidates, CANDIDATE_COLUMNS)

    @property
    def num_requests(self) -> int:
        return len(self.requests["request"])

    @property
    def num_impressions(self) -> int:
        return len(self.impressions["request"])

    @classmethod
    def concat(cls, logs: list[InteractionLog]) -> InteractionLog:
        """Join logs of successive windows (their route and segment names must agree)."""
        if not logs:
            raise ValueError("`logs` must hold at least one log (got an empty list)")
        first = logs[0]
        for other in logs[1:]:
            if other.route_names != first.route_names or other.segment_names != first.segment_names:
                raise ValueError("logs to concat must share `route_names` and `segment_names`")

        def cat(attr: str) -> dict[str, np.ndarray]:
            tables = [getattr(log, attr) for log in logs]
            return {c: np.concatenate([t[c] for t in tables]) for c in tables[0]}

        return cls(
            cat("impressions"), cat("requests"), cat("candidates"), list(first.route_names),
            list(first.segment_names), first.num_items, first.num_creators,
        )

    def where(self, request_mask: np.ndarray) -> InteractionLog:
        """The sub-log of the requests selected by a boolean mask over ``requests`` rows."""
        keep = np.asarray(self.requests["request"])[request_mask]
        sel = lambda t: {c: v[np.isin(t["request"], keep)] for c, v in t.items()}  # noqa: E731
        return InteractionLog(
            sel(self.impressions),
            {c: v[request_mask] for c, v in self.requests.items()},
            sel(self.candidates), list(self.route_names), list(self.segment_names), self.num_items, self.num_creators,
        )

    def to_frames(self) -> dict[str, pandas.DataFrame]:
        import pandas as pd

        return {
            "impressions": pd.DataFrame(self.impressions),
            "requests": pd.DataFrame(self.requests),
            "candidates": pd.DataFrame(self.candidates),
        }
