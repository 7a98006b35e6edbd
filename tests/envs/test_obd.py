"""The Open Bandit Dataset sample read in place from the obp wheel's zip: offline, the published shape of the sample,
and a missing wheel that says how to download it."""

from __future__ import annotations

import socket
import zipfile

import numpy as np
import pytest

from envs.obd import DOWNLOAD, DataUnavailable, load_obd, wheel_path
from envs.validation import ConfigError


def _wheel_or_skip() -> None:
    try:
        wheel_path()
    except DataUnavailable as exc:
        pytest.skip(f"the obp wheel is not downloaded ({exc}); `make install` downloads it")


@pytest.mark.parametrize("policy", ["random", "bts"])
def test_the_sample_loads_offline_with_its_columns(policy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _wheel_or_skip()

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    obd = load_obd(policy, "all")
    log = obd.log
    # the sample's published shape: 10,000 impressions per policy and campaign, 80 items, 3 positions
    assert len(log) == 10_000 and obd.num_items == 80 and obd.num_positions == 3
    assert {"timestamp", "item_id", "position", "click", "propensity_score"} <= set(log.columns)
    assert sorted(log["position"].unique()) == [0, 1, 2]  # 0-based (the file's 1-3)
    assert set(log["click"].unique()) <= {0, 1} and 0 < log["click"].mean() < 0.02
    assert log["item_id"].between(0, 79).all() and list(obd.item_context.columns[:2]) == ["item_id", "item_feature_0"]
    p = log["propensity_score"].to_numpy()
    if policy == "random":  # uniform over 80 items at each position
        np.testing.assert_allclose(p, 1 / 80)
    else:  # Thompson sampling's probabilities: in (0, 1], not uniform
        assert (p > 0).all() and (p <= 1).all() and p.std() > 0.01
    freq = obd.action_frequencies()
    assert freq.shape == (3, 80) and np.allclose(freq.sum(axis=1), 1.0)


def test_the_zip_is_read_in_place(tmp_path) -> None:
    """A wheel elsewhere (``folder``) is read there; nothing is extracted next to it."""
    _wheel_or_skip()
    with zipfile.ZipFile(wheel_path()) as src, zipfile.ZipFile(tmp_path / wheel_path().name, "w") as dst:
        for name in ("obp/dataset/obd/random/men/men.csv", "obp/dataset/obd/random/men/item_context.csv"):
            dst.writestr(name, src.read(name))
    obd = load_obd("random", "men", folder=tmp_path)
    assert len(obd.log) == 10_000 and obd.campaign == "men"
    assert sorted(p.name for p in tmp_path.iterdir()) == [wheel_path().name]
    with pytest.raises(DataUnavailable, match=r"has no obp/dataset/obd/bts/men/men.csv"):
        load_obd("bts", "men", folder=tmp_path)


def test_a_missing_wheel_says_how_to_download_it(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIC_RS_WHEELS", str(tmp_path))
    with pytest.raises(DataUnavailable, match=r"pip download obp==0\.4\.1 --no-deps --only-binary=:all:"):
        load_obd()
    assert "pip download obp==0.4.1" in DOWNLOAD
    with pytest.raises(ConfigError, match=r"`campaign` must be one of \['all', 'men', 'women'\] \(got 'kids'\)"):
        load_obd("random", "kids")
