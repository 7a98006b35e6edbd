"""Calibration to MovieLens-100K (experiments.calibrate): the fit recovers parameters it planted, the distances and
estimators agree with hand-worked examples, and the preset in conf/ is what the fit writes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.validation import ConfigError
from experiments import calibrate as cal


@pytest.mark.slow
def test_fit_simulate_refit_recovers_planted_parameters():
    """Plant a Zipf exponent, a patience shift and a clock, simulate 30k clicks, fit on another seed: the fit comes back
    to the planted values. The margins are 3 sd of each parameter's seed-to-seed noise (measured: the Gini's sd is
    0.002 over seeds at 10k clicks and moves 0.16 per unit of exponent, the mean log session 0.045 at 0.25 per unit of
    patience, the mean log gap 0.19 at 0.49 per unit of log clock), widened by the coupling of the three; each is far
    below the distance from where the bisection starts (the middle of each range: 5, +2, 45 steps per day)."""
    base = cal.world_config(fitted=False)
    planted = {"items.zipf_exponent": 1.2, "steps_per_day": 20,
               **{f"segments.{s}.patience": base.segments[s].patience + 1.0 for s in cal.SEGMENTS}}
    logged, _ = cal.simulate(cal.world_config(False, **planted), 11, 30_000)
    got = cal.fit(cal._statistics(logged), seed=21, events=30_000, iterations=5)
    assert abs(got.values["items.zipf_exponent"] - 1.2) < 0.15
    for s in cal.SEGMENTS:
        assert abs(got.values[f"segments.{s}.patience"] - planted[f"segments.{s}.patience"]) < 0.5
    assert 12 <= got.values["steps_per_day"] <= 32
    for key, value in got.targets.items():  # and the fit reproduces the statistics it was given
        assert got.achieved[key] == pytest.approx(value, abs=0.1 * abs(value) + 0.02)


def test_distances_on_worked_examples():
    # ECDFs of {1,2,3} and {2,3,4} differ by 1/3 on [1,4); the area between them is 3 * 1/3 = 1 (a shift by 1)
    assert cal.ks([1, 2, 3], [2, 3, 4]) == pytest.approx(1 / 3)
    assert cal.wasserstein([1, 2, 3], [2, 3, 4]) == pytest.approx(1.0)
    assert cal.ks([1, 2], [1, 2]) == 0.0 and cal.wasserstein([5.0], [5.0]) == 0.0
    x, y = cal.lorenz(np.full(10, 3))
    np.testing.assert_allclose(x, y, atol=1e-12)  # equal consumption: the diagonal
    _, y = cal.lorenz(np.r_[np.zeros(9), 1.0], points=11)
    assert y[9] == pytest.approx(0.0) and y[10] == 1.0  # one item has it all


def test_describe_on_a_hand_made_log():
    # user 0: items 0, 1 at day 0 (session 0), item 0 again at day 5 (session 1); user 1: item 2 at day 1
    c = cal.Consumption(user=np.array([0, 0, 0, 1]), item=np.array([0, 1, 0, 2]), day=np.array([0.0, 0.0, 5.0, 1.0]),
                        rating=np.array([5.0, 3.0, 4.0, 2.0]), session=np.array([0, 0, 1, 2]), num_items=3)
    d = cal.describe(c, np.array([0, 1, 2], np.int8), np.array([0, 0, 1]), 2)
    assert d["item_counts"].tolist() == [2, 1, 1] and sorted(d["user_counts"].tolist()) == [1, 3]
    assert d["session_lengths"].tolist() == [2, 1, 1] and d["gaps_days"].tolist() == [5.0]
    assert d["repeat_share"] == pytest.approx(0.25)  # one of four events repeats a (user, item) pair
    np.testing.assert_allclose(d["topic_shares"], [0.75, 0.25])
    np.testing.assert_allclose(d["like_by_tier"], [1.0, 0.0, 0.0])


def test_sessions_by_gap():
    day = np.array([0.0, 0.01, 0.2, 0.0])  # user 0: 14 min then 4.6 h apart; user 1 alone
    s = cal._sessions_by_gap(np.array([0, 0, 0, 1]), day, gap_hours=1.0)
    assert s[0] == s[1] != s[2] and len(set(s.tolist())) == 3


def test_dirichlet_precision_by_moments_recovers_the_planted_concentration():
    """Users' topic shares from a symmetric Dirichlet(alpha) then 60 draws each: the moment estimate, with the
    multinomial noise removed, comes back near alpha (within 25%: 300 users per segment)."""
    rng = np.random.default_rng(0)
    topics, per_user, alpha = 6, 60, 0.8
    users = 900
    item_topic = np.arange(topics)  # item t is of topic t
    shares = rng.dirichlet(np.full(topics, alpha), size=users)
    user = np.repeat(np.arange(users), per_user)
    item = np.concatenate([rng.choice(topics, size=per_user, p=p) for p in shares])
    c = cal.Consumption(user, item, np.zeros(len(user)), np.full(len(user), 3.0), user, topics)
    got = cal.direct_values(c, item_topic, topics)
    for s in cal.SEGMENTS:
        assert got[f"segments.{s}.interest_concentration"] == pytest.approx(alpha, rel=0.25)
    assert sum(got[f"request_mix.{s}"] for s in cal.SEGMENTS) == pytest.approx(1.0, abs=1e-3)


def test_recall_at_counts_held_out_hits_among_unseen_items():
    scores = np.array([[0.9, 0.8, 0.1, 0.7]])
    train = np.array([[1.0, 0.0, 0.0, 0.0]])  # item 0 was seen: excluded
    test = np.array([[0.0, 0.0, 1.0, 1.0]])
    assert cal.recall_at(scores, train, test, n=2) == pytest.approx(0.5)  # top-2 unseen: items 1, 3; one of 2 held out
    with pytest.raises(ConfigError, match="`recommender` must be one of"):
        cal.recommender_scores("svd", train, np.random.default_rng(0))


def test_the_committed_preset_is_what_the_fit_writes():
    """conf/world/ml100k.yaml round-trips through preset_text: the header's base, then the fitted values."""
    cfg = cal.world_config()
    fitted = {k: v for k, v in {"items.zipf_exponent": cfg.items.zipf_exponent, "steps_per_day": cfg.steps_per_day,
                                "mix_of": cfg.mix_of}.items()}
    text = cal.preset_text(fitted)
    assert text.startswith(cal.PRESET_HEADER) and "data: ml100k" in text
    assert cal.PRESET.read_text().split(cal.FITTED_MARKER)[0] == cal.PRESET_HEADER
    assert cfg.data == "ml100k" and all(s.churn_probability == 0 for s in cfg.segments.values())
    assert math.isclose(sum(cfg.request_mix.values()), 1.0)


def test_the_project_ranker_learns_taste_from_consumption_alone():
    """Consumption drawn from planted tastes (as in test_calibration's grounding test), each user's last 10 held out:
    the project's ranker, trained on the rest with sampled non-consumed items as negatives and item features derived
    from the training events only, finds more of the held-out items than popularity does (by > 3 standard errors over
    users), and popularity more than random."""
    rng = np.random.default_rng(5)
    users, items, d, per = 300, 200, 4, 40
    true_item, true_user = rng.standard_normal((items, d)), rng.standard_normal((users, d))
    logit = true_user @ true_item.T + np.linspace(1.0, 0.0, items)[None, :]
    p = np.exp(logit - logit.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    item = np.concatenate([rng.choice(items, size=per, replace=False, p=p[u]) for u in range(users)])
    user = np.repeat(np.arange(users), per)
    early = np.tile(np.arange(per) < per - 10, users)
    train = cal.training(user[early], item[early], np.full(early.sum(), 4.0), users, items, np.zeros(items), 4)
    test = cal._matrix(user[~early], item[~early], users, items)

    def hits(name: str) -> np.ndarray:
        scores = cal.recommender_scores(name, train, np.random.default_rng(0), seed=0)
        top = np.argpartition(-np.where(train.x > 0, -np.inf, scores), 9, axis=1)[:, :10]
        return np.take_along_axis(test, top, axis=1).sum(axis=1) / 10.0

    ranker, popularity, rand = hits("ranker"), hits("popularity"), hits("random")
    diff = ranker - popularity
    assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(users)
    assert popularity.mean() > rand.mean()
    with pytest.raises(ConfigError, match="the `ranker` recommender needs item side information"):
        cal.recommender_scores("ranker", train.x, np.random.default_rng(0))


def test_bad_arguments_are_refused_before_any_work(capsys, tmp_path):
    for args, message in ((["--seeds", "0"], "`seeds` must be in [1, 100] (got 0)"),
                          (["--fit-events", "5"], "`fit_events` must be in [1000, inf) (got 5)")):
        with pytest.raises(SystemExit):
            cal.main([*args, "--out", str(tmp_path / "out")])
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
