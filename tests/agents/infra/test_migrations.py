"""Schema migrations of the knowledge store (Alembic): the head revision equals the models, an old store is upgraded
with its rows intact, concurrent first openings migrate once, a newer store is refused. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from agents.infra.store import METADATA, MIGRATIONS, KnowledgeStore, head_revision
from envs.validation import ConfigError


def alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def test_the_head_revision_is_exactly_the_models(store_url: str) -> None:
    with KnowledgeStore(store_url) as store:
        assert store.revision == head_revision() == "0002"
        with store.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), METADATA)
    assert diff == [], f"the models and the migrations differ: write a revision for {diff}"


def test_a_store_from_before_migrations_is_stamped_upgraded_and_keeps_its_rows(store_url: str) -> None:
    engine = sa.create_engine(store_url)
    with engine.connect() as connection:  # the first revision's tables, as create_all made them, and no version table
        command.upgrade(alembic_config(connection), "0001")
        connection.execute(sa.text("DROP TABLE alembic_version"))
        connection.execute(sa.text("INSERT INTO experiments (name, config, seed, status, created_at) "
                                   "VALUES ('old', '{\"lr\": 0.1}', 4, 'finished', CURRENT_TIMESTAMP)"))
        connection.commit()
        assert "run_dir" not in {c["name"] for c in sa.inspect(connection).get_columns("experiments")}
    engine.dispose()
    with KnowledgeStore(store_url) as store:
        assert store.revision == head_revision()
        (old,) = store.experiments()
        assert (old.name, old.config, old.seed, old.status, old.run_dir) == ("old", {"lr": 0.1}, 4, "finished", None)
        assert store.add_trial(old.id, 0, "ranker", "evolution", {}, [0.0], {}, {}, 1.0)


def test_downgrade_and_upgrade_round_trip(store_url: str) -> None:
    with KnowledgeStore(store_url) as store:
        exp = store.start_experiment("kept", {}, seed=0, run_dir="/runs/x")
        with store.engine.connect() as connection:
            command.downgrade(alembic_config(connection), "0001")
            connection.commit()
            assert "run_dir" not in {c["name"] for c in sa.inspect(connection).get_columns("experiments")}
    with KnowledgeStore(store_url) as store:  # reopening upgrades again; the column's values are gone, the rows not
        assert [(e.id, e.run_dir) for e in store.experiments()] == [(exp, None)]


def test_a_store_migrated_by_newer_code_is_refused(store_url: str) -> None:
    with KnowledgeStore(store_url) as store, store.engine.connect() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        connection.commit()
    with pytest.raises(ConfigError, match=re.escape("schema revision '9999', which this code does not know")):
        KnowledgeStore(store_url)


def test_concurrent_first_openings_migrate_once(store_url: str) -> None:
    revisions: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_store() -> None:
        try:
            barrier.wait()
            with KnowledgeStore(store_url) as store:  # each its own engine and connections, as another process
                revisions.append(store.revision)
                store.start_experiment("opened", {}, seed=0, resume=False)
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and revisions == [head_revision()] * 4
    with KnowledgeStore(store_url) as store, store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).all() == [(head_revision(),)]
        assert len(store.experiments("opened")) == 4


def test_opening_a_sqlite_file_store_waits_for_the_opening_lock(tmp_path) -> None:
    """The first open of a new SQLite file switches it to WAL and migrates it; of processes doing that at once, one
    could get `database is locked` at once (SQLite skips the busy handler where waiting could deadlock; 1 of 68
    simultaneous starts of 4-8 processes). Opening is serialised by a flock on `<database>-open.lock`: while another
    holder has it, an open does not touch the database."""
    fcntl = pytest.importorskip("fcntl")
    path = tmp_path / "knowledge.db"
    opened = threading.Event()

    def open_store() -> None:
        with KnowledgeStore(path):
            opened.set()

    with open(tmp_path / "knowledge.db-open.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # another process opening the store
        thread = threading.Thread(target=open_store)
        thread.start()
        assert not opened.wait(1.0) and not path.exists()  # waiting: nothing created, nothing migrated
        fcntl.flock(handle, fcntl.LOCK_UN)
    thread.join(30)
    assert opened.is_set()
    with KnowledgeStore(path) as store:
        assert store.revision == head_revision()
