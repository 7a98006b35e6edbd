"""Acceptance: a run killed with SIGKILL keeps every trial it committed and, rerun, finishes every step exactly once;
a writer killed inside a transaction leaves nothing of it and does not block the next writer. On SQLite and
PostgreSQL."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.infra.store import KnowledgeStore

REPO_ROOT = Path(__file__).resolve().parents[3]  # tests/agents/infra/<this file> -> repository root
STEPS = 200
KILL_AFTER = 30  # trials committed before the kill

# The worker: open the store, start or resume "kill-test", run the remaining steps, finish.
# Each step does a few milliseconds of numpy work and commits one trial whose reward depends only on the step.
WORKER = f'''
import math
import sys

import numpy as np

from agents.infra.store import KnowledgeStore

STEPS = {STEPS}

with KnowledgeStore(sys.argv[1]) as store:
    exp = store.start_experiment("kill-test", {{"steps": STEPS, "agent": "ranker"}}, seed=7)
    print(f"experiment {{exp}}", flush=True)
    for step in range(store.last_step(exp) + 1, STEPS):
        a = np.random.default_rng(step).standard_normal((160, 160))
        top = float(np.linalg.eigvalsh(a + a.T)[-1])
        reward = math.sin(step) + step / STEPS
        store.add_trial(
            exp, step, "ranker", "evolution", {{"lr": 0.01}}, [step / STEPS, 0.5],
            {{"eig_max": top}}, {{"engagement": reward}}, reward,
        )
    store.finish_experiment(exp)
'''


def expected_reward(step: int) -> float:
    return math.sin(step) + step / STEPS


def start_worker(script: Path, url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, str(script), url],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_killed_run_keeps_its_trials_and_resumes_exactly_once(tmp_path: Path, store_url: str) -> None:
    url = store_url
    script = tmp_path / "worker.py"
    script.write_text(WORKER)

    with KnowledgeStore(url) as reader:  # a separate connection; creates the schema before the worker starts
        proc = start_worker(script, url)
        deadline = time.monotonic() + 15.0
        written = 0
        while written < KILL_AFTER:
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"worker exited with {proc.returncode} after {written} trials before the kill:\n{err}")
            if time.monotonic() > deadline:
                proc.kill()
                proc.communicate()
                pytest.fail(f"worker wrote only {written} trials in 15 s")
            written = len(reader.trials(agent="ranker"))
            time.sleep(0.005)
        proc.kill()
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        (first_line,) = out.splitlines()
        exp = int(first_line.removeprefix("experiment "))

        # what was committed before the kill is intact: steps 0..n-1, no gaps, right rewards, run still open
        trials = reader.trials(exp)
        n = len(trials)
        assert KILL_AFTER <= n < STEPS, "the kill must land mid-run"
        assert [t.step for t in trials] == list(range(n))
        assert [t.reward for t in trials] == [expected_reward(s) for s in range(n)]
        assert reader.last_step(exp) == n - 1
        assert reader.experiment(exp).status == "running"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    # rerun: resumes the same experiment from step n and finishes it
    proc = start_worker(script, url)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == f"experiment {exp}"

    with KnowledgeStore(url) as store:
        frame = store.to_frame("trials")
        assert len(frame) == STEPS
        assert sorted(frame["step"]) == list(range(STEPS))  # every step exactly once
        assert (frame["experiment_id"] == exp).all()
        trials = store.trials(exp)
        assert [t.reward for t in trials] == [expected_reward(s) for s in range(STEPS)]
        assert [t.outer["engagement"] for t in trials] == [expected_reward(s) for s in range(STEPS)]
        (run,) = store.experiments("kill-test")
        assert (run.id, run.status) == (exp, "finished")


# A writer that inserts 50 trials inside one transaction, says so, and waits (to be killed before it commits).
HALF_WRITER = """
import sys
import time

from agents.infra.store import METADATA, KnowledgeStore

with KnowledgeStore(sys.argv[1]) as store, store.engine.connect() as connection:
    trials = METADATA.tables["trials"]
    rows = [{"experiment_id": int(sys.argv[2]), "step": 1000 + i, "agent": "ranker", "controller": "killed",
             "config": {}, "regime": [0.0], "regime_key": "0.0", "inner": {}, "outer": {}, "reward": 0.0}
            for i in range(50)]
    connection.execute(trials.insert(), rows)  # inside the open transaction: holds the write lock
    print("inserted", flush=True)
    time.sleep(60)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_writer_killed_mid_transaction_leaves_nothing_and_blocks_no_one(tmp_path: Path, store_url: str) -> None:
    script = tmp_path / "half_writer.py"
    script.write_text(HALF_WRITER)
    with KnowledgeStore(store_url, busy_timeout_s=20) as store:
        exp = store.start_experiment("half-written", {}, seed=0)
        store.add_trial(exp, 0, "ranker", "evolution", {}, [0.0], {}, {}, 1.0)
        proc = subprocess.Popen([sys.executable, str(script), store_url, str(exp)], cwd=REPO_ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "inserted":
            proc.kill()
            pytest.fail(f"the writer did not reach its open transaction: {proc.communicate()[1]}")
        proc.kill()
        proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        # a lock the dead writer still held would make this wait out the 20 s busy timeout and raise
        assert store.add_trial(exp, 1, "ranker", "evolution", {}, [0.0], {}, {}, 2.0)
        assert [(t.step, t.controller) for t in store.trials(exp)] == [(0, "evolution"), (1, "evolution")]
