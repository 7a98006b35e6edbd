"""The alternation schedule's shift sentinel: quiet while a system learns and on a world without shifts,
firing on a real shift.

A sentinel sequence is what ``alternate`` feeds :meth:`ShiftTest.detect`: production's outer reward (clicks
per request) of a system that learns from the traffic it serves. In the statistical tests every window is a
sentinel (``check_every=1``): 200-request windows of the tiny world, where an untrained ranker's clicks per
request climb from ~0.2 to ~0.5 over the first ~6 windows (measured, seeds 0-4), then scatter by ~10%.
"""

from __future__ import annotations

import pytest
import torch

from agents.evolution.composition import CompositionEnv
from agents.evolution.schedule import ShiftTest
from envs.validation import ConfigError

TINY = {"num_items": 600, "num_users": 1200, "num_topics": 5, "num_creators": 30, "steps_per_day": 10}
WINDOWS = 12  # 200-request windows at 100 sessions: 0.2 simulated days each, day 2 starts in window 8
SHIFT = {"kind": "topic_shock", "day": 2, "topic": 0, "strength": 3.0}  # after the learning settled; seed 0: 0.45 -> 0.92
# one 200-request window scatters by ~10%: a band of 30% around the mean of two (seeds 0-11: 0 alarms at 30%, 3 at 20%)
SENTINEL = ShiftTest(check_every=1, tolerance=0.3, settle=6)
# seed 0's production windows on the world without shifts (measured): learning, then a plateau
LEARNING = [0.205, 0.21, 0.415, 0.45, 0.4, 0.425, 0.57, 0.51, 0.445, 0.515, 0.53, 0.48, 0.555, 0.55]


def first_detection(test: ShiftTest, rewards: list[float]) -> int | None:
    """The first window at which ``alternate``'s wiring of ``test`` declares a shift (sentinels every
    ``check_every`` windows, counted once settled), or None."""
    sentinels: list[float] = []
    for step, value in enumerate(rewards):
        if (step + 1) % test.check_every:
            continue
        if test.settled(step + 1):
            sentinels.append(value)
        if test.detect(sentinels):
            return step
    return None


def old_first_detection(test: ShiftTest, rewards: list[float]) -> int | None:
    """The former rule: each sentinel against the previous one, from the untrained first window on."""
    reference = rewards[0]
    for step in range(test.check_every - 1, len(rewards), test.check_every):
        if test(reference, rewards[step]):
            return step
        reference = rewards[step]
    return None


def test_the_learning_jump_is_no_shift_and_a_jump_after_it_is():
    test = ShiftTest(check_every=5, tolerance=0.2)  # the defaults: settle=8 windows
    assert old_first_detection(test, LEARNING) == 4  # the issue: untrained 0.205 vs 0.40 at window 4
    assert first_detection(test, LEARNING) is None  # sentinels at windows 9 and 14 form the first reference
    plateau = LEARNING + [0.52, 0.53, 0.54, 0.55, 0.50]  # windows 14..18
    assert first_detection(test, plateau + [0.52]) is None  # window 19 within 20% of mean(0.515, 0.55)
    assert first_detection(test, plateau + [0.30]) == 19  # -44%
    assert first_detection(test, plateau + [0.70]) == 19  # +31%


def test_reference_needs_settled_agreeing_sentinels():
    test = ShiftTest(check_every=1, tolerance=0.2, settle=0)
    assert test.reference([0.5]) is None  # one sentinel is no reference
    assert test.reference([0.45, 0.5]) == pytest.approx(0.475)  # spread 0.05 <= 20% of 0.475
    assert test.reference([0.4, 0.5]) is None  # spread 0.1 > 20% of 0.45
    assert test.reference([0.2, 0.4]) is None  # still moving (learning): no test
    assert not test.detect([0.2, 0.4, 0.9])
    assert test.settled(0) and not ShiftTest(settle=8).settled(7) and ShiftTest(settle=8).settled(8)
    with pytest.raises(ConfigError, match=r"`shift.settle` must be in \[0, inf\) \(got -1\)"):
        ShiftTest(settle=-1)


def production_rewards(shifts: list[dict], seed: int) -> list[float]:
    """Production's outer reward, window by window, of the tiny world's learning system."""
    torch.set_num_threads(1)
    env = CompositionEnv(world={**TINY, "shifts": shifts}, window=200, concurrency=100, warmup=1)
    env.reset(seed=seed)
    action = env.encode(env.composition)
    return [float(env.step(action)[1]) for _ in range(WINDOWS)]


@pytest.mark.slow
def test_false_alarm_rate_on_a_world_without_shifts():
    """20 seeds, no shift: the settled sentinel declares none in <= 2 (measured on seeds 0-19 under
    ATEN_CPU_CAPABILITY=default: 0/20 at a 30% band; 3/12 seeds alarm at 20% with a sentinel every window; the
    former rule: 19/20, at window 1 or 2, on the learning jump; 15/20 once the reward became the expected clicks,
    whose windows are less noisy)."""
    runs = [production_rewards([], seed) for seed in range(20)]
    alarms = [seed for seed, r in enumerate(runs) if first_detection(SENTINEL, r) is not None]
    old = [seed for seed, r in enumerate(runs) if old_first_detection(SENTINEL, r) is not None]
    assert len(alarms) <= 2, alarms
    assert len(old) >= 12, old  # the former rule fires on the learning itself


@pytest.mark.slow
def test_a_real_shift_is_detected_soon_after():
    """6 seeds, a strong topic shock on day 2 (takes effect in window 9): detected within 3 windows in >= 4, and
    never before the shift (measured on seeds 0-9 under ATEN_CPU_CAPABILITY=default: detected at windows 9, 9, 9,
    10, 9, 9, -, 9, 9, 10; seed 0: clicks per request 0.45 -> 0.92)."""
    detected = []
    for seed in range(6):
        at = first_detection(SENTINEL, production_rewards([SHIFT], seed))
        assert at is None or at >= 8, (seed, at)
        detected += [at is not None and at <= 11]
    assert sum(detected) >= 4, detected
