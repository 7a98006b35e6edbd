"""The grounded world (envs.calibration): MovieLens-100K's items and users inside the simulator, and what grounding
recovers from ratings it generated itself."""

from __future__ import annotations

import numpy as np
import pytest

from envs.calibration import activity_segments, ground, grounding
from envs.config import WorldConfig
from envs.validation import ConfigError
from envs.world import World
from experiments.calibrate import world_config
from rewards.stats import spearman


@pytest.fixture(scope="module")
def ml_world() -> World:
    return World(world_config(), seed=0)


def test_the_grounded_world_holds_the_data_sets_movies_and_users(ml_world):
    from envs.movielens import load_ml100k

    ml, g, cat, pop = load_ml100k(), grounding("ml100k", 16), ml_world.catalog, ml_world.users
    assert (cat.num_items, pop.num_users, len(cat.topic_centers)) == (1682, 943, 18)
    np.testing.assert_array_equal(cat.embedding, g.item_embedding)
    np.testing.assert_allclose(np.linalg.norm(cat.embedding, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(pop.interest, g.user_interest)
    np.testing.assert_array_equal(pop.history, ml.user_counts())
    # the most rated movie has the highest popularity prior; quality follows the mean rating
    assert cat.log_popularity.argmax() == ml.item_counts().argmax()
    means = np.bincount(ml.item, weights=ml.rating, minlength=1682) / np.maximum(ml.item_counts(), 1)
    many = ml.item_counts() >= 100  # shrinkage barely moves these
    assert np.corrcoef(means[many], cat.quality[many])[0, 1] > 0.99
    # every topic is one of the movie's genres (when it has any besides "unknown")
    has = ml.genres[:, :18].any(axis=1)
    assert ml.genres[np.flatnonzero(has), cat.topic[has]].all()
    # segments by activity: the heaviest third rated far more than the lightest
    act = ml.user_counts()
    names = ml_world.cfg.segment_names
    assert act[pop.segment == names.index("heavy")].min() >= act[pop.segment == names.index("new")].max()


def test_users_rated_movies_near_their_interest(ml_world):
    """The embeddings carry taste: a rated pair's cosine is far above a random pair's (by > 20 standard errors)."""
    from envs.movielens import load_ml100k

    ml, g = load_ml100k(), grounding("ml100k", 16)
    rated = np.einsum("nd,nd->n", g.user_interest[ml.user], g.item_embedding[ml.item])
    rng = np.random.default_rng(0)
    rand = np.einsum("nd,nd->n", g.user_interest[rng.integers(0, 943, len(rated))],
                     g.item_embedding[rng.integers(0, 1682, len(rated))])
    se = np.sqrt(rated.var() / len(rated) + rand.var() / len(rand))
    assert rated.mean() - rand.mean() > 20 * se


def test_grounded_worlds_are_deterministic_and_differ_by_seed():
    a, b, c = (World(world_config(), seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.users.profile, b.users.profile)
    np.testing.assert_array_equal(a.catalog.risk, b.catalog.risk)
    assert not np.array_equal(a.users.profile, c.users.profile)
    np.testing.assert_array_equal(a.catalog.embedding, c.catalog.embedding)  # the data's, whatever the seed


def test_ground_recovers_planted_taste_and_popularity():
    """Ratings drawn from planted item vectors and popularity: the grounding's embeddings reproduce the planted item
    similarities (correlation of the pairwise cosines > 0.8), and its popularity ranks follow the planted order."""
    rng = np.random.default_rng(5)
    users, items, d = 400, 300, 4
    true_item = rng.standard_normal((items, d))
    true_user = rng.standard_normal((users, d))
    pop = np.linspace(2.0, 0.0, items)  # item 0 the most popular
    logit = true_user @ true_item.T + pop[None, :]
    p = np.exp(logit - logit.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    rows = [rng.choice(items, size=40, replace=False, p=p[u]) for u in range(users)]
    user = np.repeat(np.arange(users), 40)
    item = np.concatenate(rows)
    genres = np.zeros((items, 2), bool)
    genres[:, 0] = true_item[:, 0] > 0
    genres[:, 1] = ~genres[:, 0]
    g = ground(user, item, np.full(len(user), 4.0), genres, ("a", "b"), np.zeros(items), users, d)
    planted = (true_item / np.linalg.norm(true_item, axis=1, keepdims=True))
    iu = np.triu_indices(items, 1)
    assert np.corrcoef((planted @ planted.T)[iu], (g.item_embedding @ g.item_embedding.T)[iu])[0, 1] > 0.8
    counts = np.bincount(item, minlength=items)
    assert (np.diff(counts[np.argsort(g.item_rank)]) <= 0).all()  # rank 1 the most rated, and so on
    # taste spreads the counts, but the ranks follow the planted popularity (Spearman; 0.69 with this seed)
    assert spearman(pop, -g.item_rank) > 0.5


def test_activity_segments_are_equal_count_quantile_groups():
    seg = activity_segments(np.array([5, 1, 9, 3, 7, 2]), 3)
    assert seg.tolist() == [1, 0, 2, 1, 2, 0]


def test_a_grounded_world_must_have_the_data_sets_sizes():
    with pytest.raises(ConfigError, match=r"`num_items` must be 1682 for a world grounded in data='ml100k'.*got 600"):
        WorldConfig(num_items=600, num_users=943, num_topics=18, data="ml100k")
    with pytest.raises(ConfigError, match=r"`data` must be one of \['', 'ml100k'\].*did you mean 'ml100k'"):
        WorldConfig(data="ml100")
