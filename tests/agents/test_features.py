"""The feature registry: logged impressions, the base layout, as-of statistics and the leakage check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from agents.decision.configs import static_baseline
from agents.decision.features import (
    BASE_GROUPS,
    FEATURE_GROUPS,
    PRIOR_CTR,
    FeatureGroup,
    FeatureSet,
    FeatureState,
    ImpressionRecorder,
    leakage_check,
    replay_features,
)
from agents.decision.system import Simulation
from envs.validation import ConfigError

SMALL = envs.WorldConfig(num_items=2000, num_users=4000, num_topics=10, num_creators=100)


def _sim(record: bool) -> tuple[Simulation, list]:
    torch.set_num_threads(1)
    sim = Simulation(envs.World(SMALL, seed=11), static_baseline(SMALL, seed=0), concurrency=400, seed=0)
    logs = [sim.window(800)]
    if record:
        sim.recorder = ImpressionRecorder()
    logs += [sim.window(1200) for _ in range(3)]
    return sim, logs


@pytest.fixture(scope="module")
def recorded():
    sim, logs = _sim(record=True)
    return sim, logs, sim.recorder.logged()


def test_recording_changes_nothing_the_simulation_does(recorded):
    _, with_rec, log = recorded
    _, without = _sim(record=False)
    for a, b in zip(with_rec, without):
        for col in ("item", "click", "dwell", "score"):
            np.testing.assert_array_equal(a.impressions[col], b.impressions[col])
    assert len(log) == sum(len(x.impressions["item"]) for x in with_rec[1:]) and list(log.windows) == [0, 1, 2]
    np.testing.assert_array_equal(log.click, np.concatenate([x.impressions["click"] for x in with_rec[1:]]))


def test_the_base_groups_reproduce_the_features_the_ranker_trained_on(recorded):
    sim, _, log = recorded
    x, slices = replay_features(log, FeatureSet(BASE_GROUPS))
    memory_x = sim.system.pipelines[0].ranker.memory()[0]
    np.testing.assert_array_equal(x, memory_x[-len(x):])  # the last windows' rows, column for column
    assert list(slices) == list(BASE_GROUPS) and slices["position"] == slice(x.shape[1] - 1, x.shape[1])


def test_statistics_are_as_of_the_windows_before(recorded):
    _, _, log = recorded
    x, slices = replay_features(log, FeatureSet(["item_ctr", "user_ctr", "topic_match"]))
    first = log.window == 0
    # window 0 has no past: every row sees the prior click rate and no exposures, no topic history
    np.testing.assert_allclose(x[first][:, slices["item_ctr"]], np.tile([PRIOR_CTR, 0.0], (first.sum(), 1)))
    assert np.all(x[first][:, slices["topic_match"]] == 0.0)
    later = log.window == 2
    state = FeatureState()
    for w in (0, 1):
        state.update(log.pairs(log.window == w))
    shows = state.lookup(state.item_shows, log.item[later])
    np.testing.assert_allclose(x[later][:, slices["item_ctr"].start + 1], np.log1p(shows), rtol=1e-6)
    assert shows.max() > 0  # items shown before carry their counts


def test_a_feature_computed_from_its_own_outcome_is_rejected(recorded):
    _, _, log = recorded
    label = FeatureGroup("click_itself", "history", lambda p, s: p.click.astype(np.float32)[:, None])

    def item_ctr_now(p, s):  # the item's click rate including the window being described: the classic leak
        shows = np.bincount(p.item, minlength=SMALL.num_items) + 1.0
        clicks = np.bincount(p.item, weights=p.click, minlength=SMALL.num_items)
        return (clicks / shows)[p.item][:, None]

    for leaky in (label, FeatureGroup("item_ctr_now", "item_stats", item_ctr_now)):
        report = leakage_check(leaky, log)
        assert report.leaks and report.changed > 0.01
        assert f"`{leaky.name}` changes on" in report.reason and "computed from the outcome it predicts" in report.reason
    for name in FEATURE_GROUPS:  # every registered group is an as-of feature
        report = leakage_check(name, log)
        assert not report.leaks and report.changed == 0.0, report.reason


def test_feature_sets_check_their_groups():
    with pytest.raises(ConfigError, match=r"`feature group` must be one of .*\(got 'item_crt'\); did you mean 'item_ctr'\?"):
        FeatureSet(["user", "item_crt"])
    with pytest.raises(ConfigError, match=r"feature groups must be unique \(got \['user', 'user'\]\)"):
        FeatureSet(["user", "user"])
    fs = FeatureSet().with_groups(add=["dot", "user"], drop=["position"])
    assert fs.names == ("user", "item", "cross", "route", "dot")


def test_a_feature_ranker_serves_what_offline_replay_computes():
    """No train/serve skew: a ranker over every feature group remembers, for each shown impression, exactly the row
    the offline replay of the recorded log computes (statistics as of the window's start in both)."""
    from agents.decision.ranking import FeatureRanker
    from agents.decision.system import input_dims

    torch.set_num_threads(1)
    world = envs.World(SMALL, seed=11)
    system = static_baseline(SMALL, seed=0)
    fs = FeatureSet(list(FEATURE_GROUPS))
    old = system.pipelines[0].ranker
    ranker = FeatureRanker(fs, input_dims(SMALL), old.num_segments, old.num_routes, config={"min_updates": 100}, seed=0)
    assert FeatureSet().width(*input_dims(SMALL), old.num_routes, old.num_segments) == old.in_dim
    system.pipelines[0].ranker = ranker
    sim = Simulation(world, system, concurrency=400, seed=0)
    sim.recorder = ImpressionRecorder()
    logs = [sim.window(800) for _ in range(3)]
    x, _ = replay_features(sim.recorder.logged(), fs)
    np.testing.assert_allclose(ranker.memory()[0], x, rtol=1e-6, atol=1e-6)
    assert ranker.in_dim == x.shape[1] and ranker.feature_names == fs.names
    assert ranker.state.item_shows.sum() == sum(len(g.impressions["item"]) for g in logs)  # every window observed
    scores = logs[-1].impressions["score"]
    assert np.isfinite(scores).all() and ranker.updates >= 300
