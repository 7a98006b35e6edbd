"""Stochastic slate policies with known propensities: a Plackett-Luce (softmax) re-ranker and an epsilon-greedy one.

Both choose a slate of ``K`` distinct candidates, in order, from ``C`` scored candidates per request, vectorised over
a batch of requests (``scores`` is ``(B, C)``; slates are ``(B, K)`` candidate indices), and both know exactly how
likely any slate is, which is what off-policy evaluation needs (``rewards.ope``):

* :class:`PlackettLuce` at temperature ``tau``: position after position, the next item is drawn from the softmax of
  ``score / tau`` over the candidates not yet placed, so a slate ``(a_1, .., a_K)`` has probability
  ``prod_k exp(s_{a_k} / tau) / sum_{c not in a_1..a_{k-1}} exp(s_c / tau)``. Sampling uses the Gumbel-top-k trick
  (the ``K`` largest of ``s / tau + Gumbel`` noise are a PL slate, in order), one draw of ``(B, C)`` noise per batch.
  ``tau = 0`` is the greedy top-``K`` slate by score, handled exactly: probability 1 on that slate, 0 elsewhere
  (ties go to the lower candidate index, as in a stable sort).
* :class:`EpsilonGreedy`: the greedy top-``K`` slate with probability ``1 - epsilon``, otherwise a uniformly random
  ordered slate of ``K`` distinct candidates; the slate's probability is
  ``(1 - epsilon) 1{greedy} + epsilon (C - K)! / C!`` and every per-position marginal is exact.

``marginals`` gives ``P(candidate c at position k)``, ``(B, K, C)``, what the position-based slate estimator weighs
with. It is exact for the greedy and epsilon-greedy policies and, for Plackett-Luce, exact at position 0 (the
softmax). At later positions Plackett-Luce marginals are either exact, by a recursion over the *sets* of items placed
before (``sum_{j<K} C choose j`` sets: cheap for the slates of a re-ranker, e.g. 55 sets for ``C = 10, K = 3``; the
default ``method="auto"`` uses it up to :data:`EXACT_CELLS` cells per request), or a Rao-Blackwellised Monte Carlo
estimate (``method="mc"``): ``M`` sampled prefixes ``a_1..a_k`` and the mean of the exact conditional
``P(c at k | prefix) = 1{c not in prefix} softmax(s / tau over the rest)_c``, unbiased, with its Monte Carlo standard
error (:class:`Marginals`); it is 0 for an item that was in every sampled prefix (rare at large ``M``, unless the item
nearly always takes an earlier position).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from envs.validation import ConfigError, check_choice, check_int, check_probability, check_range

__all__ = ["MARGINAL_METHODS", "EpsilonGreedy", "Marginals", "PlackettLuce", "SlatePolicy", "exact_cells", "greedy_slate",
           "uniform_slate_log_prob"]

CHUNK_CELLS = 1 << 21  # Monte Carlo marginals work on (rows, samples, candidates) blocks of at most this many cells
TINY = np.finfo(np.float32).tiny  # an exponential draw of exactly 0 (float32) would be an infinite Gumbel key
EXACT_CELLS = 20_000  # "auto" marginals are exact up to this many cells per request (C=10, K=3: 550; C=20, K=3: 4,200)
MARGINAL_METHODS = ("auto", "exact", "mc")
ILL_CONDITIONED = 1e-9  # a prefix leaving less mass than this: that row's marginals are summed in log space


@dataclass(frozen=True)
class Marginals:
    """``prob[b, k, c]``: P(candidate ``c`` at position ``k``) for request ``b``; ``se``: its Monte Carlo standard
    error (0 where it is exact). Each ``prob[b, k]`` sums to 1 over the candidates."""

    prob: np.ndarray  # (B, K, C) float64
    se: np.ndarray  # (B, K, C) float64

    def of(self, slates: np.ndarray) -> np.ndarray:
        """(B, K): the marginal probability of each slate's own item at its position."""
        return np.take_along_axis(self.prob, np.asarray(slates, np.int64)[..., None], axis=2)[..., 0]


class SlatePolicy(Protocol):
    """A slate policy over scored candidates whose slate probabilities and per-position marginals are known."""

    def sample(self, scores: np.ndarray, slate_size: int, rng: np.random.Generator) -> np.ndarray:
        """(B, K) candidate indices, a slate per request, drawn with ``rng``."""
        ...

    def log_prob(self, scores: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """(B,) the log-probability of each given slate (``-inf`` where the policy never shows it)."""
        ...

    def marginals(self, scores: np.ndarray, slate_size: int, rng: np.random.Generator, samples: int = 256,
                  method: str = "auto") -> Marginals:
        """P(candidate c at position k), (B, K, C): ``method`` one of :data:`MARGINAL_METHODS`."""
        ...


def _scores(scores: np.ndarray, slate_size: int | None = None) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    if s.ndim != 2 or s.shape[1] == 0:
        raise ConfigError(f"`scores` must be (requests, candidates) with at least one candidate (got shape {s.shape})")
    if not np.isfinite(s).all():
        raise ConfigError("`scores` must be finite (got nan or inf): a policy cannot rank them")
    if slate_size is not None:
        check_int("slate_size", slate_size, 1)
        if slate_size > s.shape[1]:
            raise ConfigError(f"`slate_size` must be <= the number of candidates (got {slate_size} > {s.shape[1]})")
    return s


def _slates(slates: np.ndarray, s: np.ndarray) -> np.ndarray:
    a = np.asarray(slates)
    if a.ndim != 2 or a.shape[0] != s.shape[0] or not a.shape[1] or a.shape[1] > s.shape[1]:
        raise ConfigError(f"`slates` must be (requests, K) with 1 <= K <= candidates, one row per row of `scores` "
                          f"(got {a.shape} for scores {s.shape})")
    if not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= s.shape[1]:
        raise ConfigError(f"`slates` must hold candidate indices in [0, {s.shape[1] - 1}] (got {a.dtype} in "
                          f"[{a.min()}, {a.max()}])")
    srt = np.sort(a, axis=1)
    if (srt[:, 1:] == srt[:, :-1]).any():
        raise ConfigError("`slates` must not repeat a candidate within a slate (a slate is drawn without replacement)")
    return a.astype(np.int64)


def greedy_slate(scores: np.ndarray, slate_size: int) -> np.ndarray:
    """(B, K) the top-``K`` candidates by score, best first; ties go to the lower index (a stable sort)."""
    s = _scores(scores, slate_size)
    return np.argsort(-s, axis=1, kind="stable")[:, :slate_size]


def uniform_slate_log_prob(num_candidates: int, slate_size: int) -> float:
    """log of ``(C - K)! / C!``: the probability of one ordered slate of ``K`` distinct candidates drawn uniformly."""
    return -(math.lgamma(num_candidates + 1) - math.lgamma(num_candidates - slate_size + 1))


def _gumbel_top_k(z: np.ndarray, slate_size: int, rng: np.random.Generator) -> np.ndarray:
    """The ``K`` largest of ``z + Gumbel(0, 1)`` along the last axis, in decreasing order: a PL draw from ``z``.
    (``-log E`` with ``E ~ Exp(1)`` is a Gumbel variable; float32 exponentials are the cheapest to draw.)"""
    g = z - np.log(np.maximum(rng.standard_exponential(size=z.shape, dtype=np.float32), TINY))
    c = z.shape[-1]
    if slate_size <= 4:  # a few passes of argmax beat a partition of the whole row
        out = np.empty(z.shape[:-1] + (slate_size,), np.int64)
        for k in range(slate_size):
            best = np.argmax(g, axis=-1)
            out[..., k] = best
            np.put_along_axis(g, best[..., None], -np.inf, axis=-1)
        return out
    if slate_size < c:
        part = np.argpartition(-g, slate_size - 1, axis=-1)[..., :slate_size]
    else:
        part = np.broadcast_to(np.arange(c), g.shape).copy()
    order = np.argsort(-np.take_along_axis(g, part, axis=-1), axis=-1)
    return np.take_along_axis(part, order, axis=-1)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _one_hot_marginals(slates: np.ndarray, num_candidates: int) -> np.ndarray:
    b, k = slates.shape
    prob = np.zeros((b, k, num_candidates))
    np.put_along_axis(prob, slates[..., None], 1.0, axis=2)
    return prob


@dataclass(frozen=True)
class PlackettLuce:
    """The softmax re-ranker: a Plackett-Luce slate over ``scores / temperature`` (``temperature = 0``: greedy)."""

    temperature: float = 1.0

    def __post_init__(self) -> None:
        check_range("temperature", self.temperature, 0, 1000)  # 1000: uniform for any O(1) score

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def sample(self, scores: np.ndarray, slate_size: int, rng: np.random.Generator) -> np.ndarray:
        s = _scores(scores, slate_size)
        if self.greedy:
            return greedy_slate(s, slate_size)
        return _gumbel_top_k(s / self.temperature, slate_size, rng)

    def log_prob(self, scores: np.ndarray, slates: np.ndarray) -> np.ndarray:
        s = _scores(scores)
        a = _slates(slates, s)
        if self.greedy:
            same = (a == greedy_slate(s, a.shape[1])).all(axis=1)
            return np.where(same, 0.0, -np.inf)
        z = s / self.temperature
        z = z - z.max(axis=1, keepdims=True)
        rows = np.arange(len(z))
        out = np.zeros(len(z))
        for k in range(a.shape[1]):  # a loop over positions, not requests
            top = z.max(axis=1)  # the remaining candidates' log-sum-exp, stabilised row by row
            lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
            out += z[rows, a[:, k]] - lse
            z[rows, a[:, k]] = -np.inf  # placed: out of the running for later positions
        return out

    def marginals(self, scores: np.ndarray, slate_size: int, rng: np.random.Generator, samples: int = 256,
                  method: str = "auto") -> Marginals:
        """Exact for ``temperature = 0`` and at position 0 (the softmax); at later positions exact by the recursion
        over prefix sets (``method="exact"``, or ``"auto"`` when it costs at most :data:`EXACT_CELLS` cells per
        request) or Rao-Blackwellised Monte Carlo with ``samples`` prefixes (``"mc"``), with its standard error (see
        the module docstring)."""
        s = _scores(scores, slate_size)
        check_choice("method", method, MARGINAL_METHODS)
        b, c = s.shape
        if self.greedy:
            prob = _one_hot_marginals(greedy_slate(s, slate_size), c)
            return Marginals(prob, np.zeros_like(prob))
        z = s / self.temperature
        if method == "exact" or (method == "auto" and exact_cells(c, slate_size) <= EXACT_CELLS):
            prob = _exact_marginals(z, slate_size)
            return Marginals(prob, np.zeros_like(prob))
        check_int("samples", samples, 2)
        p = _softmax(z)  # (B, C): exactly the marginals at position 0
        prob, var = np.empty((b, slate_size, c)), np.zeros((b, slate_size, c))
        prob[:, 0] = p
        rows = max(1, CHUNK_CELLS // (samples * c))
        for lo in range(0, b, rows):
            pc = p[lo : lo + rows]
            r = len(pc)
            # (r, M, K - 1): sampled prefixes, one PL draw per sample (only its first K - 1 items are used)
            prefix = _gumbel_top_k(np.broadcast_to(z[lo : lo + rows, None, :], (r, samples, c)), slate_size - 1, rng)
            cells = np.arange(r)[:, None, None] * c + prefix  # flat (row, candidate) cells of the prefixes
            placed = np.take_along_axis(pc[:, None, :], prefix, axis=2)  # (r, M, K - 1)
            rest = 1.0 - np.cumsum(placed, axis=2)  # the mass left after each prefix length
            for k in range(1, slate_size):
                # P(c at k | prefix) = p_c 1{c not in prefix} / rest: over the M prefixes its mean is
                # p_c (mean(1 / rest) - mean(1{c in prefix} / rest)), its second moment the same with p_c^2, 1 / rest^2
                with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # ill-conditioned rows: redone below
                    inv = 1.0 / rest[:, :, k - 1]
                    idx = cells[:, :, :k].ravel()
                    moments = []
                    for w in (inv, inv**2):
                        hit = np.bincount(idx, weights=np.repeat(w[:, :, None], k, axis=2).ravel(), minlength=r * c)
                        moments.append(w.mean(axis=1, keepdims=True) - hit.reshape(r, c) / samples)
                    mean, second = pc * moments[0], pc**2 * moments[1]
                    prob[lo : lo + rows, k] = np.maximum(mean, 0.0)  # >= 0 up to rounding already
                    var[lo : lo + rows, k] = np.maximum(second - mean**2, 0.0) / (samples - 1)
            bad = np.flatnonzero((rest < ILL_CONDITIONED).any(axis=(1, 2)))
            if len(bad):  # a prefix holds (almost) all the mass: 1 - cumsum cancels, or p underflowed to 0
                prob[lo + bad, 1:], var[lo + bad, 1:] = _log_space_moments(z[lo + bad], prefix[bad], samples)
        return Marginals(prob, np.sqrt(var))


def exact_cells(num_candidates: int, slate_size: int) -> int:
    """Cells per request of the exact recursion: every prefix set of fewer than ``K`` items, times ``C``."""
    return num_candidates * sum(math.comb(num_candidates, j) for j in range(1, slate_size))


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - top).sum(axis=axis)) + np.squeeze(top, axis=axis)


def _exact_marginals(z: np.ndarray, slate_size: int) -> np.ndarray:
    """Exact PL marginals (B, K, C) of the logits ``z`` by a recursion over prefix *sets*, in log space.

    ``f(S)``, the probability that the first ``|S|`` items are the set ``S`` (in any order), is
    ``sum_{a in S} f(S - a) p_a / rest(S - a)`` with ``rest(T)`` the probability mass outside ``T``; then
    ``P(c at k) = sum_{|S| = k, c not in S} f(S) p_c / rest(S)``. Every term is positive (no cancellation) and each
    level is one vectorised step over the requests and the ``C choose k`` sets; rows go in chunks.
    """
    b, c = z.shape
    lp = z - _logsumexp(z, 1)[:, None]  # log softmax
    out = np.empty((b, slate_size, c))
    out[:, 0] = np.exp(lp)
    levels = [_prefix_sets(c, j) for j in range(1, slate_size)]
    rows = max(1, CHUNK_CELLS // max(1, exact_cells(c, slate_size) * slate_size))
    for lo in range(0, b, rows):
        lpc = lp[lo : lo + rows]
        log_f, log_rest = np.zeros((len(lpc), 1)), np.zeros((len(lpc), 1))  # the empty prefix: f = 1, rest = 1
        for j, (inside, parent, member) in enumerate(levels, start=1):
            terms = log_f[:, parent] + lpc[:, member] - log_rest[:, parent]  # (r, L_j, j)
            log_f = _logsumexp(terms, 2)
            log_rest = _logsumexp(np.where(inside[None], -np.inf, lpc[:, None, :]), 2)  # (r, L_j): mass left
            # f(S) p_c / rest(S) <= f(S) <= 1 for c outside S (log p is finite: computed in log space)
            log_each = np.where(inside[None], -np.inf, (log_f - log_rest)[:, :, None] + lpc[:, None, :])
            out[lo : lo + rows, j] = np.exp(log_each).sum(axis=1)  # (r, C)
    return out


def _prefix_sets(c: int, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``C choose j`` sets of ``j`` candidates: membership (L, C) bool, and per member the index of the set
    without it among the sets of ``j - 1`` (L, j) and the member (L, j)."""
    sets = list(itertools.combinations(range(c), j))
    smaller = {t: i for i, t in enumerate(itertools.combinations(range(c), j - 1))}
    inside = np.zeros((len(sets), c), bool)
    for i, t in enumerate(sets):
        inside[i, list(t)] = True
    member = np.array(sets, np.int64).reshape(len(sets), j)
    parent = np.array([[smaller[t[:m] + t[m + 1 :]] for m in range(j)] for t in sets], np.int64).reshape(len(sets), j)
    return inside, parent, member


def _log_space_moments(z: np.ndarray, prefix: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The Rao-Blackwellised mean and MC variance of ``P(c at k | prefix)`` for positions 1..K-1, each conditional
    a softmax over the candidates left, in log space: (r, K - 1, C) each. O(rows x samples x candidates) per position."""
    zc = np.repeat(z[:, None, :], samples, axis=1)  # (r, M, C)
    r, _, c = zc.shape
    mean, var = np.empty((r, prefix.shape[2], c)), np.empty((r, prefix.shape[2], c))
    for k in range(prefix.shape[2]):
        np.put_along_axis(zc, prefix[:, :, k : k + 1], -np.inf, axis=2)
        cond = np.exp(zc - zc.max(axis=2, keepdims=True))
        cond /= cond.sum(axis=2, keepdims=True)
        mean[:, k] = cond.mean(axis=1)
        var[:, k] = cond.var(axis=1, ddof=1) / samples
    return mean, var


@dataclass(frozen=True)
class EpsilonGreedy:
    """The greedy top-``K`` slate, replaced with probability ``epsilon`` by a uniformly random ordered slate."""

    epsilon: float = 0.1

    def __post_init__(self) -> None:
        check_probability("epsilon", self.epsilon)

    def sample(self, scores: np.ndarray, slate_size: int, rng: np.random.Generator) -> np.ndarray:
        s = _scores(scores, slate_size)
        out = greedy_slate(s, slate_size)
        explore = rng.random(len(s)) < self.epsilon
        if explore.any():
            out[explore] = _gumbel_top_k(np.zeros((int(explore.sum()), s.shape[1])), slate_size, rng)
        return out

    def log_prob(self, scores: np.ndarray, slates: np.ndarray) -> np.ndarray:
        s = _scores(scores)
        a = _slates(slates, s)
        same = (a == greedy_slate(s, a.shape[1])).all(axis=1)
        uniform = math.exp(uniform_slate_log_prob(s.shape[1], a.shape[1]))
        with np.errstate(divide="ignore"):
            return np.log(np.where(same, 1.0 - self.epsilon, 0.0) + self.epsilon * uniform)

    def marginals(self, scores: np.ndarray, slate_size: int, rng: np.random.Generator, samples: int = 256,
                  method: str = "auto") -> Marginals:
        """Exact, whatever ``method``: ``(1 - epsilon) 1{c is the greedy k-th} + epsilon / C`` (``rng`` and
        ``samples`` are unused)."""
        check_choice("method", method, MARGINAL_METHODS)
        s = _scores(scores, slate_size)
        prob = (1.0 - self.epsilon) * _one_hot_marginals(greedy_slate(s, slate_size), s.shape[1])
        prob += self.epsilon / s.shape[1]
        return Marginals(prob, np.zeros_like(prob))
