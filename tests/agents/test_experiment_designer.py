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
    req["user"] = np.arange(n)  # a user per request: the clustered interval is then Welch's
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
    req["user"] = np.arange(8)  # one request per user: the user-clustered interval is Welch's exactly
    req["clicks"] = np.concatenate([a, b]).astype(np.int16)
    designer.observe(InteractionLog(requests=req), guardrail=None)
    decision = designer.decide()
    assert decision.effect == pytest.approx(1.0) and (decision.ci_low, decision.ci_high) == pytest.approx((lo, hi))
    assert not decision.accepted and "too few requests per arm" in decision.reasons[0]
    designer = ExperimentDesigner(config={"min_requests": 100})
    designer.observe(request_log(np.random.default_rng(1), 50, 0.1, 5.0, 0.5), guardrail=None)
    decision = designer.decide()
    assert not decision.accepted and "too few requests per arm" in decision.reasons[0]


def user_log(rng: np.random.Generator, users: int, per_user: int, lift: float) -> InteractionLog:
    """``per_user`` requests from each of ``users`` users split in halves by the designer's hash; a user's clicks per
    request ~ Poisson(0.6 * u) with a taste u ~ lognormal(0, 0.8) of their own (heavy and light users), times
    ``1 + lift`` in the candidate's arm."""
    arm = ExperimentDesigner(config={"share": 0.5}, salt=int(rng.integers(2**31))).arm(np.arange(users))
    taste = 0.6 * rng.lognormal(0.0, 0.8, users) * np.where(arm == 1, 1.0 + lift, 1.0)
    user = np.repeat(np.arange(users), per_user)
    req = {c: np.zeros(len(user), t) for c, t in REQUEST_COLUMNS.items()}
    req["request"], req["user"], req["pipeline"] = np.arange(len(user)), user, arm[user]
    req["clicks"] = rng.poisson(taste[user]).astype(np.int16)
    return InteractionLog(requests=req)


def test_the_interval_is_clustered_by_user_so_equal_arms_pass_at_its_level():
    """An A/B test splits users, whose requests are correlated: 300 users x 20 requests, users' click rates spread
    (lognormal sd 0.8). Per request, the between-user variance is counted once per request instead of once per
    user (design effect ~1 + 19 * 0.38 ~ 8), so a per-request Welch interval is ~2.8x too narrow and its lower end
    exceeds 0 for equal arms with probability ~P(Z > 1.96 / 2.8) ~ 0.24 instead of 0.025; the user-clustered interval
    the designer uses keeps its level and still sees a 50% lift (~4.5 clustered s.e.; measured: equal arms accepted
    0.025 clustered vs 0.27 per request; the lift 0.945)."""
    rng = np.random.default_rng(0)
    welch_accepts, accepts, lifted = [], [], []
    for _ in range(200):
        log = user_log(rng, 300, 20, 0.0)
        designer = ExperimentDesigner(config={"min_requests": 1000})
        designer.observe(log, guardrail=None)
        accepts.append(designer.decide().accepted)
        clicks, arm = log.requests["clicks"], log.requests["pipeline"]
        welch_accepts.append(welch_interval(clicks[arm == 1], clicks[arm == 0]).low > 0)
        designer = ExperimentDesigner(config={"min_requests": 1000})
        designer.observe(user_log(rng, 300, 20, 0.5), guardrail=None)
        lifted.append(designer.decide().accepted)
    # 200 trials: a rate of 0.025 gives <= 0.06 with probability > 0.99; 0.24 gives >= 0.12 with probability > 0.99
    assert np.mean(accepts) <= 0.06 and np.mean(welch_accepts) >= 0.12
    assert np.mean(lifted) >= 0.8


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
