"""The A/B decision rule: accepts a truly better candidate, rejects a worse or equal one, at stated error rates."""

from __future__ import annotations

import numpy as np
import pytest

from agents.decision.functional import ExperimentDesigner
from agents.decision.params import ConfigError
from envs.log import REQUEST_COLUMNS, InteractionLog
from rewards.stats import welch_interval


def request_log(rng: np.random.Generator, n: int, rate_a: float, rate_b: float, share: float) -> InteractionLog:
    """Requests split by ``share`` into arm 1 (candidate); clicks per request ~ Poisson(rate of the arm)."""
    arm = (rng.random(n) < share).astype(np.int16)
    clicks = rng.poisson(np.where(arm == 1, rate_b, rate_a)).astype(np.int16)
    req = {c: np.zeros(n, t) for c, t in REQUEST_COLUMNS.items()}
    req["request"] = np.arange(n)
    req["pipeline"] = arm
    req["clicks"] = clicks
    return InteractionLog(requests=req)


def verdicts(rate_b: float, trials: int = 200, n: int = 4000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(trials):
        designer = ExperimentDesigner(config={"share": 0.5, "alpha": 0.05, "min_requests": 1000})
        designer.observe(request_log(rng, n, 0.60, rate_b, 0.5), guardrail=None)
        out.append(designer.decide().accepted)
    return np.array(out)


def test_accepts_a_better_candidate_and_rejects_worse_or_equal_ones():
    # Clicks ~ Poisson(0.60) vs Poisson(0.70), 2000 requests per arm: s.e. of the difference
    # sqrt(0.6/2000 + 0.7/2000) = 0.0255, so the effect 0.10 is 3.9 s.e.; the lower end of the 95% interval
    # (effect - 1.96 s.e.) is above 0 with probability Phi(3.9 - 1.96) = 0.974.
    assert verdicts(0.70).mean() >= 0.93  # measured 0.965 over 200 trials
    # Equal arms: accepted only when the lower end is > 0, i.e. one tail of a 95% interval: 2.5%.
    assert verdicts(0.60).mean() <= 0.06  # measured 0.035
    # A worse candidate (0.55): essentially never.
    assert verdicts(0.55).mean() <= 0.01  # measured 0.0


def test_interval_is_candidate_minus_incumbent_and_too_little_data_rejects():
    a, b = np.array([0.0, 1.0, 0.0, 1.0]), np.array([1.0, 1.0, 2.0, 2.0])  # incumbent, candidate
    effect, lo, hi, df, p = welch_interval(b, a, 0.95)
    # means 0.5 and 1.5 -> effect (candidate - incumbent) +1.0; variances (ddof 1) 1/3 and 1/3 -> s.e.
    # sqrt(1/12 + 1/12) = 0.408248 on Welch df 6 (equal variances and sizes: n_a + n_b - 2); t_{0.975, 6} = 2.446912
    assert effect == pytest.approx(1.0) and df == pytest.approx(6.0)
    assert (lo, hi) == pytest.approx((1.0 - 2.446912 * 0.408248, 1.0 + 2.446912 * 0.408248), abs=1e-5)
    # the designer reports the same signed effect: outcomes of pipeline 1 (candidate) minus pipeline 0 (incumbent)
    designer = ExperimentDesigner(config={"min_requests": 100})
    req = {c: np.zeros(8, t) for c, t in REQUEST_COLUMNS.items()}
    req["pipeline"] = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.int16)
    req["clicks"] = np.concatenate([a, b]).astype(np.int16)
    designer.observe(InteractionLog(requests=req), guardrail=None)
    decision = designer.decide()
    assert decision.effect == pytest.approx(1.0) and (decision.ci_low, decision.ci_high) == pytest.approx((lo, hi))
    assert not decision.accepted and "too few requests per arm" in decision.reasons[0]
    designer = ExperimentDesigner(config={"min_requests": 100})
    designer.observe(request_log(np.random.default_rng(1), 50, 0.1, 5.0, 0.5), guardrail=None)
    decision = designer.decide()
    assert not decision.accepted and "too few requests per arm" in decision.reasons[0]


def test_designer_config_is_validated():
    with pytest.raises(ConfigError, match=r"`experiment.share` must be in \[0.05, 0.5\] \(got 0.9\)"):
        ExperimentDesigner(config={"share": 0.9})
    with pytest.raises(ConfigError, match=r"`experiment.alpha` must be one of \[0.01, 0.05, 0.1\] \(got 0.2\)"):
        ExperimentDesigner(config={"alpha": 0.2})


def test_users_keep_their_arm_and_the_share_holds():
    designer = ExperimentDesigner(config={"share": 0.2})
    users = np.arange(100_000)
    arm = designer.arm(users)
    np.testing.assert_array_equal(arm, designer.arm(users))  # deterministic per user
    assert abs(arm.mean() - 0.2) < 0.01


def test_salts_split_users_independently_and_each_split_keeps_its_share():
    """A fresh salt must re-randomise who is in which arm: with a multiplicative hash of ``user + salt`` two salts only
    rotate one split into the next (two "fresh" halves overlapped by 0-100% depending on the salts)."""
    from agents.decision.functional import HashSplit, split_hash

    users = np.arange(20_000)
    u = split_hash(users, 7)
    assert np.array_equal(u, split_hash(users, 7)) and ((u >= 0) & (u < 1)).all()  # fixed for a salt, in [0, 1)
    for salt_a, salt_b in [(0, 1), (1, 2), (12345, 98765), (2**31 - 1, 3)]:
        a, b = HashSplit(0.5, salt_a).arm(users), HashSplit(0.5, salt_b).arm(users)
        # binomial s.d. of a share over 20,000 users is 0.0035: 5 s.d. margins
        assert abs(a.mean() - 0.5) < 0.018 and abs((a == b).mean() - 0.5) < 0.018, (salt_a, salt_b)
    assert abs(HashSplit(0.2, 5).arm(users).mean() - 0.2) < 0.015
    designer = ExperimentDesigner(config={"share": 0.3}, salt=11)
    assert np.array_equal(designer.arm(users), HashSplit(0.3, 11).arm(users))  # one split rule for both
