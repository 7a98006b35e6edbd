"""Stochastic slate policies: Plackett-Luce probabilities worked out by hand, sampling frequencies against them, the
Monte Carlo marginals against exact ones, the greedy limit handled exactly, epsilon-greedy's exact propensities, and
bad input refused with the key."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from agents.decision.stochastic import EpsilonGreedy, PlackettLuce, exact_cells, greedy_slate, uniform_slate_log_prob
from envs.validation import ConfigError

# 4 candidates with PL weights exp(score) = 4, 2, 1, 1 (W = 8), slates of K = 2. P(i then j) = w_i / W * w_j / (W - w_i):
#   (0,1) 4/8 * 2/4 = 1/4     (0,2) = (0,3) = 4/8 * 1/4 = 1/8
#   (1,0) 2/8 * 4/6 = 1/6     (1,2) = (1,3) = 2/8 * 1/6 = 1/24
#   (2,0) = (3,0) 1/8 * 4/7 = 1/14    (2,1) = (3,1) 1/8 * 2/7 = 1/28    (2,3) = (3,2) 1/8 * 1/7 = 1/56   (sum 1)
# position 1 marginals: item 0: 1/6 + 2/14 = 13/42; item 1: 1/4 + 2/28 = 9/28; items 2, 3: 1/8 + 1/24 + 1/56 = 31/168
SCORES = np.log([[4.0, 2.0, 1.0, 1.0]])
HAND = {(0, 1): 1 / 4, (0, 2): 1 / 8, (0, 3): 1 / 8, (1, 0): 1 / 6, (1, 2): 1 / 24, (1, 3): 1 / 24,
        (2, 0): 1 / 14, (3, 0): 1 / 14, (2, 1): 1 / 28, (3, 1): 1 / 28, (2, 3): 1 / 56, (3, 2): 1 / 56}
POSITION_1 = np.array([13 / 42, 9 / 28, 31 / 168, 31 / 168])
SLATES = np.array(list(HAND))  # the 12 ordered slates of 2 of 4


def _frequencies(slates: np.ndarray) -> dict[tuple[int, int], float]:
    keys, counts = np.unique(slates, axis=0, return_counts=True)
    return {tuple(int(v) for v in k): c / len(slates) for k, c in zip(keys, counts)}


def test_plackett_luce_slate_probabilities_by_hand() -> None:
    pl = PlackettLuce(1.0)
    logp = pl.log_prob(np.repeat(SCORES, len(SLATES), axis=0), SLATES)
    np.testing.assert_allclose(np.exp(logp), [HAND[tuple(s)] for s in SLATES.tolist()], rtol=1e-12)
    # temperature 0.5 squares the weights: 16, 4, 1, 1 (W = 22); P(0 then 1) = 16/22 * 4/6
    half = PlackettLuce(0.5).log_prob(SCORES, np.array([[0, 1]]))
    assert math.exp(half[0]) == pytest.approx(16 / 22 * 4 / 6, rel=1e-12)


def test_sampling_frequencies_match_the_exact_probabilities() -> None:
    n = 200_000
    rng = np.random.default_rng(0)
    freq = _frequencies(PlackettLuce(1.0).sample(np.repeat(SCORES, n, axis=0), 2, rng))
    assert set(freq) == set(HAND)  # every slate is drawn, none other (no repeats)
    for slate, p in HAND.items():  # 4.5 binomial standard errors: all 12 pass by chance with probability > 0.9999
        assert abs(freq[slate] - p) < 4.5 * math.sqrt(p * (1 - p) / n), (slate, freq[slate], p)


def test_slate_probabilities_sum_to_one_on_random_scores() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(0, 2, (6, 5))
    slates = np.array(list(itertools.permutations(range(5), 3)))  # all 60 ordered slates of 3 of 5
    for tau in (2.0, 1.0, 0.3):
        logp = PlackettLuce(tau).log_prob(np.repeat(scores, len(slates), axis=0), np.tile(slates, (6, 1)))
        np.testing.assert_allclose(np.exp(logp).reshape(6, -1).sum(axis=1), 1.0, rtol=1e-10)


def test_exact_marginals_by_hand_and_by_enumeration() -> None:
    m = PlackettLuce(1.0).marginals(SCORES, 2, np.random.default_rng(0), method="exact")
    np.testing.assert_allclose(m.prob[0], [[0.5, 0.25, 0.125, 0.125], POSITION_1], rtol=1e-12)
    assert (m.se == 0).all() and exact_cells(4, 2) == 16
    # against the sum over all 60 ordered slates of 3 of 5, each weighed by its probability (log_prob), on random rows
    rng = np.random.default_rng(4)
    scores = rng.normal(0, 3, (4, 5))
    slates = np.array(list(itertools.permutations(range(5), 3)))
    for tau in (1.0, 0.2):
        pl = PlackettLuce(tau)
        p = np.exp(pl.log_prob(np.repeat(scores, len(slates), axis=0), np.tile(slates, (4, 1)))).reshape(4, -1)
        brute = np.zeros((4, 3, 5))
        for i, slate in enumerate(slates):
            brute[:, np.arange(3), slate] += p[:, i : i + 1]
        np.testing.assert_allclose(pl.marginals(scores, 3, rng).prob, brute, rtol=1e-9, atol=1e-15)
    # far from 1: a temperature that puts almost all the mass on a few items stays finite and normalised
    sharp = PlackettLuce(0.01).marginals(scores * 10, 3, rng).prob
    assert np.isfinite(sharp).all() and np.allclose(sharp.sum(axis=2), 1.0)


def test_monte_carlo_marginals_exact_at_position_0_and_unbiased_at_position_1() -> None:
    rows = 2_000
    m = PlackettLuce(1.0).marginals(np.repeat(SCORES, rows, axis=0), 2, np.random.default_rng(2), samples=64, method="mc")
    np.testing.assert_allclose(m.prob[:, 0], np.tile([0.5, 0.25, 0.125, 0.125], (rows, 1)), rtol=1e-12)
    assert (m.se[:, 0] == 0).all()
    np.testing.assert_allclose(m.prob.sum(axis=2), 1.0, rtol=1e-12)  # a distribution over candidates per position
    # each row is an independent unbiased estimate: their mean is within 4.5 standard errors of the exact marginal
    mean, spread = m.prob[:, 1].mean(axis=0), m.prob[:, 1].std(axis=0, ddof=1) / math.sqrt(rows)
    assert (np.abs(mean - POSITION_1) < 4.5 * spread + 1e-12).all(), (mean, POSITION_1, spread)
    # and the reported Monte Carlo error of one row matches the rows' spread (within 20%, 2,000 rows)
    np.testing.assert_allclose(m.se[:, 1].mean(axis=0), m.prob[:, 1].std(axis=0, ddof=1), rtol=0.2)
    assert (m.prob[:, 1] > 0).all()  # Rao-Blackwellised: never 0 where the true marginal is not


def test_greedy_is_exact_at_temperature_zero() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, -1.0, 2.0, 0.0]])
    greedy = PlackettLuce(0.0)
    expected = np.array([[1, 3], [0, 2]])  # the tie 0.9 = 0.9 goes to the lower index
    np.testing.assert_array_equal(greedy.sample(scores, 2, np.random.default_rng(0)), expected)
    np.testing.assert_array_equal(greedy_slate(scores, 2), expected)
    assert greedy.log_prob(scores, expected).tolist() == [0.0, 0.0]
    assert greedy.log_prob(scores, np.array([[3, 1], [0, 3]])).tolist() == [-math.inf, -math.inf]
    m = greedy.marginals(scores, 2, np.random.default_rng(0))
    assert m.of(expected).tolist() == [[1.0, 1.0], [1.0, 1.0]] and m.prob.sum() == 4.0 and (m.se == 0).all()
    # the limit: a small temperature puts almost all of the mass on the greedy slate (no tie in row 2)
    assert math.exp(PlackettLuce(0.01).log_prob(scores[1:], expected[1:])[0]) > 1 - 1e-6


def test_epsilon_greedy_propensities_are_exact() -> None:
    n, eps = 200_000, 0.3
    policy = EpsilonGreedy(eps)
    freq = _frequencies(policy.sample(np.repeat(SCORES, n, axis=0), 2, np.random.default_rng(3)))
    logp = policy.log_prob(np.repeat(SCORES, len(SLATES), axis=0), SLATES)
    probs = np.exp(logp)
    # greedy (0, 1): 0.7 + 0.3 / 12; each other slate 0.3 / 12
    assert probs.sum() == pytest.approx(1.0) and probs[0] == pytest.approx(0.7 + 0.3 / 12)
    assert math.exp(uniform_slate_log_prob(4, 2)) == pytest.approx(1 / 12)
    for slate, p in zip(map(tuple, SLATES.tolist()), probs):
        assert abs(freq.get(slate, 0.0) - p) < 4.5 * math.sqrt(p * (1 - p) / n), (slate, p)
    m = policy.marginals(SCORES, 2, np.random.default_rng(0))
    np.testing.assert_allclose(m.prob[0], [[0.7 + 0.075, 0.075, 0.075, 0.075], [0.075, 0.775, 0.075, 0.075]])
    assert EpsilonGreedy(0.0).log_prob(SCORES, np.array([[1, 0]]))[0] == -math.inf


def test_bad_input_is_refused_with_the_key() -> None:
    with pytest.raises(ConfigError, match=r"`temperature` must be in \[0, 1000\] \(got -1.0\)"):
        PlackettLuce(-1.0)
    with pytest.raises(ConfigError, match=r"`epsilon` must be in \[0.0, 1.0\] \(got 1.5\)"):
        EpsilonGreedy(1.5)
    with pytest.raises(ConfigError, match=r"`slate_size` must be <= the number of candidates \(got 5 > 4\)"):
        PlackettLuce(1.0).sample(SCORES, 5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="must not repeat a candidate"):
        PlackettLuce(1.0).log_prob(SCORES, np.array([[1, 1]]))
    with pytest.raises(ConfigError, match=r"`slates` must hold candidate indices in \[0, 3\]"):
        PlackettLuce(1.0).log_prob(SCORES, np.array([[0, 4]]))
    with pytest.raises(ConfigError, match=r"`method` must be one of \['auto', 'exact', 'mc'\] \(got 'mcmc'\); did you mean 'mc'\?"):
        PlackettLuce(1.0).marginals(SCORES, 2, np.random.default_rng(0), method="mcmc")
    with pytest.raises(ConfigError, match="`scores` must be finite"):
        PlackettLuce(1.0).sample(np.array([[0.0, np.nan]]), 1, np.random.default_rng(0))
