"""The Ray launcher (the `ray` extra): a multirun sweep through a local Ray instance started by the launcher."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest


@pytest.fixture
def ray_env(tmp_path):
    """The environment of the CLI: wandb offline, every home/config dir under tmp_path, Ray's files in a fresh temp dir.

    Ray's session dir holds AF_UNIX sockets (at most 107 bytes of path), too long under pytest's tmp_path, so it
    goes to a short dir of the system temp dir that is removed afterwards. HOME is tmp_path/home: a local Ray
    writes its auth token to ~/.ray. RAY_ADDRESS is dropped so that Ray starts locally, whatever the shell has.
    """
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update({"HOME": str(tmp_path / "home"), "RAY_TMPDIR": str(ray_tmp), "WANDB_MODE": "offline",
                "WANDB_DIR": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
                "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
                "MPLCONFIGDIR": str(tmp_path / "mpl"), "MPLBACKEND": "Agg"})
    (tmp_path / "home").mkdir()
    yield env, ray_tmp
    for pid in _ray_processes(ray_tmp):  # only if the driver died without shutting Ray down
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _ray_processes(ray_tmp: Path) -> list[int]:
    """Pids of the processes whose command line names this test's Ray temp dir (the Ray node it started)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(ray_tmp).encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


@pytest.mark.slow
def test_ray_launcher_runs_the_sweep_on_a_local_ray_instance(tmp_path, ray_env):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    env, ray_tmp = ray_env
    sweep = tmp_path / "multirun"
    proc = subprocess.run([sys.executable, "-m", "experiments.run", "-m", "experiment=smoke", "hydra/launcher=ray_cluster",
                           "controller=static", "seed=0,1", "evolution.windows=2", "logger=csv", "logger.plots=false",
                           "logger.progress=false", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    out = proc.stdout + proc.stderr
    assert "Ray Launcher is launching 2 jobs" in out, out[-3000:]
    assert len(list((ray_tmp / "ray").glob("session_2*"))) == 1  # one local Ray node, under RAY_TMPDIR
    for job in ("0-static-s0", "1-static-s1"):
        assert len(pd.read_csv(sweep / job / "metrics.csv")) == 2

    deadline = time.monotonic() + 20  # ray.shutdown at the driver's exit stops the node's processes
    while _ray_processes(ray_tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _ray_processes(ray_tmp)
