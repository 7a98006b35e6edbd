"""The knowledge store: round trips of every table, idempotent writes, resume, warm starts and bad input; each on
SQLite and on PostgreSQL (the ``store_url`` fixture of tests/conftest.py)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.infra.store import TABLES, KnowledgeStore, Neighbour, Trial, regime_key
from envs.validation import ConfigError

STATS: dict[str, Any] = {
    "effect": 0.1, "ci_low": 0.0, "ci_high": 0.2, "p_value": 0.05, "n_incumbent": 1, "n_candidate": 1,
}
CONFIG = {"lr": 0.01, "layers": [64, 32], "optimizer": {"name": "adam", "beta": 0.9}}


@pytest.fixture
def store(store_url: str) -> Iterator[KnowledgeStore]:
    with KnowledgeStore(store_url) as s:
        yield s


def add(store: KnowledgeStore, exp: int, step: int, reward: float = 1.0, **kw: Any) -> bool:
    """A trial with defaults for everything but the experiment, step and reward."""
    args: dict[str, Any] = {
        "agent": "ranker",
        "controller": "evolution",
        "config": CONFIG,
        "regime": [0.2, 0.5],
        "inner": {"loss": 0.3},
        "outer": {"engagement": 1.5},
    }
    args.update(kw)
    return store.add_trial(exp, step, reward=reward, **args)


# --------------------------------------------------------------------------- round trips


def test_sqlite_file_uses_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    with KnowledgeStore(f"sqlite:///{tmp_path / 'store.db'}", busy_timeout_s=7.5) as s:
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7500


def test_round_trip_of_every_table_survives_reopening(store_url: str) -> None:
    url = store_url
    before = datetime.now(UTC)
    with KnowledgeStore(url) as s:
        exp = s.start_experiment("round-trip", CONFIG, seed=3, run_dir="/runs/round-trip")
        for step in (2, 0, 1):  # written out of order, read back by step
            assert add(s, exp, step, reward=float(step) / 10, regime=[0.1 * step, 0.5])
        assert s.add_rollout(
            exp, 1, "ranker", {"lr": 0.02}, "accepted",
            effect=0.04, ci_low=0.01, ci_high=0.07, p_value=0.003, n_incumbent=500, n_candidate=480,
            reasons=["effect above threshold", "no guardrail breached"],
        )
        assert s.add_rollout(
            exp, 0, "ranker", {"lr": 0.5}, "rejected",
            effect=-0.1, ci_low=-0.2, ci_high=0.0, p_value=0.04, n_incumbent=500, n_candidate=20,
        )
        assert s.add_shift(exp, day=5, kind="topic_shock", detected_at_step=12)
        assert s.add_shift(exp, day=2, kind="catalog_refresh")
        d1 = s.add_design(exp, "ranker", {"layers": [32]}, "smaller is faster", "constrained", True, reward=0.7)
        d2 = s.add_design(exp, "fusion", "{not json", "tried a new quota", "fallback", False, error="parse error")
        s.finish_experiment(exp)

    with KnowledgeStore(url) as s:
        (e,) = s.experiments()
        assert (e.id, e.name, e.config, e.seed, e.status) == (exp, "round-trip", CONFIG, 3, "finished")
        assert e.run_dir == "/runs/round-trip"
        assert e.finished_at is not None and before <= e.created_at <= e.finished_at
        assert s.experiment(exp) == e

        trials = s.trials(exp)
        assert [t.step for t in trials] == [0, 1, 2]
        t = trials[2]
        assert isinstance(t, Trial)
        assert (t.agent, t.controller, t.config, t.reward) == ("ranker", "evolution", CONFIG, 0.2)
        assert t.regime == [0.2, 0.5] and t.regime_key == "0.2,0.5"
        assert t.inner == {"loss": 0.3} and t.outer == {"engagement": 1.5}
        assert t.created_at.tzinfo is not None
        assert s.last_step(exp) == 2 and s.completed_steps(exp) == {0, 1, 2}
        assert s.trials(agent="nobody") == [] and len(s.trials(agent="ranker")) == 3
        assert [t.step for t in s.trials(regime_key="0.1,0.5")] == [1]

        r0, r1 = s.rollouts(exp)
        assert (r0.step, r0.decision, r0.candidate_config, r0.reasons) == (0, "rejected", {"lr": 0.5}, [])
        assert (r1.step, r1.decision, r1.effect) == (1, "accepted", 0.04)
        assert (r1.ci_low, r1.ci_high, r1.p_value) == (0.01, 0.07, 0.003)
        assert (r1.n_incumbent, r1.n_candidate) == (500, 480)
        assert r1.reasons == ["effect above threshold", "no guardrail breached"]

        sh = s.shifts(exp)
        assert [(x.day, x.kind, x.detected_at_step) for x in sh] == [
            (2, "catalog_refresh", None),
            (5, "topic_shock", 12),
        ]

        assert [d.id for d in s.designs()] == [d1, d2]
        (good,) = s.designs(valid=True)
        assert (good.agent, good.document, good.rationale, good.route, good.error, good.reward) == (
            "ranker", {"layers": [32]}, "smaller is faster", "constrained", None, 0.7,
        )
        (bad,) = s.designs(agent="fusion")
        assert (bad.document, bad.valid, bad.error, bad.reward) == ("{not json", False, "parse error", None)
        assert s.designs(agent="fusion", valid=True) == []


def test_to_frame_has_every_column_of_every_table(store: KnowledgeStore) -> None:
    exp = store.start_experiment("frames", {}, seed=0)
    add(store, exp, 0, reward=0.5)
    add(store, exp, 1, reward=0.25)
    expected = {
        "experiments": ["id", "name", "config", "seed", "status", "created_at", "finished_at", "run_dir"],
        "trials": [
            "id", "experiment_id", "step", "agent", "controller", "config", "regime", "regime_key",
            "inner", "outer", "reward", "created_at",
        ],
        "rollouts": [
            "id", "experiment_id", "step", "agent", "candidate_config", "decision", "effect", "ci_low",
            "ci_high", "p_value", "n_incumbent", "n_candidate", "reasons", "created_at",
        ],
        "shifts": ["id", "experiment_id", "day", "kind", "detected_at_step", "created_at"],
        "designs": [
            "id", "experiment_id", "agent", "document", "rationale", "route", "valid", "error", "reward",
            "created_at",
        ],
    }
    assert set(expected) == set(TABLES)
    for table, columns in expected.items():
        assert list(store.to_frame(table).columns) == columns, table
    trials = store.to_frame("trials")
    assert trials["step"].tolist() == [0, 1] and trials["reward"].tolist() == [0.5, 0.25]
    assert trials["config"].iloc[0] == CONFIG
    assert str(trials["created_at"].dt.tz) == "UTC"
    assert len(store.to_frame("designs")) == 0


def test_numpy_values_become_plain_python_and_nan_metrics_become_none(store: KnowledgeStore) -> None:
    exp = store.start_experiment("numpy", {"seeds": np.arange(3), "scale": np.float32(0.5)}, seed=np.int64(4))
    config = {"w": np.array([[1.0, 2.0]], dtype=np.float32), "n": np.int32(7), "on": np.bool_(True), 3: (1, 2)}
    inner = {"auc": np.float32(0.75), "loss": np.nan, "grad": float("inf"), "per_seg": np.array([0.1, np.nan])}
    assert add(store, exp, 0, reward=np.float64(0.25), config=config, regime=np.array([0.5, 1.5]), inner=inner)
    (t,) = store.trials(exp)
    assert t.config == {"w": [[1.0, 2.0]], "n": 7, "on": True, "3": [1, 2]}
    assert type(t.config["n"]) is int and type(t.config["w"][0][0]) is float and type(t.config["on"]) is bool
    assert t.inner == {"auc": 0.75, "loss": None, "grad": None, "per_seg": [0.1, None]}
    assert t.regime == [0.5, 1.5] and type(t.reward) is float
    assert store.experiment(exp).config == {"seeds": [0, 1, 2], "scale": 0.5}
    # non-finite rollout statistics are stored as NULL
    assert store.add_rollout(
        exp, 0, "ranker", {}, "rejected", effect=np.nan, ci_low=-np.inf, ci_high=np.float32(0.1), p_value=None,
        n_incumbent=np.int64(10), n_candidate=0,
    )
    (r,) = store.rollouts(exp)
    assert (r.effect, r.ci_low, r.p_value, r.n_incumbent) == (None, None, None, 10)
    assert r.ci_high == pytest.approx(0.1)


def test_regime_key_rounds_coarsely() -> None:
    assert regime_key([0.249, 0.51, -0.01]) == "0.2,0.5,0.0"
    assert regime_key(np.array([1.0, 2.345]), decimals=2) == "1.00,2.35"


# --------------------------------------------------------------------------- idempotent writes


def test_adding_a_trial_twice_writes_one_row(store: KnowledgeStore, caplog: pytest.LogCaptureFixture) -> None:
    exp = store.start_experiment("idem", {}, seed=0)
    assert add(store, exp, 0, reward=1.0) is True
    with caplog.at_level(logging.WARNING, logger="agents.infra.store"):
        assert add(store, exp, 0, reward=2.0) is False
    assert "already stored" in caplog.text  # a differing re-write is reported, not silently dropped
    (t,) = store.trials(exp)
    assert t.reward == 1.0
    assert len(store.to_frame("trials")) == 1
    # the same step of another experiment is a different trial
    other = store.start_experiment("idem-2", {}, seed=0)
    assert add(store, other, 0) is True
    assert len(store.trials()) == 2


def test_rollouts_and_shifts_are_idempotent_on_their_keys(store: KnowledgeStore) -> None:
    exp = store.start_experiment("idem", {}, seed=0)
    stats = STATS
    assert store.add_rollout(exp, 3, "ranker", {}, "accepted", **stats)
    assert not store.add_rollout(exp, 3, "ranker", {"lr": 1.0}, "rejected", **stats)
    assert store.add_rollout(exp, 3, "fusion", {}, "accepted", **stats)
    assert [(r.agent, r.decision) for r in store.rollouts(exp)] == [("ranker", "accepted"), ("fusion", "accepted")]
    assert store.add_shift(exp, 1, "topic_shock")
    assert not store.add_shift(exp, 1, "topic_shock", detected_at_step=9)
    assert store.add_shift(exp, 1, "catalog_refresh")
    assert len(store.shifts(exp)) == 2


# --------------------------------------------------------------------------- resume


def test_start_experiment_resumes_only_the_same_unfinished_run(
    store: KnowledgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    exp = store.start_experiment("run", CONFIG, seed=1)
    # JSON-equal configs: key order, tuples and numpy scalars do not matter
    same = {"optimizer": {"beta": np.float64(0.9), "name": "adam"}, "layers": (64, 32), "lr": 0.01}
    assert store.start_experiment("run", same, seed=1) == exp
    assert store.start_experiment("run", CONFIG, seed=1, resume=False) not in (exp, None)
    assert store.start_experiment("run", CONFIG, seed=2) != exp  # another seed is another run

    with caplog.at_level(logging.WARNING, logger="agents.infra.store"):
        changed = store.start_experiment("run", {**CONFIG, "lr": 0.02}, seed=1)
    assert changed != exp
    assert "different config or seed" in caplog.text

    # the most recent running match is resumed; once finished, none is
    latest = max(e.id for e in store.experiments("run") if e.config == CONFIG and e.seed == 1)
    assert store.start_experiment("run", CONFIG, seed=1) == latest
    for e in store.experiments("run"):
        store.finish_experiment(e.id)
    fresh = store.start_experiment("run", CONFIG, seed=1)
    assert fresh not in {e.id for e in store.experiments("run")[:-1]}
    assert store.experiment(fresh).status == "running" and store.experiment(exp).status == "finished"

    store.finish_experiment(fresh, status="failed")  # a failed run is not resumed either
    assert store.start_experiment("run", CONFIG, seed=1) != fresh
    assert store.experiment(fresh).status == "failed"


def test_a_run_resumes_only_the_experiment_of_its_own_folder(store: KnowledgeStore) -> None:
    a = store.start_experiment("shared", CONFIG, seed=0, run_dir="/runs/a")
    assert store.start_experiment("shared", CONFIG, seed=0, run_dir="/runs/a") == a
    b = store.start_experiment("shared", CONFIG, seed=0, run_dir="/runs/b")  # another folder: a replicate
    assert b != a and store.start_experiment("shared", CONFIG, seed=0) not in (a, b)
    store.finish_experiment(a)
    assert store.find_experiment("shared", CONFIG, 0, run_dir="/runs/a") == a
    assert store.find_experiment("shared", CONFIG, 0, run_dir="/runs/b") is None  # b is still running
    assert store.find_experiment("shared", CONFIG, 0, "running", run_dir="/runs/b") == b
    assert [e.run_dir for e in store.experiments("shared")] == ["/runs/a", "/runs/b", None]


def test_loop_resumes_from_last_step(store: KnowledgeStore) -> None:
    exp = store.start_experiment("loop", {}, seed=0)
    assert store.last_step(exp) == -1 and store.completed_steps(exp) == set()
    for step in range(store.last_step(exp) + 1, 5):
        add(store, exp, step)
    exp_again = store.start_experiment("loop", {}, seed=0)
    assert exp_again == exp
    written = [add(store, exp, step) for step in range(store.last_step(exp) + 1, 8)]
    assert written == [True, True, True]
    assert [t.step for t in store.trials(exp)] == list(range(8))


# --------------------------------------------------------------------------- warm starts


def test_similar_trials_are_the_best_rewards_among_the_nearest_regimes(store: KnowledgeStore) -> None:
    past = store.start_experiment("past", {}, seed=0)
    current = store.start_experiment("current", {}, seed=0)
    # regime -> reward, agent "ranker"; the query is the origin
    add(store, past, 0, reward=0.1, regime=[0.0, 0.0])  # A: distance 0.0
    add(store, past, 1, reward=0.9, regime=[0.1, 0.0])  # B: distance 0.1
    add(store, past, 2, reward=0.5, regime=[0.0, 0.2])  # C: distance 0.2
    add(store, past, 3, reward=5.0, regime=[3.0, 4.0])  # D: distance 5.0, the best reward but far away
    add(store, current, 0, reward=0.2, regime=[0.05, 0.0])  # E: distance 0.05, in the current experiment
    add(store, past, 4, reward=9.0, regime=[0.0, 0.0], agent="fusion")  # another agent: never returned

    def steps(result: list[Neighbour]) -> list[tuple[int, int]]:
        return [(n.trial.experiment_id, n.trial.step) for n in result]

    # pool of the 3 nearest outside the current run: A, B, C -> best 2: B (0.9), C (0.5) -> nearest first
    result = store.similar_trials("ranker", [0.0, 0.0], k=2, exclude_experiment=current, pool=3)
    assert steps(result) == [(past, 1), (past, 2)]
    assert [n.distance for n in result] == pytest.approx([0.1, 0.2])
    # with the current run: pool A, E, B -> best 2: B (0.9), E (0.2) -> nearest first: E, B
    assert steps(store.similar_trials("ranker", [0.0, 0.0], k=2, pool=3)) == [(current, 0), (past, 1)]
    # a pool wide enough to reach D: best 2 are D (5.0) and B (0.9), still nearest first
    assert steps(store.similar_trials("ranker", [0.0, 0.0], k=2, exclude_experiment=current, pool=4)) == [
        (past, 1),
        (past, 3),
    ]
    # default pool is 3 * k: k=1 -> pool A, E, B -> B
    assert steps(store.similar_trials("ranker", np.zeros(2), k=1)) == [(past, 1)]
    # k larger than the history returns everything, nearest first
    assert steps(store.similar_trials("ranker", [0.0, 0.0], k=10, exclude_experiment=current)) == [
        (past, 0), (past, 1), (past, 2), (past, 3),
    ]
    assert store.similar_trials("nobody", [0.0, 0.0]) == []


def test_similar_trials_skips_regimes_of_another_length(
    store: KnowledgeStore, caplog: pytest.LogCaptureFixture
) -> None:
    exp = store.start_experiment("dims", {}, seed=0)
    add(store, exp, 0, regime=[0.0, 0.0, 0.0])
    add(store, exp, 1, regime=[0.0, 0.0])
    with caplog.at_level(logging.WARNING, logger="agents.infra.store"):
        result = store.similar_trials("ranker", [0.0, 0.0])
    assert [n.trial.step for n in result] == [1]
    assert "skipped 1 trial" in caplog.text


# --------------------------------------------------------------------------- bad input


class Opaque:
    """Not JSON-serialisable."""


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"step": -1}, "`step` must be in [0, inf) (got -1)"),
        ({"step": 1.5}, "`step` must be an integer (got float 1.5)"),
        ({"reward": float("nan")}, "`reward` must be a finite number (got nan)"),
        ({"reward": float("inf")}, "`reward` must be a finite number (got inf)"),
        ({"reward": "high"}, "`reward` must be a finite number (got str 'high')"),
        ({"config": {"model": Opaque()}}, "`config.model` must be JSON-serialisable: dicts with string keys"),
        (
            {"config": {"ids": {1, 2}}},
            "`config.ids` must be JSON-serialisable: dicts with string keys, lists, str, int, float, bool, None, "
            "numpy scalars/arrays or dataclasses (got set {1, 2})",
        ),
        ({"config": {"lr": float("nan")}}, "`config.lr` must be a finite number: JSON has no NaN or infinity (got nan)"),
        ({"config": {(1, 2): 3}}, "`config` keys must be strings or integers (got tuple key (1, 2))"),
        ({"config": [1, 2]}, "`config` must be a dict (got list [1, 2])"),
        ({"inner": {"x": Opaque()}}, "`inner.x` must be JSON-serialisable"),
        ({"regime": [0.1, float("nan")]}, "`regime` must be a non-empty 1-D list of finite floats (got [0.1, nan])"),
        ({"regime": []}, "`regime` must be a non-empty 1-D list of finite floats (got [])"),
        ({"regime": [[0.1], [0.2]]}, "`regime` must be a non-empty 1-D list of finite floats"),
        ({"agent": ""}, "`agent` must be a non-empty string of at most 200 characters (got str '')"),
    ],
)
def test_bad_trials_are_rejected_before_any_write(store: KnowledgeStore, kwargs: dict[str, Any], pattern: str) -> None:
    exp = store.start_experiment("bad", {}, seed=0)
    kwargs = dict(kwargs)  # the parameters are shared by both backends' runs
    step = kwargs.pop("step", 0)
    with pytest.raises(ConfigError, match=re.escape(pattern)):
        add(store, exp, step, **kwargs)
    assert store.trials() == []


def test_unknown_experiment_table_and_choices_are_rejected(store: KnowledgeStore) -> None:
    with pytest.raises(ConfigError, match=re.escape("`exp_id` must be the id of an existing experiment (got 42)")):
        add(store, 42, 0)
    with pytest.raises(ConfigError, match=re.escape("`exp_id` must be in [1, inf) (got 0)")):
        add(store, 0, 0)
    assert store.trials() == []
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "`table` must be one of ['experiments', 'trials', 'rollouts', 'shifts', 'designs'] (got 'trial'); "
            "did you mean 'trials'?"
        ),
    ):
        store.to_frame("trial")
    exp = store.start_experiment("choices", {}, seed=0)
    with pytest.raises(ConfigError, match=re.escape("`status` must be one of ['finished', 'failed'] (got 'done')")):
        store.finish_experiment(exp, status="done")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=re.escape("`exp_id` must be the id of an existing experiment (got 99)")):
        store.finish_experiment(99)
    with pytest.raises(ConfigError, match=re.escape("`seed` must be in [0, 9223372036854775807] (got -1)")):
        store.start_experiment("choices", {}, seed=-1)
    with pytest.raises(ConfigError, match=re.escape("`name` must be a non-empty string")):
        store.start_experiment("", {}, seed=0)
    with pytest.raises(ConfigError, match=re.escape("`config.f` must be JSON-serialisable")):
        store.start_experiment("choices", {"f": print}, seed=0)
    assert len(store.experiments()) == 1


def test_bad_rollouts_shifts_and_designs_are_rejected(store: KnowledgeStore) -> None:
    exp = store.start_experiment("bad", {}, seed=0)
    stats = STATS
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"decision": "accept"},
            "`decision` must be one of ['accepted', 'rejected'] (got 'accept'); did you mean 'accepted'?",
        ),
        ({"p_value": 1.5}, "`p_value` must be in [0.0, 1.0] (got 1.5)"),
        ({"ci_low": 0.3, "ci_high": 0.1}, "`ci_low` must be <= `ci_high` (got 0.3 > 0.1)"),
        ({"n_candidate": -2}, "`n_candidate` must be in [0, inf) (got -2)"),
        ({"reasons": "too small"}, "`reasons` must be a list of strings (got str 'too small')"),
        ({"reasons": ["ok", 3]}, "`reasons` must be a list of strings (got ['ok', 3])"),
    ]
    for override, message in cases:
        args = {**stats, "decision": "accepted", **override}
        decision = args.pop("decision")
        with pytest.raises(ConfigError, match=re.escape(message)):
            store.add_rollout(exp, 0, "ranker", {}, decision, **args)
    assert store.rollouts() == []
    with pytest.raises(ConfigError, match=re.escape("`day` must be in [0, inf) (got -1)")):
        store.add_shift(exp, -1, "topic_shock")
    with pytest.raises(ConfigError, match=re.escape("`detected_at_step` must be an integer (got str 'soon')")):
        store.add_shift(exp, 1, "topic_shock", detected_at_step="soon")  # type: ignore[arg-type]
    assert store.shifts() == []
    with pytest.raises(ConfigError, match=re.escape("`valid` must be a bool (got str 'yes')")):
        store.add_design(exp, "ranker", {}, "why", "constrained", "yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=re.escape("`document.model` must be JSON-serialisable")):
        store.add_design(exp, "ranker", {"model": Opaque()}, "why", "constrained", True)
    with pytest.raises(ConfigError, match=re.escape("`exp_id` must be the id of an existing experiment (got 7)")):
        store.add_design(7, "ranker", {}, "why", "constrained", True)
    assert store.designs() == []


def test_similar_trials_checks_its_arguments(store: KnowledgeStore) -> None:
    with pytest.raises(ConfigError, match=re.escape("`k` must be in [1, inf) (got 0)")):
        store.similar_trials("ranker", [0.0], k=0)
    with pytest.raises(ConfigError, match=re.escape("`pool` must be in [5, inf) (got 2)")):
        store.similar_trials("ranker", [0.0], k=5, pool=2)
    with pytest.raises(ConfigError, match=re.escape("`regime` must be a non-empty 1-D list of finite floats")):
        store.similar_trials("ranker", [float("inf")])


# --------------------------------------------------------------------------- URLs


def test_in_memory_url_is_one_private_database() -> None:
    with KnowledgeStore("sqlite://") as a, KnowledgeStore("sqlite://") as b:
        exp = a.start_experiment("memory", CONFIG, seed=0)
        assert add(a, exp, 0, reward=0.5) and not add(a, exp, 0)
        assert a.add_shift(exp, 1, "topic_shock")
        assert a.add_design(exp, "ranker", {}, "why", "retried", True) == 1
        assert [t.reward for t in a.trials(exp)] == [0.5]
        assert a.start_experiment("memory", CONFIG, seed=0) == exp
        assert b.experiments() == [] and b.trials() == []  # each in-memory store is its own database
        assert len(a.to_frame("shifts")) == 1
    with pytest.raises(RuntimeError, match="is closed"):
        a.trials()


def test_a_plain_path_is_a_sqlite_file_and_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "nested" / "store.db"
    with KnowledgeStore(path) as s:
        exp = s.start_experiment("path", {}, seed=0)
        add(s, exp, 0)
    assert path.is_file()
    with KnowledgeStore(f"sqlite:///{path}") as s:
        assert len(s.trials()) == 1
    with KnowledgeStore(str(path)) as s:
        assert "store.db" in repr(s) and len(s.trials()) == 1


def test_concurrent_writers_store_each_step_once(store_url: str) -> None:
    url = store_url
    with KnowledgeStore(url) as first:
        exp = first.start_experiment("race", {}, seed=0)
    results: list[list[bool]] = [[], []]

    def write(slot: int) -> None:
        with KnowledgeStore(url) as s:  # its own engine and connections, like another process
            results[slot] = [add(s, exp, step, reward=float(step)) for step in range(40)]

    threads = [threading.Thread(target=write, args=(slot,)) for slot in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    written = np.array(results)  # (2, 40): which writer stored each step
    assert written.shape == (2, 40) and (written.sum(axis=0) == 1).all()  # exactly one writer won each step
    with KnowledgeStore(url) as s:
        assert [(t.step, t.reward) for t in s.trials(exp)] == [(step, float(step)) for step in range(40)]
