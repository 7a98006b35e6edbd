"""One user, one slate, worked out by hand: utilities, choice probabilities and the state updates.

The world is tiny (4 items, 2 topics, 2-D embeddings, one segment "new") and its state is overwritten
with round numbers, so every quantity below can be checked against arithmetic done in the comments.

Segment sensitivities: affinity a = 2, quality q = 1, novelty n = 1, popularity p = 1, risk appeal r = 1,
fatigue f = 1; no-click utility u0 = 3; risk_sensitivity = 1; drift_rate eta = 0.5;
fatigue_decay = 0.8, fatigue_increment = 0.5; position_decay = 1.

Items (embedding, topic, quality, freshness, popularity, risk, violating):

    item 0: ( 1.0, 0.0)  topic 0  q 1.0  fresh 1.0  pop  0  risk 0.0  violating
    item 1: ( 0.0, 1.0)  topic 1  q 0.0  fresh 0.5  pop -1  risk 0.5  violating
    item 2: (-1.0, 0.0)  topic 0  q 0.0  fresh 1.0  pop  0  risk 0.0
    item 3: ( 0.6, 0.8)  topic 1  q 0.5  fresh 0.5  pop  1  risk 0.0

(freshness = exp(-age / lifetime): born now gives 1, aged ln(2) lifetimes gives 0.5.)

User: interest (1, 0), profile (0.5, 0.5), history 7, fatigue per topic (0, 1), satisfaction 0.5.

Utilities u = a <interest, e> + q quality + n fresh + p pop + r risk - f fatigue[topic]:

    item 0: 2*1   + 1*1   + 1*1   + 1*0    + 1*0   - 1*0 = 4.0
    item 1: 2*0   + 1*0   + 1*0.5 + 1*(-1) + 1*0.5 - 1*1 = -1.0
    item 3: 2*0.6 + 1*0.5 + 1*0.5 + 1*1    + 1*0   - 1*1 = 2.2
"""

from __future__ import annotations

import numpy as np
import pytest

from envs import SegmentConfig, World, WorldConfig

NO_CLICK_UTILITY = 3.0
INTEREST = np.array([1.0, 0.0])
PROFILE = np.array([0.5, 0.5])
FATIGUE = np.array([0.0, 1.0])
SATISFACTION = 0.5
HISTORY = 7


def _tiny_world(seed: int = 0, slate_satiation: float = 0.0) -> World:
    segment = SegmentConfig(
        history_mean=1.0, interest_concentration=1.0, no_click_utility=NO_CLICK_UTILITY, affinity_scale=2.0,
        quality_sensitivity=1.0, novelty_sensitivity=1.0, popularity_sensitivity=1.0, risk_appeal=1.0,
        risk_sensitivity=1.0, fatigue_sensitivity=1.0, fatigue_increment=0.5, fatigue_decay=0.8, drift_rate=0.5,
        patience=1.5, return_bias=0.0, churn_probability=0.0, slate_satiation=slate_satiation,
    )
    cfg = WorldConfig(
        num_items=4, num_users=2, num_topics=2, embedding_dim=2, num_creators=1, steps_per_day=100,
        position_decay=1.0, new_user_segment="new", graduate_after=0, segments={"new": segment},
        request_mix={"new": 1.0},
    )
    world = World(cfg, seed=seed)
    cat = world.catalog
    assert world.now == 0.0
    cat.embedding[:] = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]]
    cat.topic[:] = [0, 1, 0, 1]
    cat.quality[:] = [1.0, 0.0, 0.0, 0.5]
    cat.lifetime[:] = 2.0
    cat.birth[:] = [0.0, -2.0 * np.log(2.0), 0.0, -2.0 * np.log(2.0)]  # freshness 1, 0.5, 1, 0.5
    cat.log_popularity[:] = [0.0, -1.0, 0.0, 1.0]
    cat.topic_boost[:] = 0.0
    cat.risk[:] = [0.0, 0.5, 0.0, 0.0]
    cat.violating[:] = [True, True, False, False]
    cat.refresh_features(world.now)
    return world


def _start_user(world: World) -> np.ndarray:
    users = world.new_requests(1)  # starts the session (which resets satisfaction and halves fatigue) ...
    pop = world.users
    pop.interest[users] = INTEREST  # ... so the hand-set state goes in afterwards
    pop.profile[users] = PROFILE
    pop.history[users] = HISTORY
    pop.fatigue[users] = FATIGUE
    pop.satisfaction[users] = SATISFACTION
    return users


# world seeds whose draws (with this code) give: a liked click on item 0, no click, an unliked click on
# item 0, an unliked and a liked click on item 3 -- so every branch below runs; any seed must pass
@pytest.mark.parametrize("seed", [0, 4, 16, 17, 28])
def test_utilities_and_choice_probabilities_by_hand(seed: int) -> None:
    world = _tiny_world(seed)
    users = _start_user(world)
    slate = np.array([[0, 3, 0, 1]])  # item 0 twice: the copy at position 2 is not shown

    utility, affinity = world.utility(users, slate)
    np.testing.assert_allclose(affinity[0], [1.0, 0.6, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(utility[0], [4.0, 2.2, 4.0, -1.0], rtol=1e-6)

    response = world.respond(users, slate)
    # Logits: no click u0 = 3; position k adds -log(1 + k) = 0, -ln 2, -ln 3, -ln 4:
    #   pos 0 (item 0): 4.0 - 0     =  4.0
    #   pos 1 (item 3): 2.2 - ln 2  =  1.506853
    #   pos 2 (item 0 again): not shown -> probability 0
    #   pos 3 (item 1): -1  - ln 4  = -2.386294
    # exp: e^3 = 20.085537, e^4 = 54.598150, e^1.506853 = e^2.2 / 2 = 4.512507, e^-2.386294 = e^-1 / 4 = 0.091970
    # Z = 79.288164 -> P = [0.253323, 0.688604, 0.056913, 0, 0.001160]
    hand = np.array([np.exp(3.0), np.exp(4.0), np.exp(2.2) / 2.0, 0.0, np.exp(-1.0) / 4.0])
    hand /= hand.sum()
    np.testing.assert_allclose(hand, [0.253323, 0.688604, 0.056913, 0.0, 0.001160], atol=1e-6)
    np.testing.assert_allclose(response.choice_prob[0], hand, rtol=1e-5)
    assert response.choice_prob[0, 3] == 0.0  # the repeated item exactly 0

    # Whichever choice was drawn, the state updates follow by hand. Violations are counted once per shown
    # item: items 0 (once, its copy is hidden) and 1 -> 2 violations, -risk_sensitivity * 2 = -2.
    # experience x = click * (0.5 + quality + like) - 0.3 * (1 - click) - 2
    # satisfaction = 0.7 * 0.5 + 0.3 * x = 0.35 + 0.3 x
    # interest = unit(0.5 * (1, 0) + 0.5 * e); profile = 0.9 * (0.5, 0.5) + 0.1 * e
    # fatigue: (0, 1) * 0.8, then + 0.5 on the clicked topic; history 7 -> 8
    expected = {
        # position: (quality, interest after, profile after, fatigue after)
        0: (1.0, [1.0, 0.0], [0.55, 0.45], [0.5, 0.8]),  # item 0: (1, 0) -> (1, 0)
        1: (0.5, [0.894427, 0.447214], [0.51, 0.53], [0.0, 1.3]),  # item 3: (0.8, 0.4) / sqrt(0.8)
        3: (0.0, [0.707107, 0.707107], [0.45, 0.55], [0.0, 1.3]),  # item 1: (0.5, 0.5) / sqrt(0.5)
    }
    pop, u = world.users, users[0]
    click = response.click[0]
    np.testing.assert_array_equal(response.violation[0], [True, False, False, True])
    assert click.sum() <= 1 and not click[2]
    if click.any():
        pos = int(np.flatnonzero(click)[0])
        quality, interest, profile, fatigue = expected[pos]
        like = float(response.like[0, pos])
        x = 0.5 + quality + like - 2.0
        assert response.dwell[0, pos] > 0.0
        np.testing.assert_allclose(pop.interest[u], interest, rtol=1e-5)
        np.testing.assert_allclose(pop.profile[u], profile, rtol=1e-5)
        np.testing.assert_allclose(pop.fatigue[u], fatigue, rtol=1e-5)
        assert pop.history[u] == HISTORY + 1
    else:
        x = -0.3 - 2.0  # -2.3: nothing learnt, interest / profile / history unchanged
        np.testing.assert_allclose(pop.interest[u], INTEREST)
        np.testing.assert_allclose(pop.profile[u], PROFILE)
        # fatigue decays every step (fatigue_decay is per-step), clicked or not: (0, 1) * 0.8
        np.testing.assert_allclose(pop.fatigue[u], np.asarray(FATIGUE) * 0.8, rtol=1e-6)
        assert pop.history[u] == HISTORY
    np.testing.assert_array_equal(response.dwell[0][~click], 0.0)
    assert not response.like[0][~click].any()
    np.testing.assert_allclose(response.experience[0], x, rtol=1e-6)
    np.testing.assert_allclose(response.satisfaction[0], 0.35 + 0.3 * x, rtol=1e-6)
    np.testing.assert_allclose(pop.satisfaction[u], 0.35 + 0.3 * x, rtol=1e-6)
    assert pop.session_steps[u] == 1 and pop.session_clicks[u] == int(click.any())


def test_slate_satiation_by_hand() -> None:
    """Variety seeking within a slate: each item loses v = 0.5 per item of its topic shown above it; a hidden copy
    of an item is not seen, and with v = 0 (the default) utilities are those of the test above."""
    world = _tiny_world(slate_satiation=0.5)
    users = _start_user(world)
    # topics: items 0, 2 -> 0; items 1, 3 -> 1. Item 2: 2*(-1) + 0 + 1*1 + 0 + 0 - 0 = -1.0 before satiation.
    utility, _ = world.utility(users, np.array([[0, 3, 2, 1]]))
    # item 0: none above; item 3: none of topic 1 above; item 2: item 0 above (-0.5); item 1: item 3 above (-0.5)
    np.testing.assert_allclose(utility[0], [4.0, 2.2, -1.5, -1.5], rtol=1e-6)
    utility, _ = world.utility(users, np.array([[0, 3, 0, 1]]))  # the copy of item 0 at position 2 is hidden
    np.testing.assert_allclose(utility[0], [4.0, 2.2, 3.5, -1.5], rtol=1e-6)
    utility, _ = world.utility(users, np.array([[0, 0, 2, 3, 1]]))  # item 2 sees item 0 once, item 1 sees item 3
    np.testing.assert_allclose(utility[0], [4.0, 3.5, -1.5, 2.2, -1.5], rtol=1e-6)
    plain = _tiny_world(slate_satiation=0.0)
    np.testing.assert_allclose(plain.utility(_start_user(plain), np.array([[0, 3, 2, 1]]))[0][0], [4.0, 2.2, -1.0, -1.0],
                               rtol=1e-6)


def test_certain_click_updates_by_hand() -> None:
    world = _tiny_world()
    users = _start_user(world)
    # No-click utility -1000 and a slate of one item repeated: exp(-1000 - 4) underflows to 0, the copies
    # are not shown, so P = [0, 1, 0, 0, 0] exactly and the user clicks item 0 at position 0.
    world.users.table.no_click_utility[:] = -1000.0
    response = world.respond(users, np.array([[0, 0, 0, 0]]))
    np.testing.assert_array_equal(response.choice_prob[0], [0.0, 1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(response.click[0], [True, False, False, False])
    np.testing.assert_array_equal(response.violation[0], [True, False, False, False])  # shown once

    pop, u = world.users, users[0]
    # interest: unit(0.5 (1, 0) + 0.5 (1, 0)) = (1, 0); profile: 0.9 (0.5, 0.5) + 0.1 (1, 0) = (0.55, 0.45)
    np.testing.assert_allclose(pop.interest[u], [1.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(pop.profile[u], [0.55, 0.45], rtol=1e-6)
    assert pop.history[u] == HISTORY + 1
    # fatigue: topic 0 -> 0 * 0.8 + 0.5 = 0.5; topic 1 decays 1 * 0.8 = 0.8
    np.testing.assert_allclose(pop.fatigue[u], [0.5, 0.8], rtol=1e-6)
    # x = 0.5 + quality 1 + like - 1 violation = 0.5 + like; satisfaction = 0.35 + 0.3 x
    like = float(response.like[0, 0])
    np.testing.assert_allclose(response.experience[0], 0.5 + like, rtol=1e-6)
    np.testing.assert_allclose(pop.satisfaction[u], 0.35 + 0.3 * (0.5 + like), rtol=1e-6)
    # dwell = exp(3.4 + 0.8 * affinity 1 + quality 1 + 0.4 z) seconds, z standard normal: |z| < 6 here
    log_dwell = np.log(response.dwell[0, 0])
    assert abs(log_dwell - (3.4 + 0.8 + 1.0)) < 0.4 * 6

    # the clicked topic now costs f * 0.5 more utility: item 0 from 4.0 to 3.5; item 3 (topic 1) from 2.2 to 2.4
    utility, _ = world.utility(users, np.array([[0, 3]]))
    np.testing.assert_allclose(utility[0], [3.5, 2.4], rtol=1e-6)


@pytest.mark.parametrize(
    ("slate", "shown"),
    [
        ([0, 1, 2, 3], [True, True, True, True]),
        ([2, 2, 1, 2], [True, False, True, False]),
        ([3, 1, 3, 1], [True, True, False, False]),
    ],
)
def test_repeated_items_get_zero_probability(slate: list[int], shown: list[bool]) -> None:
    world = _tiny_world()
    users = _start_user(world)
    probs = world.respond(users, np.array([slate])).choice_prob[0]
    np.testing.assert_array_equal(probs[1:] > 0.0, shown)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)
