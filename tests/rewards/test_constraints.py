"""Constraints: validation, the Lagrangian dual step by hand, and a toy problem where primal-dual finds the bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.validation import ConfigError
from rewards.constraints import Constraint, ConstraintHandler, LagrangianConstraints, WeightedScalarisation

RISK = "outer/risk/violations_per_request"
GINI = "outer/ecosystem/item_gini"
COST = "outer/cost/candidates_per_request"


def test_constraint_excess_by_sense() -> None:
    metrics = {RISK: 0.08, GINI: 0.5}
    assert Constraint(RISK, 0.05).excess(metrics) == pytest.approx(0.03)  # 0.08 - 0.05 > 0: violated
    assert Constraint(GINI, 0.6, ">=").excess(metrics) == pytest.approx(0.1)  # 0.6 - 0.5: below the floor
    assert Constraint(GINI, 0.6).excess(metrics) == pytest.approx(-0.1)  # 0.5 <= 0.6 with slack 0.1


def test_constraint_validation() -> None:
    with pytest.raises(ConfigError, match=r"`constraint.metric` must be one of .* \(got 'outer/risk/violation_per_request'\); did you mean 'outer/risk/violations_per_request'\?"):
        Constraint("outer/risk/violation_per_request", 0.05)
    with pytest.raises(ConfigError, match=r"`constraint\[outer/risk/violations_per_request\].sense` must be one of \['<=', '>='\] \(got '<'\)"):
        Constraint(RISK, 0.05, "<")
    with pytest.raises(ConfigError, match=r"`constraint\[outer/cost/candidates_per_request\].scale` must be in \(0, inf\) \(got 0\)"):
        Constraint(COST, 100, scale=0)
    with pytest.raises(ConfigError, match=r"`constraint\[outer/cost/candidates_per_request\].bound` must be a number \(got str '100'\)"):
        Constraint(COST, "100")
    with pytest.raises(ConfigError, match=r"`constraint\[outer/cost/candidates_per_request\].bound` must be finite \(got inf\)"):
        Constraint(COST, math.inf)


def test_constraint_needs_a_defined_metric() -> None:
    with pytest.raises(ValueError, match=r"metrics lack 'outer/risk/violations_per_request'"):
        Constraint(RISK, 0.05).excess({GINI: 0.1})
    with pytest.raises(ValueError, match=r"constraint metric 'outer/risk/violations_per_request' is nan"):
        Constraint(RISK, 0.05).excess({RISK: math.nan})


def test_handler_validation() -> None:
    with pytest.raises(ConfigError, match=r"`constraints` must hold at least one Constraint"):
        LagrangianConstraints([])
    with pytest.raises(ConfigError, match=r"`constraints` must name each metric once \(got \['outer/risk/violations_per_request'\]"):
        LagrangianConstraints([Constraint(RISK, 0.05), Constraint(RISK, 0.01, ">=")])
    with pytest.raises(ConfigError, match=r"`constraints` must hold Constraint objects \(got tuple\)"):
        WeightedScalarisation([(RISK, 0.05)])
    with pytest.raises(ConfigError, match=r"`lagrangian.lr` must be in \(0, inf\) \(got 0\)"):
        LagrangianConstraints([Constraint(RISK, 0.05)], lr=0)
    with pytest.raises(ConfigError, match=r"`lagrangian.init` must be in \[0, inf\) \(got -1\)"):
        LagrangianConstraints([Constraint(RISK, 0.05)], init=-1)
    with pytest.raises(ConfigError, match=r"`weights` must have one weight per constraint \(got 1 weights for 2 constraints\)"):
        WeightedScalarisation([Constraint(RISK, 0.05), Constraint(GINI, 0.5)], [1.0])
    with pytest.raises(ConfigError, match=r"`weights\[outer/risk/violations_per_request\]` must be in \[0, inf\) \(got -0.5\)"):
        WeightedScalarisation([Constraint(RISK, 0.05)], -0.5)


def test_lagrangian_dual_step_by_hand() -> None:
    lag = LagrangianConstraints([Constraint(RISK, 0.3, scale=2.0), Constraint(GINI, 0.5)], lr=0.5)
    # window 1: risk 0.5 (excess 0.2), gini 0.4 (excess -0.1)
    # lambda_risk = max(0, 0 + 0.5 * 0.2 / 2) = 0.05; lambda_gini = max(0, 0 + 0.5 * -0.1 / 1) = 0 (projected)
    assert lag.update({RISK: 0.5, GINI: 0.4}) == pytest.approx({RISK: 0.05, GINI: 0.0})
    state = lag.state()
    assert state[f"constraint/{RISK}/lambda"] == pytest.approx(0.05)
    assert state[f"constraint/{RISK}/slack"] == pytest.approx(-0.2)
    assert state[f"constraint/{RISK}/violated"] == 1.0
    assert state[f"constraint/{GINI}/slack"] == pytest.approx(0.1)
    assert state[f"constraint/{GINI}/violated"] == 0.0
    # penalty at risk 0.7, gini 0.9: 0.05 * (0.7 - 0.3) + 0 * (0.9 - 0.5) = 0.02
    assert lag.penalty({RISK: 0.7, GINI: 0.9}) == pytest.approx(0.02)
    assert lag.terms({RISK: 0.7, GINI: 0.9}) == pytest.approx({RISK: 0.02, GINI: 0.0})
    # window 2: risk 0.0 (excess -0.3): 0.05 + 0.5 * -0.3 / 2 = -0.025 -> projected to 0
    assert lag.update({RISK: 0.0, GINI: 0.5})[RISK] == 0.0


def test_both_handlers_follow_the_protocol() -> None:
    for handler in (LagrangianConstraints([Constraint(RISK, 0.05)]), WeightedScalarisation([Constraint(RISK, 0.05)])):
        assert isinstance(handler, ConstraintHandler)
    assert not isinstance(Constraint(RISK, 0.05), ConstraintHandler)


def test_state_before_any_metrics_is_nan() -> None:
    state = WeightedScalarisation([Constraint(RISK, 0.05)], 2.0).state()
    assert state[f"constraint/{RISK}/lambda"] == 2.0
    assert math.isnan(state[f"constraint/{RISK}/slack"]) and math.isnan(state[f"constraint/{RISK}/violated"])


def _solve_toy(handler: ConstraintHandler, iterations: int = 200) -> tuple[np.ndarray, float]:
    """max_x engagement = x s.t. risk = x <= 0.3, x on a grid of [0, 1]: alternate the primal argmax of
    ``x - penalty(x)`` and the handler's update; return the primal iterates and the final multiplier."""
    grid = np.linspace(0.0, 1.0, 101)
    xs = []
    for _ in range(iterations):
        objective = [x - handler.penalty({RISK: x}) for x in grid]
        x = float(grid[int(np.argmax(objective))])
        handler.update({RISK: x})
        xs.append(x)
    return np.array(xs), handler.state()[f"constraint/{RISK}/lambda"]


def test_lagrangian_finds_the_constraint_boundary() -> None:
    # x - lambda (x - 0.3) is maximised at x = 1 while lambda < 1 and at x = 0 once lambda > 1: the multiplier rises
    # to ~1 and the primal iterates alternate so that their average settles at the bound 0.3
    xs, lam = _solve_toy(LagrangianConstraints([Constraint(RISK, 0.3)], lr=0.05))
    assert xs[0] == 1.0  # unconstrained start
    assert lam > 0.0
    # KKT at the optimum x* = 0.3: d/dx [x - lambda (x - 0.3)] = 1 - lambda = 0, so lambda* = 1
    assert lam == pytest.approx(1.0, abs=0.1)
    tail = xs[-50:]
    assert abs(tail.mean() - 0.3) <= 0.05
    assert tail.mean() - 0.3 <= 0.05  # risk <= 0.3 on average, within tolerance


def test_weighted_scalarisation_with_a_small_weight_violates() -> None:
    # fixed weight 0.5: x - 0.5 (x - 0.3) = 0.5 x + 0.15 is increasing, so x = 1 every time: risk 1 > 0.3
    handler = WeightedScalarisation([Constraint(RISK, 0.3)], 0.5)
    xs, lam = _solve_toy(handler)
    assert np.all(xs == 1.0)
    assert lam == 0.5  # never updated
    assert handler.state()[f"constraint/{RISK}/violated"] == 1.0


def test_a_confident_excess_bounds_the_mean_by_its_one_sided_t_interval():
    """Hand-worked: values 0.04, 0.06, 0.05 (mean 0.05, sd 0.01, se 0.01/sqrt 3), t(0.95, 2) = 2.919986: the upper
    bound 0.05 + 0.016859 exceeds a bound of 0.05 by 0.016859 though the mean sits on it; >= mirrors it; one value
    cannot bound a mean."""
    from rewards.constraints import Constraint

    le = Constraint("outer/risk/violations_per_request", 0.05, "<=")
    half = 2.919986 * 0.01 / np.sqrt(3)
    assert le.confident_excess([0.04, 0.06, 0.05]) == pytest.approx(half, rel=1e-5)
    assert le.confident_excess([0.01, 0.02, 0.015]) == pytest.approx(0.015 + 2.919986 * 0.005 / np.sqrt(3) - 0.05, rel=1e-5)
    ge = Constraint("outer/engagement/clicks_per_request", 0.5, ">=")
    assert ge.confident_excess([0.6, 0.62, 0.64]) == pytest.approx(0.5 - (0.62 - 2.919986 * 0.02 / np.sqrt(3)), rel=1e-5)
    assert le.confident_excess([0.0]) == np.inf and le.confident_excess([0.0, np.nan]) == np.inf
