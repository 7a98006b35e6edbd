"""Each shift kind changes what is measured from its day on, and nothing before it.

A small world is driven directly: every step 256 distinct users make a one-step request, see a random slate
of 10 out of 50 candidates, and leave; the day's metrics are aggregated over its 20 steps. Every shift is
scheduled for day 3. A twin world with the same seed and no shift is run next to it: before day 3 the two
must agree bit for bit ("not before"), and the shifted world's day-2 metrics must match its day-0 ones.
Observed numbers (seed 0) are in the comments; margins are about half the observed changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from envs import World, WorldConfig
from envs.validation import ConfigError

SHIFT_DAY = 3
NUM_DAYS = 6
REQUESTS_PER_STEP = 256
SMALL = {"num_items": 2000, "num_users": 4000, "num_topics": 10, "num_creators": 100, "steps_per_day": 20}
SHIFTED_MIX = {"new": 0.6, "casual": 0.3, "heavy": 0.1}
SHIFTS: dict[str, dict[str, Any]] = {
    "segment_mix": {"kind": "segment_mix", "day": SHIFT_DAY, "request_mix": SHIFTED_MIX},
    "topic_shock": {"kind": "topic_shock", "day": SHIFT_DAY, "topic": 0, "strength": 1.0},
    "catalog_refresh": {"kind": "catalog_refresh", "day": SHIFT_DAY, "fraction": 0.5},
    "cold_start_influx": {"kind": "cold_start_influx", "day": SHIFT_DAY, "fraction": 0.5, "strength": 1.0},
}
NEW, CASUAL, HEAVY = 0, 1, 2  # segment ids in the default segment order


def _run(shift: str | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-day metrics: request share per segment, share of clicks on topic 0, mean interest . centre 0,
    share of the catalog born at the day's start, mean item age, share of users in the "new" segment."""
    cfg = WorldConfig(**SMALL, shifts=[SHIFTS[shift]] if shift else [])
    world = World(cfg, seed=seed)
    rng = np.random.default_rng(seed)
    cat, pop = world.catalog, world.users
    days: list[dict[str, Any]] = []
    for _ in range(NUM_DAYS):
        requests = np.zeros(len(cfg.segments))
        clicks = clicks_topic0 = 0
        day = {
            "born_today": np.mean(cat.birth == world.now),
            "mean_age": np.mean(world.now - cat.birth),
            "new_users": np.mean(pop.segment == pop.new_segment),
            "interest_topic0": np.mean(pop.interest @ cat.topic_centers[0]),
        }
        for _ in range(cfg.steps_per_day):
            users = world.new_requests(REQUESTS_PER_STEP)
            requests += np.bincount(pop.segment[users], minlength=len(cfg.segments))
            ids, _ = world.candidates(users, 50)
            slate = np.take_along_axis(ids, np.argsort(rng.random(ids.shape), axis=1)[:, :10], axis=1)
            clicked = slate[world.respond(users, slate).click]
            clicks += len(clicked)
            clicks_topic0 += int(np.sum(cat.topic[clicked] == 0))
            world.end_sessions(users)
            world.tick()
        day["request_share"] = requests / requests.sum()
        day["click_share_topic0"] = clicks_topic0 / clicks
        days.append(day)
    assert world.events == ([(SHIFT_DAY, shift)] if shift else [])
    return {key: np.array([d[key] for d in days]) for key in days[0]}


@pytest.fixture(scope="module")
def runs() -> dict[str | None, dict[str, np.ndarray]]:
    return {shift: _run(shift) for shift in (None, *SHIFTS)}


@pytest.mark.parametrize("shift", list(SHIFTS))
def test_nothing_changes_before_the_shift_day(runs: dict, shift: str) -> None:
    shifted, twin = runs[shift], runs[None]
    for key in shifted:
        np.testing.assert_array_equal(shifted[key][:SHIFT_DAY], twin[key][:SHIFT_DAY], err_msg=key)
    assert any(not np.array_equal(shifted[key][SHIFT_DAY], twin[key][SHIFT_DAY]) for key in shifted)


def test_segment_mix(runs: dict) -> None:
    share = runs["segment_mix"]["request_share"]
    before, just_before, after = share[0], share[SHIFT_DAY - 1], share[SHIFT_DAY:]
    # observed: day 0 (0.198, 0.513, 0.289), day 2 (0.201, 0.498, 0.302), days 3-5 about (0.61, 0.29, 0.10)
    np.testing.assert_allclose(just_before, before, atol=0.03)
    np.testing.assert_allclose(before, [0.2, 0.5, 0.3], atol=0.03)  # the configured request_mix
    np.testing.assert_allclose(after, np.tile([0.6, 0.3, 0.1], (NUM_DAYS - SHIFT_DAY, 1)), atol=0.03)
    assert after[:, NEW].min() - just_before[NEW] >= 0.2  # observed gain 0.40


def test_topic_shock(runs: dict) -> None:
    run = runs["topic_shock"]
    clicks, interest = run["click_share_topic0"], run["interest_topic0"]
    # observed click share on topic 0: day 0 0.133, day 2 0.136 | days 3-5 0.479, 0.507, 0.460
    assert abs(clicks[SHIFT_DAY - 1] - clicks[0]) <= 0.04
    assert clicks[SHIFT_DAY:].min() - clicks[SHIFT_DAY - 1] >= 0.15
    # observed mean interest . centre 0: day 0 0.315, day 2 0.317 | days 3-5 0.809, 0.785, 0.764
    assert abs(interest[SHIFT_DAY - 1] - interest[0]) <= 0.02
    assert interest[SHIFT_DAY:].min() - interest[SHIFT_DAY - 1] >= 0.2


def test_catalog_refresh(runs: dict) -> None:
    run, twin = runs["catalog_refresh"], runs[None]
    born = run["born_today"]
    # observed share of the catalog born at the day's start: days 1, 2 0.0, 0.005 (expiry) | day 3 0.507
    assert abs(born[SHIFT_DAY - 1] - born[1]) <= 0.02
    assert born[SHIFT_DAY] >= 0.5  # 1000 of 2000 slots refilled at the shift, plus that day's expiries
    # half the catalog reborn: mean age about halves. observed 5.61 days vs 11.80 without the shift
    assert run["mean_age"][SHIFT_DAY] <= 0.6 * twin["mean_age"][SHIFT_DAY]


def test_cold_start_influx(runs: dict) -> None:
    run, twin = runs["cold_start_influx"], runs[None]
    share = run["request_share"][:, NEW]
    # request share of "new": 0.2 before; after, 0.2 * (1 + strength 1) renormalised = 0.4 / 1.2 = 1/3
    # observed: day 0 0.198, day 2 0.201 | days 3-5 0.349, 0.345, 0.331
    assert abs(share[SHIFT_DAY - 1] - share[0]) <= 0.03
    np.testing.assert_allclose(share[SHIFT_DAY:], 1.0 / 3.0, atol=0.03)
    # half of the (all free) users replaced by new ones: s -> s + 0.5 (1 - s), with s the share just before
    # the shift (= the twin's, 0.276 observed) -> 0.638; observed 0.637
    s = twin["new_users"][SHIFT_DAY]
    assert abs(run["new_users"][SHIFT_DAY] - (s + 0.5 * (1.0 - s))) <= 0.03


def test_topic_shock_moves_every_interest_and_topic_popularity_by_hand() -> None:
    # interest i (unit) and centre c (unit) with x = i . c: unit(i + 1 * c) . c = (x + 1) / |i + c|
    # = (1 + x) / sqrt(2 + 2x) = sqrt((1 + x) / 2). Popularity of topic-0 items rises by strength 1.
    cfg = WorldConfig(**{**SMALL, "steps_per_day": 1}, shifts=[SHIFTS["topic_shock"] | {"day": 1}])
    world = World(cfg, seed=1)
    cat, pop = world.catalog, world.users
    x = pop.interest @ cat.topic_centers[0]
    popularity_col = cfg.embedding_dim + 2
    before = cat.features[:, popularity_col].copy()
    world.tick()  # day 1: the shock
    assert world.events == [(1, "topic_shock")]
    np.testing.assert_allclose(pop.interest @ cat.topic_centers[0], np.sqrt((1.0 + x) / 2.0), atol=1e-5)
    kept = cat.birth < 1.0  # items that did not expire and get refilled at this boundary
    on_topic = kept & (cat.topic == 0)
    assert on_topic.sum() > 100
    np.testing.assert_allclose(
        cat.features[on_topic, popularity_col], np.clip(before[on_topic] + 1.0, -10, 10), atol=1e-5
    )
    np.testing.assert_array_equal(cat.features[kept & ~on_topic, popularity_col], before[kept & ~on_topic])


def test_risk_surge_raises_risk_and_keeps_every_violating_item_violating() -> None:
    # fraction 1, strength 1: every item's risk doubles (capped at 1); items that violated still do, and the
    # share of violating items rises toward the new mean risk (it is redrawn conditionally, never lowered)
    shift = {"kind": "risk_surge", "day": 1, "fraction": 1.0, "strength": 1.0}
    cfg = WorldConfig(**{**SMALL, "steps_per_day": 1}, shifts=[shift])
    world = World(cfg, seed=2)
    cat = world.catalog
    risk, violating = cat.risk.copy(), cat.violating.copy()
    born_before = cat.birth.copy()
    world.tick()  # day 1: expiry refills some slots, then the surge
    assert world.events == [(1, "risk_surge")]
    kept = cat.birth == born_before
    np.testing.assert_allclose(cat.risk[kept], np.minimum(2.0 * risk[kept], 1.0), rtol=1e-6)
    assert (cat.violating[kept] >= violating[kept]).all()
    assert abs(cat.violating[kept].mean() - cat.risk[kept].mean()) < 0.03  # observed: 0.043 vs 0.041


def test_taste_shifts_set_a_segment_parameter_and_recurring_ones_alternate_regimes() -> None:
    # A -> B -> A -> B: heavy users' fatigue sensitivity 4 from day 1, back to 1.5 from day 2, every 2 days
    shifts = [{"kind": "taste", "day": 1, "every": 2, "segment": "heavy", "param": "fatigue_sensitivity", "value": 4.0},
              {"kind": "taste", "day": 2, "every": 2, "segment": "heavy", "param": "fatigue_sensitivity", "value": 1.5},
              {"kind": "taste", "day": 3, "param": "novelty_sensitivity", "value": 2.0}]
    world = World(WorldConfig(**{**SMALL, "steps_per_day": 1}, shifts=shifts), seed=0)
    tab = world.users.table
    seen = []
    for _ in range(5):
        world.tick()
        seen.append(float(tab.fatigue_sensitivity[HEAVY]))
        assert tab.fatigue_sensitivity[CASUAL] == WorldConfig().segments["casual"].fatigue_sensitivity  # others kept
    assert seen == [4.0, 1.5, 4.0, 1.5, 4.0]
    assert [d for d, k in world.events] == [1, 2, 3, 3, 4, 5]
    np.testing.assert_array_equal(tab.novelty_sensitivity, 2.0)  # every segment
    np.testing.assert_array_equal(tab.feature_weights[:, 1], 2.0)  # the utility's freshness weight follows


def test_taste_shift_validation_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"`shifts.param` must be one of .*fatigue_sensitivity.* \(got 'patience'\)"):
        WorldConfig(**SMALL, shifts=[{"kind": "taste", "param": "patience", "value": 1.0}])
    with pytest.raises(ConfigError, match=r"`shifts.segment` must be one of \['new', 'casual', 'heavy'\]"):
        WorldConfig(**SMALL, shifts=[{"kind": "taste", "segment": "vip", "param": "fatigue_sensitivity", "value": 1.0}])
    with pytest.raises(ConfigError, match=r"`shifts.every` must be in"):
        WorldConfig(**SMALL, shifts=[{"kind": "topic_shock", "every": -1}])


def _request_shares(mix_of: str, shifts: list[dict[str, Any]], days: int = 6, seed: int = 0) -> np.ndarray:
    """Per day, the share of requests by segment under a random slate policy (sessions of 256 concurrent users)."""
    cfg = WorldConfig(**SMALL, mix_of=mix_of, shifts=shifts)
    world = World(cfg, seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    active = np.zeros(0, np.int64)
    for _ in range(days):
        counts = np.zeros(len(cfg.segments))
        for _ in range(cfg.steps_per_day):
            active = np.concatenate([active, world.new_requests(REQUESTS_PER_STEP - len(active))])
            counts += np.bincount(world.users.segment[active], minlength=len(cfg.segments))
            ids, _ = world.candidates(active, 50)
            slate = np.take_along_axis(ids, np.argsort(rng.random(ids.shape), axis=1)[:, :10], axis=1)
            exit_ = world.respond(active, slate).exit
            world.end_sessions(active[exit_])
            active = active[~exit_]
            world.tick()
        out.append(counts / counts.sum())
    return np.array(out)


def test_mix_of_requests_realises_the_request_share_and_a_segment_mix_shift_moves_it() -> None:
    """``mix_of="sessions"``: the mix is of session starts, and new users (short sessions) make far fewer of the
    requests than their 0.2; ``"requests"``: session starts are weighted by inverse session length and the realised
    request share follows the mix, before and after a segment-mix shift (day 3: new users 0.6)."""
    shift = [{"kind": "segment_mix", "day": SHIFT_DAY, "request_mix": SHIFTED_MIX}]
    by_sessions = _request_shares("sessions", shift)
    by_requests = _request_shares("requests", shift)
    assert by_sessions[1:SHIFT_DAY, NEW].mean() < 0.12  # measured ~0.06
    np.testing.assert_allclose(by_requests[1:SHIFT_DAY].mean(axis=0), [0.2, 0.5, 0.3], atol=0.05)
    np.testing.assert_allclose(by_requests[SHIFT_DAY + 1:].mean(axis=0), [0.6, 0.3, 0.1], atol=0.08)  # measured 0.61, 0.25, 0.14
    assert by_sessions[SHIFT_DAY + 1:, NEW].mean() < 0.45  # a session-start mix of 0.6 leaves new users short
    with pytest.raises(ConfigError, match=r"`mix_of` must be one of \['sessions', 'requests'\] \(got 'visits'\)"):
        WorldConfig(**SMALL, mix_of="visits")
