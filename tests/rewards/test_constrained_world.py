"""Lagrangian constraints on the simulated world: the multiplier rises until the risk bound holds.

A world where clickbait pays: every segment is drawn to risky items (``risk_appeal=3``) and risk is
common (``risk_mean=0.1``). The decision is the risk weight ``w`` of a profile-affinity recommender
(score ``... - w * risk``; negative ``w`` seeks risky items). Measured once on this seed (clicks and
violations per request): w=-2: 0.66 / 2.21 (the unconstrained optimum), w=0: 0.58 / 1.00,
w=2: 0.55 / 0.45, w=4: 0.52 / 0.26, w=16: 0.48 / 0.07. With the bound 0.5 violations per request the
constrained optimum is w=2.

The loop is primal-dual: each round the primal picks the arm maximising estimated
``clicks - penalty`` (running means of each arm's measurements), serves it for a few steps, and the
handler updates; the Lagrangian handler adapts its multiplier, the weighted sum keeps a fixed weight.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import envs
from agents.decision.baselines import ProfilePolicy
from envs.sessions import ObservationLayout
from rewards.constraints import Constraint, LagrangianConstraints, WeightedScalarisation

ARMS = (-8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0, 16.0)
BOUND = 0.5
CLICKS, VIOLATIONS = "outer/engagement/clicks_per_request", "outer/risk/violations_per_request"


def clickbait_env():
    segments = envs.config.default_segments()
    for seg in segments.values():
        seg.risk_appeal = 3.0
    world = {"num_items": 2000, "num_users": 4000, "items": {"risk_mean": 0.1},
             "segments": {k: vars(v) for k, v in segments.items()}}
    return gym.make_vec("agentic-rs/Slate-v0", num_envs=256, world=world, vectorization_mode="vector_entry_point")


def primal_dual(handler, rounds: int = 40, steps: int = 10) -> tuple[np.ndarray, np.ndarray, list[float]]:
    env = clickbait_env()
    layout = ObservationLayout.of(env.unwrapped.world_cfg)
    obs, _ = env.reset(seed=0)
    sums = np.zeros((len(ARMS), 2))
    counts = np.zeros(len(ARMS))

    def serve(arm: int) -> dict[str, float]:
        nonlocal obs
        policy = ProfilePolicy(10, layout, risk=ARMS[arm])
        clicks = violations = n = 0
        for _ in range(steps):
            obs, _, _, _, info = env.step(policy(obs))
            m = info["_click"]
            clicks, violations, n = clicks + info["click"][m].sum(), violations + info["violation"][m].sum(), n + m.sum()
        metrics = {CLICKS: clicks / n, VIOLATIONS: violations / n}
        sums[arm] += (metrics[CLICKS], metrics[VIOLATIONS])
        counts[arm] += 1
        return metrics

    for arm in range(len(ARMS)):  # one measurement of each arm to start the estimates
        serve(arm)
    chosen, measured, lambdas = [], [], []
    for _ in range(rounds):
        est = sums / counts[:, None]
        lagrangian = [est[a, 0] - handler.penalty({CLICKS: est[a, 0], VIOLATIONS: est[a, 1]}) for a in range(len(ARMS))]
        arm = int(np.argmax(lagrangian))
        metrics = serve(arm)
        handler.update(metrics)
        chosen.append(arm)
        measured.append((metrics[CLICKS], metrics[VIOLATIONS]))
        lambdas.append(float(handler.multipliers[0]))
    env.close()
    return np.array(chosen), np.array(measured), lambdas


def test_lagrangian_meets_the_risk_bound_where_the_weighted_sum_does_not():
    risk = Constraint(VIOLATIONS, BOUND)
    _, lag, lambdas = primal_dual(LagrangianConstraints([risk], lr=0.05))
    _, fixed, _ = primal_dual(WeightedScalarisation([risk], weights=0.02))
    # measured, last 15 rounds: Lagrangian 0.54 clicks / 0.51 violations (w=2 in 13 of 15), lambda max 0.13;
    # weighted sum 0.62 / 2.41 (w=-2 in 15 of 15). The primal-dual loop oscillates around the bound, so the
    # Lagrangian's tail mean is the bound plus noise: on env seeds 0, 1, 2 (other sample paths) 0.511, 0.525,
    # 0.474 (s.d. ~0.026; lambda max 0.130-0.137; weighted sum 2.21-2.44 violations, 0.615-0.624 clicks).
    # Hence a tolerance of 0.1 (~4 s.d.): a multiplier that stops short and settles on w=0 (1.0 violations on
    # this seed) fails, as does the unconstrained optimum (2.2-2.4).
    lag_viol, fixed_viol = lag[-15:, 1].mean(), fixed[-15:, 1].mean()
    assert max(lambdas) > 0.05  # the multiplier rose while the bound was violated
    assert lag_viol <= BOUND + 0.1, lag_viol  # the constrained run ends within the bound, up to its noise
    assert fixed_viol > BOUND + 0.5, fixed_viol  # the weighted sum stays on the clickbait optimum
    assert fixed[-15:, 0].mean() > lag[-15:, 0].mean()  # ... which buys it clicks: the trade-off is real
