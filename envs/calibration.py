"""A world grounded in a ratings data set: the item and user arrays that MovieLens-100K fixes (``WorldConfig.data``).

With ``data: ml100k`` the world's catalog is the data set's 1,682 movies and its population the 943 users, the
arrays the data can inform taken from it (:func:`ground`):

* **embeddings** (the world's true interests): a spectral factorisation of who rated what. The binary user x item
  matrix ``X``, degree-normalised (``D_u^-1/2 X D_i^-1/2``), has its leading singular pair along the degrees (how
  active, how popular: the popularity model's business, not taste); the next ``embedding_dim`` pairs, scaled by the
  square root of their singular values and normalised to unit rows, are the items' embeddings and the users'
  interests. Users rate movies near their interest: the mean cosine of a rated pair is far above a random pair's
  (tested);
* **topics**: the 18 genres. A genre's centre is the normalised mean embedding of its movies; a movie's topic (for
  fatigue and topic shocks) is the one of its genres whose centre is nearest its embedding;
* **popularity**: the movies' rank by number of ratings feeds the world's Zipf prior (``items.zipf_exponent``, the
  strength, is fitted by ``experiments.calibrate`` to the data's concentration of consumption);
* **quality**: the mean rating shrunk toward the global mean by :data:`QUALITY_PRIOR` pseudo-ratings, mapped from
  1-5 stars to [0, 1];
* **age**: from the release year, counted back from the data's end (April 1998), so freshness is ``exp(-age /
  lifetime)`` (``conf/world/ml100k.yaml`` sets lifetimes of years that never expire within a run);
* **users**: the initial users are the data's users, in its order: each user's interest, its number of ratings as
  its observable history, and its segment by activity (equal-count quantile groups in the order the segments are
  listed: with the default names, the lightest third ``new``, then ``casual``, the heaviest third ``heavy``).

What the data cannot inform (risk, cost, creators, choice noise, fatigue, the continuation and return models) keeps
the world's generative model and its configured values. Users who churn are replaced by generated cold-start users,
and items never expire under the preset; ``experiments.calibrate`` fits the preset's scalar parameters and reports
side by side where the simulation still differs from the data.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from envs.linalg import unit_rows
from envs.movielens import GENRES, load_ml100k
from envs.validation import check_choice, check_int

__all__ = ["DATA_SIZES", "DATA_SOURCES", "QUALITY_PRIOR", "Grounding", "activity_segments", "ground", "grounding"]

DATA_SOURCES = ("", "ml100k")  # "": a generated world
# the world sizes a data source fixes (checked by WorldConfig without reading the data)
DATA_SIZES: dict[str, dict[str, int]] = {"ml100k": {"num_items": 1682, "num_users": 943, "num_topics": 18}}
QUALITY_PRIOR = 10.0  # pseudo-ratings at the global mean that shrink a movie's mean rating
DATA_END_YEAR = 1998.3  # the last MovieLens-100K rating is from April 1998


@dataclass(frozen=True)
class Grounding:
    """What a data set fixes about the world, as arrays over its items (I) and users (U)."""

    topics: tuple[str, ...]
    topic_centers: np.ndarray  # (T, D) float32 unit rows
    item_topic: np.ndarray  # (I,) int32
    item_embedding: np.ndarray  # (I, D) float32 unit rows
    item_quality: np.ndarray  # (I,) float32 in [0, 1]
    item_rank: np.ndarray  # (I,) int64 popularity rank, 1 = most rated
    item_age_days: np.ndarray  # (I,) float64 age at the data's end
    user_interest: np.ndarray  # (U, D) float32 unit rows
    user_activity: np.ndarray  # (U,) int64 ratings per user

    @property
    def num_items(self) -> int:
        return len(self.item_topic)

    @property
    def num_users(self) -> int:
        return len(self.user_activity)

    @property
    def num_topics(self) -> int:
        return len(self.topics)


def ground(user: np.ndarray, item: np.ndarray, rating: np.ndarray, genres: np.ndarray, topics: tuple[str, ...],
           year: np.ndarray, num_users: int, embedding_dim: int) -> Grounding:
    """The grounding arrays from ratings (one row per rating: 0-based ``user``, ``item``, 1-5 ``rating``), each item's
    ``genres`` (I, T) bool and release ``year`` (0: unknown)."""
    num_items = genres.shape[0]
    check_int("embedding_dim", embedding_dim, 1, min(num_users, num_items) - 2)
    x = np.zeros((num_users, num_items), np.float64)
    x[user, item] = 1.0
    du, di = x.sum(axis=1), x.sum(axis=0)
    xn = x / np.sqrt(np.maximum(du, 1.0))[:, None] / np.sqrt(np.maximum(di, 1.0))[None, :]
    u, s, vt = np.linalg.svd(xn, full_matrices=False)
    k = slice(1, embedding_dim + 1)  # the leading pair is the degree direction
    # a singular vector's sign is arbitrary (LAPACK's choice): fix it so the largest-magnitude item loading is positive
    sign = np.sign(vt[k][np.arange(embedding_dim), np.abs(vt[k]).argmax(axis=1)])
    root = np.sqrt(s[k]) * sign
    item_emb = unit_rows(vt[k].T * root)
    user_int = unit_rows(u[:, k] * root)
    g = genres[:, : len(topics)].astype(np.float64)
    centers = unit_rows(g.T @ item_emb)
    sim = item_emb @ centers.T
    item_topic = np.where(g.any(axis=1), np.where(g > 0, sim, -np.inf).argmax(axis=1), sim.argmax(axis=1))
    counts = np.bincount(item, minlength=num_items).astype(np.float64)
    sums = np.bincount(item, weights=rating, minlength=num_items)
    mean = float(rating.mean())
    quality = ((sums + QUALITY_PRIOR * mean) / (counts + QUALITY_PRIOR) - 1.0) / 4.0
    rank = np.empty(num_items, np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(1, num_items + 1)
    known = year > 0
    fill = float(np.median(year[known])) if known.any() else DATA_END_YEAR
    age = (DATA_END_YEAR - np.where(known, year, fill)) * 365.25
    return Grounding(tuple(topics), centers, item_topic.astype(np.int32), item_emb, quality.astype(np.float32), rank,
                     np.maximum(age, 0.0), user_int, np.bincount(user, minlength=num_users).astype(np.int64))


@functools.lru_cache(maxsize=4)
def grounding(source: str, embedding_dim: int) -> Grounding:
    """The grounding of a named data source (:data:`DATA_SOURCES`), computed once per process and dimension (~1 s)."""
    check_choice("data", source, [s for s in DATA_SOURCES if s])
    ml = load_ml100k()
    topics = tuple(g for g in GENRES if g != "unknown")
    return ground(ml.user, ml.item, ml.rating, ml.genres, topics, ml.year.astype(np.float64), ml.num_users,
                  embedding_dim)


def activity_segments(activity: np.ndarray, num_segments: int) -> np.ndarray:
    """(U,) segment index per user: equal-count quantile groups of ``activity``, lightest first (ties by user order)."""
    order = np.argsort(activity, kind="stable")
    seg = np.empty(len(activity), np.int16)
    seg[order] = (np.arange(len(activity)) * num_segments // max(len(activity), 1)).astype(np.int16)
    return seg
