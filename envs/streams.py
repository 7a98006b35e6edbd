"""Synchronised random streams: counter-based uniforms keyed by (traffic seed, purpose, user, that user's event counter).

A draw that concerns a user or a request does not come from a sequential generator, whose position depends on
everything drawn before it, but from a hash of what it is about: ``uniform(purpose, user, counter)``. Two runs with
the same traffic seed that serve different systems (two arms of an A/B comparison) therefore see the same user
arrive at the same step, and the same uniforms for that user's choice, dwell, like, exit, return and churn
wherever their slates agree, however their histories diverge elsewhere (exact common random numbers). A user's
counters (requests answered, sessions started, times the slot was re-populated) advance with that user's own
events only.

The hash is SplitMix64's finaliser applied to the running key plus each field (a bijective 64-bit mixer with full
avalanche); uniforms take the top 53 bits. Everything is vectorised over numpy ``uint64`` arrays (wrap-around
arithmetic is the intended modular arithmetic).
"""

from __future__ import annotations

import numpy as np

__all__ = ["PURPOSES", "KeyedDraws", "Streams", "box_muller"]

# one code per kind of draw: the purposes never share a stream
PURPOSES: dict[str, int] = {
    "arrival": 1,  # which free user makes the next request (a priority per user and step)
    "segment": 2,  # the segment of the r-th arrival of a step (by the request mix)
    "candidates": 3,  # the candidate set a slate env offers a user at a request
    "choice": 4,  # which slate item (or none) the user clicks
    "dwell_u": 5,  # dwell noise (two uniforms, Box-Muller)
    "dwell_v": 6,
    "like": 7,
    "exit": 8,  # the user ends the session after this slate
    "return": 9,  # next-day return after a session
    "churn": 10,  # a user who does not return leaves
    "new_user": 11,  # the attributes of the user who takes a churned user's slot
    "shift": 12,  # scheduled shifts (which users an influx replaces, which items a risk surge touches)
    "catalog_order": 14,  # the permutation of the catalog that candidate sets are windows of, per step
}

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 2.0**-53


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (a bijection of uint64 with full avalanche), in place on a uint64 array (ndim >= 1:
    array arithmetic wraps silently, as intended)."""
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


class Streams:
    """Counter-based random numbers of one traffic seed (see the module docstring)."""

    def __init__(self, seed: int | np.random.SeedSequence) -> None:
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
        self.key = int(ss.generate_state(1, np.uint64)[0])
        codes = np.array(list(PURPOSES.values()), np.uint64)
        self._purpose_key = dict(zip(PURPOSES, _mix(np.uint64(self.key) + codes * _GOLDEN).tolist()))

    def bits(self, purposes: str | tuple[str, ...], a: np.ndarray | int, b: np.ndarray | int = 0) -> np.ndarray:
        """64 random bits per element of ``broadcast(a, b)``, a function of (key, purpose, a, b) only; with a tuple of
        purposes, one row per purpose (shape ``(P, *broadcast(a, b).shape)``) in one pass."""
        single = isinstance(purposes, str)
        keys = np.array([self._purpose_key[purposes]] if single else [self._purpose_key[p] for p in purposes], np.uint64)
        a = np.asarray(a, np.uint64) if not isinstance(a, np.ndarray) else a.astype(np.uint64)
        b = np.asarray(b, np.uint64) if not isinstance(b, np.ndarray) else b.astype(np.uint64)
        ab = _mix(np.atleast_1d(a ^ _GOLDEN)) + b * _GOLDEN
        shape = ab.shape if (a.ndim or b.ndim) else ()
        ab = np.atleast_1d(ab)
        x = _mix(_mix(ab[None, ...] ^ keys.reshape((-1,) + (1,) * ab.ndim)))
        return x.reshape(shape) if single else x.reshape(keys.shape + shape)

    def uniform(self, purposes: str | tuple[str, ...], a: np.ndarray | int, b: np.ndarray | int = 0) -> np.ndarray:
        """Uniforms in [0, 1) (float64), one per element of ``broadcast(a, b)`` (per purpose, with a tuple)."""
        return (self.bits(purposes, a, b) >> _S11).astype(np.float64) * _TO_UNIT

    def normal(self, purposes: tuple[str, str], a: np.ndarray | int, b: np.ndarray | int = 0) -> np.ndarray:
        """Standard normals (float64) by Box-Muller from two keyed uniforms."""
        u, v = self.uniform(purposes, a, b)
        return box_muller(u, v)

    def integers(self, purpose: str, a: np.ndarray, counter: np.ndarray, high: int, size: int) -> np.ndarray:
        """``size`` integers in [0, high) per element of ``a`` (shape ``(len(a), size)``), keyed by (a, counter, j)."""
        j = np.arange(size, dtype=np.uint64)
        b = np.asarray(counter).astype(np.uint64)[:, None] * np.uint64(1 << 20) + j
        return (self.bits(purpose, np.asarray(a)[:, None], b) % np.uint64(high)).astype(np.int64)

    def generator(self, purpose: str, *key: int) -> np.random.Generator:
        """A sequential generator for one keyed event that needs many draws of awkward distributions (a new
        user's Dirichlet interests): seeded by (key, purpose, *key)."""
        return np.random.default_rng([self.key, PURPOSES[purpose], *(int(k) for k in key)])


def box_muller(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Standard normals from two independent uniforms in [0, 1) (``1 - u`` keeps the log finite)."""
    return np.sqrt(-2.0 * np.log1p(-u)) * np.cos(2.0 * np.pi * v)


class KeyedDraws:
    """The draws of a batch of keyed events (one row each: e.g. the newcomers who take churned users' slots), with
    the methods of ``np.random.Generator`` that event needs (``random``, ``standard_normal``, ``gamma``, ``poisson``,
    ``choice``), vectorised over the rows. Row ``i``'s numbers depend only on (key, purpose, ``rows[i]``,
    ``counters[i]``) and on the order of the calls, so a row's event draws the same numbers whatever other rows share
    the batch. Each call takes the next block of draw indices.
    """

    POISSON_EXACT = 50.0  # means up to this are drawn exactly (inverse CDF)
    GAMMA_TRIES = 8  # Marsaglia-Tsang accepts >= 95% per try for shape >= 1 (boosted below): failure ~1e-10

    def __init__(self, streams: Streams, purpose: str, rows: np.ndarray, counters: np.ndarray) -> None:
        self.streams, self.purpose = streams, purpose
        self.rows = np.asarray(rows, np.int64)[:, None]
        self.counters = (np.asarray(counters).astype(np.uint64) << np.uint64(24))[:, None]
        self.used = 0

    def _uniform(self, width: int) -> np.ndarray:
        j = np.arange(self.used, self.used + width, dtype=np.uint64)
        self.used += width
        return self.streams.uniform(self.purpose, self.rows, self.counters + j)

    def _check(self, size: tuple[int, ...] | int) -> int:
        size = (size,) if isinstance(size, int) else tuple(size)
        if size[0] != len(self.rows):
            raise ValueError(f"keyed draws come one row per event ({len(self.rows)} rows; got size {size})")
        return int(np.prod(size[1:], dtype=np.int64))

    def random(self, size: tuple[int, ...] | int) -> np.ndarray:
        width = self._check(size)
        return self._uniform(width).reshape(size)

    def standard_normal(self, size: tuple[int, ...] | int) -> np.ndarray:
        width = self._check(size)
        u, v = self._uniform(width), self._uniform(width)
        return box_muller(u, v).reshape(size)

    def gamma(self, shape: np.ndarray) -> np.ndarray:
        """Gamma(shape, 1) per element of ``shape`` (rows x columns): Marsaglia and Tsang's squeeze-free method with a
        fixed number of vectorised tries, shapes below 1 boosted by ``U ** (1 / shape)``."""
        a = np.asarray(shape, np.float64)
        width = self._check(a.shape)
        boost = a < 1.0
        d = np.where(boost, a + 1.0, a) - 1.0 / 3.0
        c = 1.0 / np.sqrt(9.0 * d)
        out = d.copy()  # only kept where every try fails (probability ~1e-10 per element)
        todo = np.ones(a.shape, bool)
        for _ in range(self.GAMMA_TRIES):
            x = self.standard_normal(a.shape)
            u = self._uniform(width).reshape(a.shape)
            v = (1.0 + c * x) ** 3
            with np.errstate(invalid="ignore", divide="ignore"):
                ok = todo & (v > 0) & (np.log1p(-u) < 0.5 * x * x + d - d * v + d * np.log(np.maximum(v, 1e-300)))
            out[ok] = (d * v)[ok]
            todo &= ~ok
            if not todo.any():
                self.used += (self.GAMMA_TRIES - _ - 1) * 3 * width  # keep later calls' blocks where they are
                break
        u = self._uniform(width).reshape(a.shape)
        return np.where(boost, out * (1.0 - u) ** (1.0 / np.where(boost, a, 1.0)), out)

    def poisson(self, lam: np.ndarray) -> np.ndarray:
        """Poisson(lam) per row: the inverse CDF up to ``POISSON_EXACT``, above it the normal approximation with a
        continuity correction (its error in any probability is below 1% there)."""
        lam = np.asarray(lam, np.float64)
        self._check(lam.shape)
        u = self._uniform(1)[:, 0]
        z = box_muller(*self._uniform(2).T)
        small = lam <= self.POISSON_EXACT
        k = np.where(small, 0, np.maximum(np.floor(lam + np.sqrt(lam) * z + 0.5), 0.0)).astype(np.int64)
        lam_s = np.where(small, lam, 0.0)
        p = np.exp(-lam_s)
        cdf = p.copy()
        for i in range(1, int(self.POISSON_EXACT * 3 + 30)):
            more = small & (u >= cdf)
            if not more.any():
                break
            k += more
            p = p * lam_s / i
            cdf += p
        return k

    def choice(self, n: int, size: int, p: np.ndarray) -> np.ndarray:
        """One of ``range(n)`` per row with probabilities ``p``, by the inverse CDF."""
        self._check(size)
        cum = np.cumsum(np.asarray(p, np.float64))
        return np.minimum(np.searchsorted(cum / cum[-1], self._uniform(1)[:, 0], side="right"), n - 1)
