"""Test-suite set-up: a non-interactive matplotlib backend, the registered env ids, SB3's default log folder
inside the session's temporary directory (a model built without a logger of its own makes a folder there), the
shared knowledge store in the session's temporary directory (never the user's), a throwaway PostgreSQL server for
the store tests that run on both backends, and the heaviest test files first."""

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(autouse=True, scope="session")
def _shared_store(tmp_path_factory: pytest.TempPathFactory):
    """Runs write to the shared knowledge store (``$AGENTIC_RS_STORE``, else a file in the user's data folder): here
    one file per test worker in its temporary directory, set before any test starts a worker process."""
    before = os.environ.get("AGENTIC_RS_STORE")
    os.environ["AGENTIC_RS_STORE"] = f"sqlite:///{tmp_path_factory.mktemp('knowledge') / 'knowledge.db'}"
    yield
    if before is None:
        os.environ.pop("AGENTIC_RS_STORE", None)
    else:
        os.environ["AGENTIC_RS_STORE"] = before


def _postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl), or None when it is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Path]:
    """A throwaway PostgreSQL server listening only on a Unix socket in a temporary folder (yielded), trusting local
    connections, stopped and removed at the end. Run as the ``postgres`` user when the tests run as root (CI), since
    the server refuses to run as root. Skipped, saying why, where PostgreSQL or psycopg is not installed."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql/*/bin): "
                    "`apt-get install postgresql` runs these store tests on it too")
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install 'psycopg[binary]')")
    root = Path(tempfile.mkdtemp(prefix="agentic-rs-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, text=True)
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "server.log"),
                        "-o", f"-k {root} -c listen_addresses='' -F", "start"], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as error:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL from {bin_dir}: {error.stderr or error.stdout}")
    try:
        yield root
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def postgres_database(server: Path) -> str:
    """A new, empty database on ``server``: its SQLAlchemy URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(f"host={server} user=postgres dbname=postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://postgres@/{name}?host={server}"


@pytest.fixture
def postgres_url(postgres_server: Path) -> str:
    """A new, empty database on the session's PostgreSQL server (skipped where there is none)."""
    return postgres_database(postgres_server)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty knowledge store's URL on each backend: a SQLite file, a database of the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


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
    "tests/experiments/test_calibrate.py",  # fit -> simulate -> refit: ~50 s
    "tests/experiments/test_ope_benchmark.py",
)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the files of :data:`HEAVY_FIRST` first, in that order; every other file, and the tests inside each file, keep
    their order (a stable sort: module fixtures and in-file order are unchanged)."""
    rank = {path: i for i, path in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
