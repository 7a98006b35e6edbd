"""Synchronised random streams (exact common random numbers) and expected outcomes logged beside realised ones.

* the keyed uniforms and the keyed Generator-like draws have the right distributions, and a row's numbers do not
  depend on which other rows share the call;
* two runs of one traffic seed whose systems differ for some users give every other user the same response
  wherever its slate and state agree, however the runs diverge elsewhere; another traffic seed does not;
* the expected outcomes (choice probabilities, expected dwell, like, exit, return) equal the mean of the realised
  ones within sampling error, over many users in one identical state.
"""

from __future__ import annotations

import numpy as np
import pytest

import envs
from envs.streams import KeyedDraws, Streams

N = 200_000


def _z(mean: float, target: float, sd: float, n: int) -> float:
    return abs(mean - target) / (sd / np.sqrt(n))


def test_uniforms_are_uniform_independent_and_keyed() -> None:
    s = Streams(3)
    u = s.uniform("choice", np.arange(N), 7)
    assert 0.0 <= u.min() and u.max() < 1.0
    assert _z(u.mean(), 0.5, np.sqrt(1 / 12), N) < 5
    assert _z(u.var(), 1 / 12, np.sqrt(1 / 180), N) < 5  # var of U^2-ish: sd of (u - 1/2)^2 is 1/sqrt(180)
    for other in (s.uniform("like", np.arange(N), 7), s.uniform("choice", np.arange(N), 8), Streams(4).uniform("choice", np.arange(N), 7)):
        assert abs(np.corrcoef(u, other)[0, 1]) < 5 / np.sqrt(N)  # purposes, counters and seeds give other numbers
    np.testing.assert_array_equal(u[[5, 17]], s.uniform("choice", np.array([5, 17]), 7))  # a function of the key only
    assert s.uniform("choice", 5, 7) == u[5]
    z = s.normal(("dwell_u", "dwell_v"), np.arange(N), 0)
    assert _z(z.mean(), 0.0, 1.0, N) < 5 and abs(z.std() - 1.0) < 5 * np.sqrt(0.5 / N)


@pytest.mark.parametrize("shape", [0.2, 0.7, 1.0, 4.0])
def test_keyed_gamma_has_the_gamma_moments(shape: float) -> None:
    n = 100_000
    g = KeyedDraws(Streams(0), "new_user", np.arange(n), np.zeros(n, np.int64)).gamma(np.full((n, 1), shape))[:, 0]
    assert (g > 0).all()
    assert _z(g.mean(), shape, np.sqrt(shape), n) < 5  # Gamma(k, 1): mean k, variance k
    assert abs(g.var() / shape - 1.0) < 0.05


def test_keyed_poisson_and_choice() -> None:
    n = 100_000
    draws = KeyedDraws(Streams(0), "new_user", np.arange(n), np.zeros(n, np.int64))
    x = draws.poisson(np.full(n, 2.5))
    assert _z(x.mean(), 2.5, np.sqrt(2.5), n) < 5 and abs(x.var() / 2.5 - 1.0) < 0.05
    p = np.array([0.2, 0.5, 0.3])
    share = np.bincount(draws.choice(3, n, p), minlength=3) / n
    assert (np.abs(share - p) < 5 * np.sqrt(p * (1 - p) / n)).all()


def test_a_rows_keyed_draws_do_not_depend_on_its_batch() -> None:
    s = Streams(1)
    alone = KeyedDraws(s, "new_user", np.array([5]), np.array([2]))
    batch = KeyedDraws(s, "new_user", np.array([9, 5, 11]), np.array([1, 2, 2]))
    for draw in ("gamma", "standard_normal", "poisson"):
        a = alone.gamma(np.full((1, 4), 0.3)) if draw == "gamma" else (
            alone.standard_normal((1, 3)) if draw == "standard_normal" else alone.poisson(np.array([4.0])))
        b = batch.gamma(np.full((3, 4), 0.3)) if draw == "gamma" else (
            batch.standard_normal((3, 3)) if draw == "standard_normal" else batch.poisson(np.array([1.0, 4.0, 9.0])))
        np.testing.assert_array_equal(a[0], b[1])


# ---------------------------------------------------------------------------------------------------- world
CFG = envs.WorldConfig(num_items=300, num_users=600, num_topics=5, embedding_dim=4, num_creators=20, steps_per_day=10)
SLATE = 5


def _run(traffic_seed: int, treated: np.ndarray, steps: int = 40, batch: int = 120) -> dict[tuple[int, int], tuple]:
    """Serve ``batch`` concurrent sessions for ``steps`` steps. Every user sees the first ``SLATE`` of its candidates,
    except users in ``treated``, who see the last ones (the two arms differ only for them). Returns, per
    (user identity, request counter): the slate, the user's state before the step and its response."""
    world = envs.World(CFG, seed=0, traffic_seed=traffic_seed)
    pop = world.users
    users = world.new_requests(batch)
    out = {}
    for _ in range(steps):
        ids, _ = world.candidates(users, 20)
        slate = np.where(np.isin(users, treated)[:, None], ids[:, -SLATE:], ids[:, :SLATE])
        key = list(zip(pop.identity(users).tolist(), pop.requests[users].tolist()))
        state = np.concatenate([pop.interest[users], pop.fatigue[users], pop.satisfaction[users, None]], axis=1)
        r = world.respond(users, slate)
        ended = world.end_sessions(users[r.exit])
        back = np.zeros(len(users), bool)
        back[r.exit] = ended.returned
        for i, k in enumerate(key):
            out[k] = (slate[i].tobytes(), state[i].tobytes(), r.click[i].tobytes(), bool(r.exit[i]), float(r.dwell[i].sum()),
                      bool(back[i]))
        world.tick()
        users = np.concatenate([users[~r.exit], world.new_requests(int(r.exit.sum()))])
    return out


def test_arms_share_every_uniform_where_slate_and_state_agree() -> None:
    control = _run(traffic_seed=11, treated=np.zeros(0, np.int64))
    treated = _run(traffic_seed=11, treated=np.arange(0, CFG.num_users, 4))  # a quarter of the users see other slates
    other = _run(traffic_seed=12, treated=np.zeros(0, np.int64))
    both = [k for k in control if k in treated]
    same_input = [k for k in both if control[k][:2] == treated[k][:2]]
    assert len(both) > 0.5 * len(control)  # the same users arrive (their histories diverged for a quarter of them)
    assert len(same_input) > 0.4 * len(control)
    assert len(same_input) < len(both)  # the arms did diverge
    assert all(control[k][2:] == treated[k][2:] for k in same_input)  # ... and agree exactly wherever they could
    # another traffic seed draws other arrivals and other responses
    shared = [k for k in control if k in other and control[k][:2] == other[k][:2]]
    agree = np.mean([control[k][2:] == other[k][2:] for k in shared]) if shared else 0.0
    assert len(shared) < 0.2 * len(control) or agree < 0.9


def test_same_traffic_seed_same_everything() -> None:
    assert _run(5, np.arange(0, CFG.num_users, 3), steps=15) == _run(5, np.arange(0, CFG.num_users, 3), steps=15)


def test_expected_outcomes_are_the_mean_of_realised_ones() -> None:
    """20,000 users in one identical state see one slate once: realised means vs the choice model's expectations."""
    n = 20_000
    cfg = envs.WorldConfig(num_items=50, num_users=n, num_topics=3, embedding_dim=4, num_creators=5)
    world = envs.World(cfg, seed=1)
    pop = world.users
    users = world.new_requests(n)
    pop.segment[users] = pop.segment[users[0]]
    for arr in (pop.interest, pop.fatigue, pop.profile):
        arr[users] = arr[users[0]]
    pop.satisfaction[users] = 0.2
    pop.session_steps[users] = 2
    pop.session_experience[users] = 0.4
    slate = np.broadcast_to(np.array([3, 7, 11, 19, 23]), (n, 5)).copy()
    r = world.respond(users, slate)
    assert np.ptp(r.choice_prob, axis=0).max() < 1e-6  # every user in the same state
    p = r.expected_click[0]
    click = r.click.mean(axis=0)
    assert (np.abs(click - p) < 5 * np.sqrt(p * (1 - p) / n)).all()
    clicks = r.click.sum(axis=1)
    assert _z(clicks.mean(), r.expected_clicks[0], clicks.std(), n) < 5
    for realised, expected in ((r.dwell, r.expected_dwell), (r.like.astype(np.float64), r.expected_like)):
        for k in range(5):
            assert _z(realised[:, k].mean(), expected[0, k], realised[:, k].std() + 1e-9, n) < 5
    # exit is Bernoulli(exit_prob) given the step's outcome (satisfaction moved with the click and like)
    assert _z(r.exit.mean(), r.exit_prob.mean(), r.exit.std(), n) < 5
    ended = world.close_sessions(users)
    assert _z(ended.returned.mean(), ended.return_prob.mean(), ended.returned.std(), n) < 5
    assert _z(ended.churned.mean(), ended.churn_prob.mean(), ended.churned.std() + 1e-9, n) < 5
