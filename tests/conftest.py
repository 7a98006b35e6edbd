"""Test-suite set-up: a non-interactive matplotlib backend, the registered env ids, and SB3's default log folder
inside the session's temporary directory (a model built without a logger of its own makes a folder there)."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

import envs  # noqa: E402,F401  (registers the agentic-rs/* ids)


@pytest.fixture(autouse=True, scope="session")
def _sb3_logdir(tmp_path_factory: pytest.TempPathFactory):
    """SB3 (``configure_logger``) otherwise leaves an empty ``SB3-<time>`` folder in the system's temp dir per model."""
    before = os.environ.get("SB3_LOGDIR")
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3"))
    yield
    if before is None:
        os.environ.pop("SB3_LOGDIR", None)
    else:
        os.environ["SB3_LOGDIR"] = before
