"""Off-policy estimators: their published formulas on a worked example, unbiasedness where theory says so (IPS and
DR on a known logging policy, the slate estimator on an additive slate world), and DM's bias when its reward model is
misspecified."""

from __future__ import annotations

import numpy as np
import pytest

from envs.validation import ConfigError
from rewards.ope import dm, dr, ips, slate_dm, slate_dr, slate_pbm, snips

# 4 logged rounds, 2 actions. Logged actions 0, 1, 0, 0 with rewards 1, 0, 1, 0.
REWARD = np.array([1.0, 0.0, 1.0, 0.0])
ACTION = np.array([0, 1, 0, 0])
PSCORE = np.array([0.5, 0.25, 0.2, 0.5])  # the logging policy's probability of the logged action
TARGET = np.array([[1.0, 0.0], [0.5, 0.5], [0.4, 0.6], [0.0, 1.0]])  # the target policy's distribution per round
Q = np.tile([0.6, 0.2], (4, 1))  # a reward model: 0.6 for action 0, 0.2 for action 1


def test_the_estimators_on_a_worked_example():
    target_prob = TARGET[np.arange(4), ACTION]  # 1.0, 0.5, 0.4, 0.0
    # weights w = target / pscore = 2, 2, 2, 0; IPS = mean(w r) = (2 + 0 + 2 + 0) / 4 = 1.0
    assert ips(REWARD, PSCORE, target_prob).value == pytest.approx(1.0)
    # SNIPS = sum(w r) / sum(w) = 4 / 6
    assert snips(REWARD, PSCORE, target_prob).value == pytest.approx(4 / 6)
    # DM = mean over rounds of sum_a target(a) q(a) = mean(0.6, 0.4, 0.36, 0.2) = 0.39
    assert dm(Q, TARGET).value == pytest.approx(0.39)
    # DR = DM + mean(w (r - q(a_i))) = 0.39 + mean(2 x 0.4, 2 x -0.2, 2 x 0.4, 0 x -0.6) = 0.39 + 0.3 = 0.69
    assert dr(REWARD, ACTION, PSCORE, Q, TARGET).value == pytest.approx(0.69)
    # the slate estimator with one position is IPS
    one = slate_pbm(REWARD[:, None], PSCORE[:, None], target_prob[:, None])
    assert one.value == pytest.approx(1.0) and one.se == pytest.approx(ips(REWARD, PSCORE, target_prob).se)


def test_bad_logs_are_refused_with_the_key():
    with pytest.raises(ConfigError, match=r"`pscore` must be > 0"):
        ips(REWARD, np.array([0.5, 0.0, 0.2, 0.5]), REWARD)
    with pytest.raises(ConfigError, match="one entry per round"):
        ips(REWARD, PSCORE[:3], REWARD)
    with pytest.raises(ConfigError, match="`target_dist` must hold a probability distribution"):
        dm(Q, TARGET * 2)


ACTIONS = 3
RUNS, ROUNDS = 400, 500


def _world(rng: np.random.Generator):
    """Contexts x ~ U(-1, 1); P(reward | x, a) = sigmoid(b_a + c_a x^2): the reward depends on |x|, which a model
    linear in x cannot represent. Logging: softmax(0.5 x a) (every action possible); target: softmax(3 x^2 a)."""
    b, c = np.array([0.0, -0.5, -1.0]), np.array([-1.0, 0.5, 2.5])

    def p_reward(x):
        return 1 / (1 + np.exp(-(b + c * x[..., None] ** 2)))

    def softmax(z):
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def logging(x):
        return softmax(0.5 * x[..., None] * np.arange(ACTIONS))

    def target(x):
        return softmax(3 * x[..., None] ** 2 * np.arange(ACTIONS))

    grid = np.linspace(-1, 1, 200_001)
    truth = float((target(grid) * p_reward(grid)).sum(axis=1).mean())  # E_x sum_a pi(a|x) P(r|x,a), exactly
    x = rng.uniform(-1, 1, (RUNS, ROUNDS))
    p0 = logging(x)
    a = (rng.random((RUNS, ROUNDS, 1)) > np.cumsum(p0, axis=-1)).sum(axis=-1)
    r = (rng.random((RUNS, ROUNDS)) < np.take_along_axis(p_reward(x), a[..., None], -1)[..., 0]).astype(float)
    return truth, x, a, r, p0, target(x)


def test_ips_and_dr_are_unbiased_and_dm_is_not_when_its_model_is_misspecified():
    truth, x, a, r, p0, pt = _world(np.random.default_rng(0))
    rows = np.arange(ROUNDS)
    estimates = {"ips": [], "snips": [], "dm": [], "dr": []}
    for i in range(RUNS):
        pscore, tprob = p0[i, rows, a[i]], pt[i, rows, a[i]]
        # the misspecified reward model: per action, least squares linear in x on this run's log
        q = np.zeros((ROUNDS, ACTIONS))
        for k in range(ACTIONS):
            m = a[i] == k
            slope, icpt = np.polyfit(x[i, m], r[i, m], 1)
            q[:, k] = icpt + slope * x[i]
        estimates["ips"].append(ips(r[i], pscore, tprob).value)
        estimates["snips"].append(snips(r[i], pscore, tprob).value)
        estimates["dm"].append(dm(q, pt[i]).value)
        estimates["dr"].append(dr(r[i], a[i], pscore, q, pt[i]).value)
    bias = {k: np.mean(v) - truth for k, v in estimates.items()}
    se = {k: np.std(v, ddof=1) / np.sqrt(RUNS) for k, v in estimates.items()}
    assert abs(bias["ips"]) < 4 * se["ips"], (bias, se)  # unbiased: within sampling error over 400 runs
    assert abs(bias["dr"]) < 4 * se["dr"], (bias, se)  # the propensities are right: unbiased whatever q is
    assert abs(bias["dm"]) > 10 * se["dm"] and abs(bias["dm"]) > 0.03, (bias, se)  # misspecified q: biased
    assert np.std(estimates["snips"]) < np.std(estimates["ips"])  # self-normalising trades bias for variance


def test_the_position_based_slate_estimator_is_unbiased_on_an_additive_slate_world():
    """3 positions, 5 items per position drawn independently; a position's reward depends only on the item there
    (with a position bias), so the marginal-weight estimator is unbiased; the truth is sum_k sum_m pi_k(m) p(m, k)."""
    rng = np.random.default_rng(1)
    k, m = 3, 5
    p = rng.uniform(0.05, 0.6, (m, 1)) * np.array([1.0, 0.6, 0.3])  # P(reward | item, position)
    logging = np.full((k, m), 1 / m)
    target = rng.dirichlet(np.ones(m) * 0.5, size=k)
    truth = float((target.T * p).sum())
    values = []
    for _ in range(RUNS):
        items = np.stack([rng.choice(m, size=ROUNDS, p=logging[j]) for j in range(k)], axis=1)
        reward = (rng.random((ROUNDS, k)) < p[items, np.arange(k)]).astype(float)
        values.append(slate_pbm(reward, logging[np.arange(k), items], target[np.arange(k), items]).value)
    assert abs(np.mean(values) - truth) < 4 * np.std(values, ddof=1) / np.sqrt(RUNS)


def test_the_slate_model_estimators_on_a_worked_example():
    # 2 rounds, 2 positions, 2 actions. q_k[i, k, a]: the modelled reward of action a at position k.
    q_k = np.array([[[0.5, 0.1], [0.2, 0.4]], [[0.3, 0.3], [0.1, 0.0]]])
    # the target shows action 0 then 1 in round 0, and splits 50/50 at each position in round 1
    target_k = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.5, 0.5]]])
    # DM per round: 0.5 + 0.4 = 0.9; 0.3 + 0.05 = 0.35; mean 0.625
    assert slate_dm(q_k, target_k).value == pytest.approx(0.625)
    # logged slates (1, 0) and (0, 1), rewards 1 and 0, slate weights 0.5 / 0.25 = 2 and 0.25 / 0.5 = 0.5;
    # q of the logged slates: 0.1 + 0.2 = 0.3 and 0.3 + 0.0 = 0.3; DR = mean(0.9 + 2 x 0.7, 0.35 + 0.5 x -0.3) = 1.25
    slate, reward = np.array([[1, 0], [0, 1]]), np.array([1.0, 0.0])
    est = slate_dr(reward, slate, np.array([0.25, 0.5]), np.array([0.5, 0.25]), q_k, target_k)
    assert est.value == pytest.approx(1.25) and est.name == "dr"
    with pytest.raises(ConfigError, match=r"`q_k` and `target_k` must both be \(rounds, positions, actions\)"):
        slate_dm(q_k[0], target_k[0])
    with pytest.raises(ConfigError, match="`target_dist` must hold a probability distribution"):
        slate_dm(q_k, target_k * 2)
