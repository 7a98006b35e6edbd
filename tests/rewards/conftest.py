"""Hand-built interaction logs for the reward tests: a log builder and one small worked example log."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from envs.log import CANDIDATE_COLUMNS, IMPRESSION_COLUMNS, REQUEST_COLUMNS, InteractionLog

# an expected column not given copies its realised column, so hand-worked numbers hold under either outcome setting
EXPECTED_OF = {"click_exp": "click", "dwell_exp": "dwell", "like_exp": "like", "clicks_exp": "clicks",
               "return_exp": "returned", "churn_exp": "churned"}


def _table(given: dict[str, list], columns: dict[str, type]) -> dict[str, np.ndarray]:
    """The given columns as typed arrays; an expected column not given copies its realised one (:data:`EXPECTED_OF`);
    every other column zeros of the same length."""
    given = {**{e: given[r] for e, r in EXPECTED_OF.items() if e in columns and e not in given and r in given}, **given}
    n = len(next(iter(given.values()))) if given else 0
    return {c: np.asarray(given[c], dtype=t) if c in given else np.zeros(n, dtype=t) for c, t in columns.items()}


def build_log(
    impressions: dict[str, list] | None = None,
    requests: dict[str, list] | None = None,
    candidates: dict[str, list] | None = None,
    **meta,
) -> InteractionLog:
    return InteractionLog(
        _table(impressions or {}, IMPRESSION_COLUMNS),
        _table(requests or {}, REQUEST_COLUMNS),
        _table(candidates or {}, CANDIDATE_COLUMNS),
        **meta,
    )


@pytest.fixture
def make_log() -> Callable[..., InteractionLog]:
    return build_log


@pytest.fixture
def small_log() -> InteractionLog:
    """4 requests x 2 positions, 2 users, 6 items (item 5 never shown), 4 creators (creator 3 never shown).

    request step user segment pipeline | shown (item, route, score, click)  | clicks dwell(s) viol cand end ret churn
    r0      0    0    0 new     0      | (0,r0,.95,0) (1,r1,.45,1)          | 1      30       0    10   F   T*  F
    r1      1    1    1 heavy   1      | (2,r1,.85,0) (3,r0,.35,0)          | 0      0        1    20   T   F   T
    r2      2    0    0 new     0      | (1,r1,.65,1) (4,r0,.15,1)          | 2      90       0    30   T   T   F
    r3      3    1    1 heavy   0      | (2,r1,.75,1) (0,r0,.25,0)          | 1      60       0    40   T   T   F
    (* r0 did not end a session: its `returned` flag must be ignored)
    item -> creator: 0->0, 1->0, 2->1, 3->1, 4->2; item tier: 0 head, 1 torso, 2/3/4 tail.
    The served probability ``p_click`` equals ``score`` (a calibration factor of 1); serving cost per impression
    1.0 2.0 | 0.5 0.5 | 1.5 2.5 | 3.0 1.0 (12.0 in all, 3.0 per request).
    Route candidates (provenance): popular (0): r0 {0,4,3}, r1 {0,3}, r2 {0,4}, r3 {0};
                                   collab (1):  r0 {1,2}, r1 {2,1}, r2 {1}, r3 {2}.
    """
    imp = {
        "request": [0, 0, 1, 1, 2, 2, 3, 3],
        "step": [0, 0, 1, 1, 2, 2, 3, 3],
        "user": [0, 0, 1, 1, 0, 0, 1, 1],
        "segment": [0, 0, 1, 1, 0, 0, 1, 1],
        "pipeline": [0, 0, 1, 1, 0, 0, 0, 0],
        "item": [0, 1, 2, 3, 1, 4, 2, 0],
        "position": [0, 1, 0, 1, 0, 1, 0, 1],
        "route": [0, 1, 1, 0, 1, 0, 1, 0],
        "score": [0.95, 0.45, 0.85, 0.35, 0.65, 0.15, 0.75, 0.25],
        "p_click": [0.95, 0.45, 0.85, 0.35, 0.65, 0.15, 0.75, 0.25],
        "cost": [1.0, 2.0, 0.5, 0.5, 1.5, 2.5, 3.0, 1.0],
        "creator": [0, 0, 1, 1, 0, 2, 1, 0],
        "tier": [0, 1, 2, 2, 1, 2, 2, 0],
        "freshness": [1.0, 0.5, 0.2, 0.2, 0.8, 0.4, 0.6, 0.3],
        "click": [0, 1, 0, 0, 1, 1, 1, 0],
        "dwell": [0, 30, 0, 0, 60, 30, 60, 0],
        "violation": [0, 0, 1, 0, 0, 0, 0, 0],
    }
    req = {
        "request": [0, 1, 2, 3],
        "step": [0, 1, 2, 3],
        "user": [0, 1, 0, 1],
        "segment": [0, 1, 0, 1],
        "pipeline": [0, 1, 0, 0],
        "candidates_scored": [10, 20, 30, 40],
        "clicks": [1, 0, 2, 1],
        "dwell": [30, 0, 90, 60],
        "violations": [0, 1, 0, 0],
        "session_end": [0, 1, 1, 1],
        "returned": [1, 0, 1, 1],
        "churned": [0, 1, 0, 0],
    }
    cand = {  # (request, item, route) rows; the user column is the request's user
        "request": [0, 0, 0, 1, 1, 2, 2, 3, 0, 0, 1, 1, 2, 3],
        "user": [0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0, 1],
        "item": [0, 4, 3, 0, 3, 0, 4, 0, 1, 2, 2, 1, 1, 2],
        "route": [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1],
    }
    return build_log(
        imp, req, cand, route_names=["popular", "collab"], segment_names=["new", "heavy", "casual"],
        num_items=6, num_creators=4,
    )
