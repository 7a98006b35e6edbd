"""Off-policy estimators: a target policy's value from logs of another (the logging) policy, with propensities.

Notation (logged bandit feedback, one row per round ``i`` of ``n``): the logged action ``a_i`` was drawn by the logging
policy with probability ``pscore_i = pi_0(a_i | x_i)``; the target policy would take it with ``pi(a_i | x_i)``; the
reward is ``r_i``; a reward model gives ``q(x_i, a)`` for every action. With the importance weight
``w_i = pi(a_i | x_i) / pi_0(a_i | x_i)``:

* :func:`ips` (inverse propensity scoring): ``mean_i w_i r_i`` - unbiased whenever ``pi_0 > 0`` wherever ``pi > 0``;
* :func:`snips` (self-normalised IPS): ``sum_i w_i r_i / sum_i w_i`` - biased (consistent), lower variance;
* :func:`dm` (direct method): ``mean_i sum_a pi(a | x_i) q(x_i, a)`` - no weights, biased as much as ``q`` is wrong;
* :func:`dr` (doubly robust): ``dm + mean_i w_i (r_i - q(x_i, a_i))`` - unbiased when either the propensities or
  ``q`` are right;
* :func:`slate_dm` and :func:`slate_dr`: DM and DR for slates whose reward is a sum over positions, with a reward
  model per position and action ``q(x_i, a, k)`` and the target's per-position marginals ``pi(a at k | x_i)``:
  ``dm = mean_i sum_k sum_a pi(a at k | x_i) q(x_i, a, k)`` and ``dr = dm + mean_i w_i (r_i - sum_k q(x_i, a_ik, k))``
  with ``w_i`` the whole slate's weight (as IPS's);
* :func:`slate_pbm` (the independent-item / position-based slate estimator, Li et al. 2018): for slates of ``K``
  positions with a reward per position, ``mean_i sum_k w_ik r_ik`` with ``w_ik`` the ratio of the target's and the
  logging policy's *marginal* probabilities of putting item ``a_ik`` at position ``k`` - unbiased when a position's
  reward depends only on the item shown there (the weights of whole slates, ``prod_k``, would be unusably large).

Each returns an :class:`Estimate`: the value and its standard error over rounds (for SNIPS by the delta method), so
intervals and RMSE against a known truth (the simulator's twins) can be compared across estimators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from envs.validation import ConfigError

__all__ = ["ESTIMATORS", "Estimate", "dm", "dr", "ips", "slate_dm", "slate_dr", "slate_pbm", "snips"]


@dataclass(frozen=True)
class Estimate:
    """An estimator's value of the target policy and its standard error (over the logged rounds)."""

    name: str
    value: float
    se: float
    n: int


def _arrays(**named: np.ndarray) -> dict[str, np.ndarray]:
    out = {k: np.asarray(v, dtype=np.float64) for k, v in named.items()}
    n = {k: len(v) for k, v in out.items()}
    if len(set(n.values())) != 1 or not next(iter(n.values())):
        raise ConfigError(f"the logged arrays must have one entry per round, the same number each (got {n})")
    for key in ("pscore", "target_prob", "pscore_k", "target_k"):
        if key in out and not np.isfinite(out[key]).all():
            raise ConfigError(f"`{key}` must be finite (got non-finite values)")
    for key in ("pscore", "pscore_k"):
        if key in out and (out[key] <= 0).any():
            raise ConfigError(f"`{key}` must be > 0 for every logged action: an action the logging policy could not "
                              f"take was logged (got min {out[key].min():g})")
    return out


def _mean(name: str, x: np.ndarray) -> Estimate:
    n = len(x)
    return Estimate(name, float(x.mean()), float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan, n)


def ips(reward: np.ndarray, pscore: np.ndarray, target_prob: np.ndarray) -> Estimate:
    a = _arrays(reward=reward, pscore=pscore, target_prob=target_prob)
    return _mean("ips", a["target_prob"] / a["pscore"] * a["reward"])


def snips(reward: np.ndarray, pscore: np.ndarray, target_prob: np.ndarray) -> Estimate:
    a = _arrays(reward=reward, pscore=pscore, target_prob=target_prob)
    w = a["target_prob"] / a["pscore"]
    if w.sum() <= 0:
        raise ConfigError("`target_prob` must be > 0 on some logged action (SNIPS divides by the weights' sum: 0)")
    value = float((w * a["reward"]).sum() / w.sum())
    n = len(w)
    influence = w * (a["reward"] - value) / w.mean()  # delta method
    return Estimate("snips", value, float(influence.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan, n)


def _dm_terms(q_all: np.ndarray, target_dist: np.ndarray) -> np.ndarray:
    q_all, target_dist = np.asarray(q_all, np.float64), np.asarray(target_dist, np.float64)
    if q_all.shape != target_dist.shape or q_all.ndim != 2:
        raise ConfigError(f"`q_all` and `target_dist` must both be (rounds, actions) (got {q_all.shape} and "
                          f"{target_dist.shape})")
    if not np.allclose(target_dist.sum(axis=1), 1.0, atol=1e-6) or (target_dist < 0).any():
        raise ConfigError("`target_dist` must hold a probability distribution over actions per round")
    return (target_dist * q_all).sum(axis=1)


def dm(q_all: np.ndarray, target_dist: np.ndarray) -> Estimate:
    """``q_all`` (n, A): the reward model's value of every action; ``target_dist`` (n, A): the target's
    probabilities."""
    return _mean("dm", _dm_terms(q_all, target_dist))


def dr(reward: np.ndarray, action: np.ndarray, pscore: np.ndarray, q_all: np.ndarray,
       target_dist: np.ndarray) -> Estimate:
    """``action`` (n,): the logged action's index into ``q_all``'s and ``target_dist``'s columns."""
    base = _dm_terms(q_all, target_dist)
    a = _arrays(reward=reward, pscore=pscore, base=base)
    idx = np.asarray(action, np.int64)
    rows = np.arange(len(idx))
    if len(idx) != len(base) or idx.min() < 0 or idx.max() >= np.shape(q_all)[1]:
        raise ConfigError(f"`action` must index the (rounds, actions) arrays' columns, one per round (got {len(idx)} "
                          f"entries in [{idx.min()}, {idx.max()}] for {np.shape(q_all)})")
    w = np.asarray(target_dist, np.float64)[rows, idx] / a["pscore"]
    return _mean("dr", base + w * (a["reward"] - np.asarray(q_all, np.float64)[rows, idx]))


def _slate_dm_terms(q_k: np.ndarray, target_k: np.ndarray) -> np.ndarray:
    q, t = np.asarray(q_k, np.float64), np.asarray(target_k, np.float64)
    if q.shape != t.shape or q.ndim != 3:
        raise ConfigError(f"`q_k` and `target_k` must both be (rounds, positions, actions) (got {q.shape} and {t.shape})")
    n, k, a = q.shape
    return _dm_terms(q.reshape(n * k, a), t.reshape(n * k, a)).reshape(n, k).sum(axis=1)


def slate_dm(q_k: np.ndarray, target_k: np.ndarray) -> Estimate:
    """``q_k`` (n, K, A): the reward model's value of every action at every position; ``target_k`` (n, K, A): the
    target's marginal probabilities of each action at each position (a distribution over actions per position)."""
    return _mean("dm", _slate_dm_terms(q_k, target_k))


def slate_dr(reward: np.ndarray, slate: np.ndarray, pscore: np.ndarray, target_prob: np.ndarray, q_k: np.ndarray,
             target_k: np.ndarray) -> Estimate:
    """``reward`` (n,): the logged slate's total reward; ``slate`` (n, K): its action per position (indices into the
    last axis of ``q_k``); ``pscore``, ``target_prob`` (n,): the logging and target policies' probabilities of the
    whole logged slate; ``q_k``, ``target_k`` as in :func:`slate_dm`."""
    base = _slate_dm_terms(q_k, target_k)
    a = _arrays(reward=reward, pscore=pscore, target_prob=target_prob, base=base)
    idx = np.asarray(slate, np.int64)
    q = np.asarray(q_k, np.float64)
    if idx.shape != q.shape[:2] or idx.min() < 0 or idx.max() >= q.shape[2]:
        raise ConfigError(f"`slate` must be (rounds, positions) indices into `q_k`'s actions (got {idx.shape} in "
                          f"[{idx.min()}, {idx.max()}] for q_k {q.shape})")
    q_logged = np.take_along_axis(q, idx[..., None], axis=2)[..., 0].sum(axis=1)
    w = a["target_prob"] / a["pscore"]
    return _mean("dr", base + w * (a["reward"] - q_logged))


def slate_pbm(reward_k: np.ndarray, pscore_k: np.ndarray, target_k: np.ndarray) -> Estimate:
    """``reward_k``, ``pscore_k``, ``target_k`` (n, K): per round and position, the reward, and the logging and
    target policies' marginal probabilities of the logged item at that position."""
    r, p, t = (np.asarray(x, np.float64) for x in (reward_k, pscore_k, target_k))
    if not (r.shape == p.shape == t.shape and r.ndim == 2):
        raise ConfigError(f"`reward_k`, `pscore_k` and `target_k` must all be (rounds, positions) (got {r.shape}, "
                          f"{p.shape}, {t.shape})")
    a = _arrays(reward=r.ravel(), pscore_k=p.ravel(), target_k=t.ravel())
    per_round = (a["target_k"] / a["pscore_k"] * a["reward"]).reshape(r.shape).sum(axis=1)
    return _mean("slate_pbm", per_round)


ESTIMATORS = ("ips", "snips", "dm", "dr", "slate_pbm")
