"""Offline evaluation on logged data: time split, the architectures on a cross-feature world, importance, the ledger."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents.decision.features import FeatureSet
from agents.decision.models import MODEL_ARCHITECTURES, ModelDesign
from agents.evolution.offline import (
    LoggedData,
    OfflineOnlineLedger,
    TrainRecipe,
    compare,
    feature_drift,
    fit,
    offline_metrics,
    permutation_importance,
    time_split,
)
from envs.validation import ConfigError


def synthetic(n: int = 25_000, seed: int = 0, cross: bool = True) -> LoggedData:
    """Logged impressions of a world built for the test: 5 windows of slates of 10, six standard-normal features.
    ``cross``: the click logit is -2 + 2.5 x_a x_b, a pure interaction no weighted sum of the features represents
    (a linear ranker's best AUC is 0.5); else -2 + 1.5 x_a (a planted main effect). ``noise``: 4 unused columns."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    logit = -2.0 + (2.5 * x[:, 0] * x[:, 1] if cross else 1.5 * x[:, 0])
    click = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    y = np.stack([click, click & (rng.random(n) < 0.3), np.where(click, 1.0, 0.0)], axis=1).astype(np.float32)
    return LoggedData(x, y, np.zeros(n, np.int64), np.repeat(np.arange(5), n // 5), np.arange(n) // 10,
                      np.tile(np.arange(10), n // 10), {"a": slice(0, 1), "b": slice(1, 2), "noise": slice(2, 6)},
                      FeatureSet())


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_time_split_holds_out_the_last_windows_and_refuses_to_leave_nothing_to_train_on():
    data = synthetic(n=5000)
    train, valid = time_split(data, valid_windows=2)
    assert set(train.window.tolist()) == {0, 1, 2} and set(valid.window.tolist()) == {3, 4}
    assert len(train) + len(valid) == len(data)
    with pytest.raises(ConfigError, match=r"`valid_windows` must be below the number of logged windows 5 .*\(got 5\)"):
        time_split(data, valid_windows=5)


def test_every_architecture_beats_the_linear_ranker_on_a_cross_feature_world():
    """The click depends on x_a * x_b only: linear stays at chance (AUC ~0.50 measured, both seeds), every other
    architecture learns the cross (0.856-0.864 measured); the bounds leave > 0.1 of room on each side."""
    train, valid = time_split(synthetic())
    recipe = TrainRecipe(updates=300, lr=1e-2)
    for seed in (0, 1):
        linear = offline_metrics(fit(ModelDesign(arch="linear"), train, recipe, seed), valid)["auc"]
        assert abs(linear - 0.5) < 0.05
        for arch in MODEL_ARCHITECTURES[1:]:
            got = offline_metrics(fit(ModelDesign(arch=arch), train, recipe, seed), valid)["auc"]
            assert got > linear + 0.2, (arch, seed, got, linear)


def test_compare_trains_both_with_the_same_budget_on_the_same_rows():
    train, valid = time_split(synthetic(n=10_000))
    res = compare(ModelDesign(arch="linear"), ModelDesign(arch="fm"), train, valid, TrainRecipe(updates=100, lr=1e-2))
    assert res.train_rows == len(train) and res.valid_rows == len(valid)
    assert res.auc_gain == pytest.approx(res.candidate["auc"] - res.incumbent["auc"]) and res.auc_gain > 0.2
    a = fit(ModelDesign(arch="linear"), train, TrainRecipe(updates=100))
    b = fit(ModelDesign(arch="mmoe"), train, TrainRecipe(updates=100))
    assert a.updates == b.updates >= 100  # the budget is gradient steps, whatever the architecture


def test_permutation_importance_ranks_a_planted_feature_above_noise():
    train, valid = time_split(synthetic(cross=False))
    ranker = fit(ModelDesign(arch="mlp"), train, TrainRecipe(updates=300, lr=1e-2))
    imp = permutation_importance(ranker, valid, repeats=3)
    # shuffling x_a costs the AUC it earned (~0.3); the unused columns cost ~0 (|.| < 0.02 measured 0.00x)
    assert imp["a"] > 0.2 and abs(imp["noise"]) < 0.03 and imp["a"] > imp["b"] + 0.15


def test_offline_metrics_ndcg_reorders_logged_slates_by_the_model():
    """Two requests of 3 items; the model's scores put request 0's clicked item first (NDCG 1) and request 1's
    clicked item last: DCG 1/log2(4) = 0.5; NDCG@2 drops it (0)."""

    class Fixed:
        def predict(self, x, segment):
            return {"click": x[:, 0]}

    x = np.array([[0.9], [0.1], [0.2], [0.8], [0.5], [0.1]], np.float32)
    click = np.array([1, 0, 0, 0, 0, 1], np.float32)
    data = LoggedData(x, np.stack([click, click * 0, click * 0], 1), np.zeros(6, np.int64), np.zeros(6, np.int64),
                      np.repeat([0, 1], 3), np.tile(np.arange(3), 2), {"s": slice(0, 1)}, FeatureSet())
    m = offline_metrics(Fixed(), data, k=3)
    assert m["ndcg@3"] == pytest.approx((1.0 + 0.5) / 2)
    assert offline_metrics(Fixed(), data, k=2)["ndcg@2"] == pytest.approx(0.5)
    assert m["calibration"] == pytest.approx(x.sum() / 2)


def test_feature_drift_flags_a_shifted_group_only():
    data = synthetic(n=10_000)
    data.x[data.window == 4, 0] += 2.0  # window 4: x_a shifted by two standard deviations
    drift = feature_drift(data, 0, 4)
    assert drift["a"] > 1.0 and drift["b"] < 0.05 and drift["noise"] < 0.05
    with pytest.raises(ConfigError, match=r"`before` and `after` must be logged windows \[0, 1, 2, 3, 4\] \(got 0, 9\)"):
        feature_drift(data, 0, 9)


def test_the_ledger_says_when_offline_gains_misled():
    ledger = OfflineOnlineLedger()
    for name, off, on in [("dcn", 0.03, 0.01), ("fm", 0.02, -0.01), ("mmoe", 0.01, 0.005), ("mlp", -0.01, -0.02)]:
        ledger.add(name, off, on)
    s = ledger.summary()
    # offline ranks dcn > fm > mmoe > mlp, online dcn > mmoe > fm > mlp: Spearman 1 - 6 * 2 / (4 * 15) = 0.8
    assert s["n"] == 4 and s["rank_corr"] == pytest.approx(0.8) and s["misled"] == 1
    assert s["sign_agreement"] == pytest.approx(0.75)
    assert math.isnan(OfflineOnlineLedger().summary()["rank_corr"])


def test_recipes_and_designs_are_validated_before_training():
    with pytest.raises(ConfigError, match=r"`recipe.updates` must be one of \[100, 300, 1000\] \(got 7\)"):
        TrainRecipe(updates=7)
    with pytest.raises(ConfigError, match=r"`model.arch` must be one of .*\(got 'dnc'\); did you mean 'dcn'\?"):
        ModelDesign(arch="dnc")
    with pytest.raises(ConfigError, match=r"`model.cross_layers` must be in \[1, 6\] \(got 9\)"):
        ModelDesign(arch="dcn", cross_layers=9)
