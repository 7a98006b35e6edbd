"""AutoFeature: analysis (importance, drift, coverage, leakage), proposals, offline screening, online twins, records."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agents.decision.features import BASE_GROUPS, FeatureGroup, FeatureSet
from agents.evolution.autofeature import AutoFeature
from agents.evolution.offline import TrainRecipe
from agents.infra.store import KnowledgeStore
from envs.validation import ConfigError


@pytest.fixture(scope="module")
def setup(logged_small):
    """A deployment after 2 warm-up windows and the 4 windows it then served (recorded), plus three extra groups:
    ``affinity`` (the user's true, hidden interest . the item's embedding: informative and no leak), ``noise``
    (random columns) and ``leak`` (the row's own click, smoothed: computed from the outcome it predicts)."""
    svc, log = logged_small
    world = svc._sim.world
    interest, embedding = world.users.interest.copy(), world.catalog.embedding.copy()

    def affinity(p, s):
        return (interest[p.user] * embedding[np.maximum(p.item, 0)]).sum(axis=1, keepdims=True)

    def noise(p, s):
        return np.random.default_rng(len(p)).standard_normal((len(p), 2))

    def leak(p, s):
        return (0.8 * p.click + 0.1)[:, None]

    extra = [FeatureGroup("affinity", "cross", affinity), FeatureGroup("noise", "cross", noise),
             FeatureGroup("leak", "history", leak)]
    return svc, log, extra


def test_analyse_and_propose_find_the_signal_skip_the_leak_and_drop_what_the_model_ignores(setup):
    svc, log, (affinity, noise, leak) = setup
    af = AutoFeature(FeatureSet([*BASE_GROUPS, noise]), recipe=TrainRecipe(updates=300),
                     pool=["dot", "item_ctr", affinity, leak])
    report = af.analyse(log)
    assert set(report.importance) == {*BASE_GROUPS, "noise"} and set(report.coverage) == {"dot", "item_ctr", "affinity", "leak"}
    assert report.leaking == ["leak"] and "computed from the outcome it predicts" in report.leaks["leak"].reason
    assert abs(report.importance["noise"]) < 0.005 < report.importance["position"]  # shuffled noise costs ~nothing
    assert report.coverage["affinity"] > 0.99 and all(math.isfinite(v) for v in report.drift.values())
    edits = af.propose(report)
    labels = [e.label for e in edits]
    assert "add leak" not in labels and af.rejected["leak"] == report.leaks["leak"].reason
    assert labels[:3] == ["add dot", "add item_ctr", "add affinity"] and "drop noise" in labels
    results = af.screen(edits, log, report.incumbent)
    by = {r.edit.label: r for r in results}
    # the planted true affinity is the best edit (+0.013 AUC measured; +0.009 with seed 1, where the next best, add
    # dot, is +0.0035): the held-out AUC is dominated by position, which every set has; dropping noise costs ~0
    assert af.winners()[0].edit.label == "add affinity" and by["add affinity"].auc_gain > 0.006
    assert abs(by["drop noise"].auc_gain) < 0.005


def test_online_gain_on_twins_and_records(setup, tmp_path):
    svc, log, (affinity, _, leak) = setup
    with KnowledgeStore(tmp_path / "s.db") as store:
        exp = store.start_experiment("autofeature-test", {}, seed=0)
        af = AutoFeature(recipe=TrainRecipe(updates=100), pool=[affinity, leak], store=store, exp_id=exp)
        report = af.analyse(log)
        edits = [e for e in af.propose(report) if e.kind == "add"]
        assert [e.label for e in edits] == ["add affinity"]
        [add] = af.screen(edits, log, report.incumbent)
        before = svc.now
        gain = af.online(svc, add, log, windows=1)
        assert svc.now == before and math.isfinite(gain) and af.ledger.rows[0]["name"] == "add affinity"
        af.record()
        rows = store.designs(agent="autofeature")
        assert [r.valid for r in rows] == [True, False] and rows[0].document["edit"] == "add affinity"
        assert rows[1].error == report.leaks["leak"].reason and rows[0].reward == pytest.approx(gain)
    with pytest.raises(ConfigError, match="give both `store` and `exp_id`"):
        AutoFeature(store=store)
