"""Test-suite set-up: a non-interactive matplotlib backend, the registered env ids, SB3's default log folder
inside the session's temporary directory (a model built without a logger of its own makes a folder there), and
the heaviest test files first."""

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


# The files that took longest in a full run on 2 cores (`make test --durations`, 2026-11-30: the smoke suite 205 s, the
# known-optimum searches 200 + 107 + 71 s, the sentinel's false-alarm rate 140 s, ...). `make test` sends whole files
# to its 2 workers (`--dist loadfile --no-loadscope-reorder`) in collection order: starting with these, the long
# ones run side by side and the short files fill in after them, instead of one long file ending the run alone.
HEAVY_FIRST = (
    "tests/experiments/test_ablations.py",
    "tests/agents/evolution/test_known_optimum.py",
    "tests/agents/evolution/test_sentinel.py",
    "tests/agents/evolution/test_composition.py",
    "tests/agents/test_heterogeneity_pays.py",
    "tests/agents/evolution/test_llm.py",
    "tests/experiments/test_run.py",
    "tests/experiments/test_cli_errors.py",
)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the files of :data:`HEAVY_FIRST` first, in that order; every other file, and the tests inside each file, keep
    their order (a stable sort: module fixtures and in-file order are unchanged)."""
    rank = {path: i for i, path in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
