"""Resume is idempotent when a run is killed at any phase boundary (SIGKILL, nothing cleaned up).

For each boundary of :data:`experiments.run.PHASES` (the first and a middle ``window``), a forked child runs
the experiment and kills itself with SIGKILL right after that phase committed; the parent then runs the
documented resume (the same config, run dir and store). Whatever the kill point: the store holds one
experiment for the run, finished, with every window exactly once and the rewards of an uninterrupted run;
``summary.json`` and ``metrics.csv`` are whole and equal the uninterrupted run's (same machine, same seed:
bit-identical).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch

from agents.infra.store import KnowledgeStore
from experiments.run import PHASES, run

pytestmark = pytest.mark.slow

WINDOWS = 3
OVERRIDES = {"name": "resume", "seed": 2, "controller": {"name": "random"},
             "evolution": {"windows": WINDOWS, "window": 100, "concurrency": 50},
             "logger": {"wandb": {"enabled": False}, "tensorboard": {"enabled": False}, "progress": False,
                        "plots": False}}  # figures cost seconds per run; the phase boundary is the same
KILL_POINTS = [(p, 1) for p in PHASES if p != "window"] + [("window", 1), ("window", 2)]
VOLATILE = ("seconds", "out_dir", "experiment_id")  # wall time, the run dir and its experiment in the shared store differ


def config():
    from omegaconf import OmegaConf

    from experiments.config import ExperimentConfig

    return OmegaConf.merge(OmegaConf.structured(ExperimentConfig), OVERRIDES)


def killed_at(phase: str, nth: int):
    seen = {"n": 0}

    def hook(name: str) -> None:
        if name == phase:
            seen["n"] += 1
            if seen["n"] == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


def child(out: str, phase: str, nth: int) -> None:
    torch.set_num_threads(1)
    run(config(), out_dir=out, on_phase=killed_at(phase, nth))


def kill_then_resume(out: Path, phase: str, nth: int) -> dict:
    proc = multiprocessing.get_context("fork").Process(target=child, args=(str(out), phase, nth))
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL, (phase, nth, proc.exitcode)  # it really died at that point
    return run(config(), out_dir=out)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference")
    summary = run(config(), out_dir=out)
    return summary, pd.read_csv(out / "metrics.csv"), out


@pytest.mark.parametrize("phase,nth", KILL_POINTS, ids=[f"{p}{n if p == 'window' else ''}" for p, n in KILL_POINTS])
def test_resume_after_a_kill_at_each_phase_is_idempotent(tmp_path, monkeypatch, reference, phase, nth):
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    ref_summary, ref_frame, _ = reference
    summary = kill_then_resume(tmp_path, phase, nth)

    with KnowledgeStore(os.environ["AGENTIC_RS_STORE"]) as store:
        experiments = [e for e in store.experiments("resume/random") if e.run_dir == str(tmp_path.resolve())]
        assert [e.status for e in experiments] == ["finished"], experiments  # one experiment, never a second
        trials = store.trials(experiments[0].id)
    assert sorted(t.step for t in trials) == list(range(WINDOWS))  # every window exactly once
    assert [t.reward for t in sorted(trials, key=lambda t: t.step)] == ref_frame["reward"].tolist()

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert {k: v for k, v in summary.items() if k not in VOLATILE} == \
        {k: v for k, v in ref_summary.items() if k not in VOLATILE}
    frame = pd.read_csv(tmp_path / "metrics.csv")
    pd.testing.assert_frame_equal(frame.drop(columns="time_s"), ref_frame.drop(columns="time_s"))
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written file left behind


def test_a_second_run_of_a_finished_experiment_adds_nothing(tmp_path, reference):
    first = run(config(), out_dir=tmp_path)
    again = run(config(), out_dir=tmp_path)
    with KnowledgeStore(os.environ["AGENTIC_RS_STORE"]) as store:
        (experiment,) = [e for e in store.experiments("resume/random") if e.run_dir == str(tmp_path.resolve())]
        assert len(store.trials(experiment.id)) == WINDOWS
    assert {k: v for k, v in first.items() if k not in VOLATILE} == {k: v for k, v in again.items() if k not in VOLATILE}
