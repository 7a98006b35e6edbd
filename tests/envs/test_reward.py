"""ResponseReward: a weighted sum of a response's clicks, dwell minutes, likes, violations and returns."""

from __future__ import annotations

import numpy as np
import pytest

from envs import ConfigError, Response
from envs.reward import ResponseReward


def _response() -> Response:
    """Two requests with slates of 3.

    row 0: a click at position 1 with 90 s dwell and a like; position 2 violates policy.
    row 1: no click; positions 0 and 2 violate policy.
    """
    return Response(
        click=np.array([[False, True, False], [False, False, False]]),
        dwell=np.array([[0.0, 90.0, 0.0], [0.0, 0.0, 0.0]], np.float32),
        like=np.array([[False, True, False], [False, False, False]]),
        violation=np.array([[False, False, True], [True, False, True]]),
        exit=np.array([False, True]),
        choice_prob=np.full((2, 4), 0.25, np.float32),
        experience=np.zeros(2, np.float32),
        satisfaction=np.zeros(2, np.float32),
        expected_dwell=np.zeros((2, 3), np.float32),
        expected_like=np.zeros((2, 3), np.float32),
        exit_prob=np.full(2, 0.5, np.float32),
    )


def test_default_reward_counts_clicks() -> None:
    reward = ResponseReward()(_response())
    assert reward.dtype == np.float32
    np.testing.assert_array_equal(reward, [1.0, 0.0])


def test_weights_combine_by_hand() -> None:
    fn = ResponseReward(click=2.0, dwell=0.5, like=3.0, violation=4.0, returned=10.0)
    reward = fn(_response(), returned=np.array([False, True]))
    # row 0: 2 * 1 click + 0.5 * (90 s = 1.5 min) + 3 * 1 like - 4 * 1 violation + 10 * 0 = 2 + 0.75 + 3 - 4 = 1.75
    # row 1: 2 * 0 + 0 + 0 - 4 * 2 violations + 10 * 1 returned = 2.0
    np.testing.assert_allclose(reward, [1.75, 2.0], rtol=1e-6)
    # without a session-end outcome the returned term is not paid
    np.testing.assert_allclose(fn(_response()), [1.75, -8.0], rtol=1e-6)


@pytest.mark.parametrize("term", ["click", "dwell", "like", "violation", "returned"])
def test_each_term_alone(term: str) -> None:
    weights = dict.fromkeys(["click", "dwell", "like", "violation", "returned"], 0.0) | {term: 1.0}
    reward = ResponseReward(**weights)(_response(), returned=np.array([True, False]))
    expected = {  # per row, from the docstring of _response()
        "click": [1.0, 0.0],
        "dwell": [1.5, 0.0],  # minutes
        "like": [1.0, 0.0],
        "violation": [-1.0, -2.0],  # subtracted
        "returned": [1.0, 0.0],
    }[term]
    np.testing.assert_allclose(reward, expected, rtol=1e-6)


@pytest.mark.parametrize("key", ["click", "dwell", "like", "violation", "returned"])
def test_negative_weight_is_rejected(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"`reward\.{key}` must be in \[0\.0, 1000000\.0\] \(got -1\.0\)"):
        ResponseReward(**{key: -1.0})
