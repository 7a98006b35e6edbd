"""The knowledge store: experiments, trials, rollouts, shifts and designs in an embedded SQL database.

One :class:`KnowledgeStore` wraps a SQLAlchemy 2 engine. The default is a SQLite file (a path, or
``sqlite:///<path>``); any SQLAlchemy URL works, since the schema uses only portable column types
(Integer, Float, String, Text, JSON, DateTime, Boolean). On SQLite every connection gets
``journal_mode=WAL`` (readers do not block the writer), ``foreign_keys=ON`` and a busy timeout.

Tables:

* ``experiments``: one row per run (name, config, seed, status ``running``/``finished``/``failed``);
* ``trials``: one row per (experiment, step): the agent, its controller and config, the data regime
  (a fixed-size vector of floats and a coarse :func:`regime_key`), inner and outer metrics, the reward;
* ``rollouts``: gated rollout decisions (candidate config, accepted/rejected, effect with its CI,
  p-value, sample sizes, reasons), one per (experiment, step, agent);
* ``shifts``: distribution shifts (day, kind, the step at which one was detected), one per
  (experiment, day, kind);
* ``designs``: documents proposed for an agent (e.g. by the LLM designer) with their rationale, how
  they were obtained (``route``), whether they were valid, the error and the reward they earned.

Durability and resume. Every ``add_*`` is one transaction: a killed process loses nothing it
committed and leaves no partial row. ``trials`` is unique on ``(experiment_id, step)``:
:meth:`KnowledgeStore.add_trial` of a step that is already stored writes nothing and returns
``False``, so a resumed loop ``for step in range(store.last_step(exp) + 1, n)`` (or one that skips
``store.completed_steps(exp)``) writes every step exactly once. ``rollouts`` and ``shifts`` are
idempotent the same way on their natural keys. :meth:`KnowledgeStore.start_experiment` with
``resume=True`` returns the still-``running`` experiment of the same name, config and seed.

Values. JSON columns hold plain Python only: numpy scalars and arrays, tuples and dataclass
instances are converted (:func:`_plain`); anything else (sets, arbitrary objects) is a
:class:`~envs.validation.ConfigError`. Inputs (``config``, ``candidate_config``, ``regime``) must be
finite. Observations (``inner``/``outer`` metrics, rollout statistics, design documents and design
rewards) may not be: NaN and +-inf there are stored as ``None`` (JSON ``null`` / SQL ``NULL``),
since JSON has no NaN. Dict keys must be strings; integer keys are stored as their decimal string
(as ``json.dumps`` would). Timestamps are UTC and read back timezone-aware.

Bad input (negative step, non-finite reward, a config that is not JSON-serialisable, an unknown
table or experiment, ...) raises :class:`~envs.validation.ConfigError` naming the key, the allowed
values and the value given, before anything is written.

Long-term memory. One store is meant to be shared by every run and experiment of a user (and by concurrent runs
of a sweep): :func:`default_store_url` is ``$AGENTIC_RS_STORE`` when set, else a SQLite file in the per-user
data directory (``$XDG_DATA_HOME/agentic-rs/knowledge.db``, i.e. ``~/.local/share/agentic-rs/knowledge.db`` on
Linux; ``~/Library/Application Support/agentic-rs`` on macOS; ``%LOCALAPPDATA%\\agentic-rs`` on Windows). Every
experiment registers itself (name, config, seed, status, the folder it ran in); search arms warm-start from the
trials of other experiments in similar regimes (:meth:`KnowledgeStore.similar_trials`). PostgreSQL
(``postgresql+psycopg://user@host/db``) serves many machines at once.

Migrations. The schema is versioned with Alembic (``agents/infra/migrations``): opening a store brings it to the
head revision inside one transaction that holds the database's write lock (SQLite ``BEGIN IMMEDIATE``, a
PostgreSQL advisory lock), so concurrent runs that open a new store at once migrate it exactly once. A store
created before migrations existed is stamped with the first revision and upgraded. A store whose revision is
newer than this code's is refused with a message (upgrade the code rather than guess).

The in-memory URL ``sqlite://`` is one connection (a ``StaticPool``) shared by the store's sessions:
it cannot be shared with another store or process, and it is gone after :meth:`KnowledgeStore.close`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import reprlib
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

import numpy as np
import pandas as pd
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from envs.validation import ConfigError, check_choice, check_int, check_probability

__all__ = [
    "DECISIONS",
    "EXPERIMENT_STATUSES",
    "METADATA",
    "STORE_ENV",
    "TABLES",
    "Design",
    "Experiment",
    "KnowledgeStore",
    "Neighbour",
    "Rollout",
    "Shift",
    "Trial",
    "default_store_url",
    "head_revision",
    "migrate",
    "regime_key",
    "store_location",
    "user_data_dir",
]

log = logging.getLogger(__name__)

EXPERIMENT_STATUSES: tuple[str, ...] = ("running", "finished", "failed")
DECISIONS: tuple[str, ...] = ("accepted", "rejected")
NAME_LENGTH = 200  # width of the String columns (agent, controller, kind, route, experiment name)
STORE_ENV = "AGENTIC_RS_STORE"  # the environment variable that names the shared knowledge store
MIGRATIONS = Path(__file__).with_name("migrations")  # Alembic's script directory (package data)
_BASELINE = "0001"  # the revision a store created before migrations existed is at
_MIGRATION_LOCK = 0x6167_656E_7469_6372  # PostgreSQL advisory-lock key of the migrations ("agentic r")


# --------------------------------------------------------------------------- schema


class _Base(DeclarativeBase):
    pass


def _now() -> datetime:
    return datetime.now(UTC)


class _ExperimentRow(_Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    config: Mapped[Any] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="running")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    run_dir: Mapped[str | None] = mapped_column(Text, nullable=True)  # revision 0002


class _TrialRow(_Base):
    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("experiment_id", "step", name="uq_trials_experiment_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(Integer, ForeignKey("experiments.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    agent: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    controller: Mapped[str] = mapped_column(String(NAME_LENGTH))
    config: Mapped[Any] = mapped_column(JSON)
    regime: Mapped[Any] = mapped_column(JSON)
    regime_key: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    inner: Mapped[Any] = mapped_column(JSON)
    outer: Mapped[Any] = mapped_column(JSON)
    reward: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _RolloutRow(_Base):
    __tablename__ = "rollouts"
    __table_args__ = (UniqueConstraint("experiment_id", "step", "agent", name="uq_rollouts_experiment_step_agent"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(Integer, ForeignKey("experiments.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    agent: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    candidate_config: Mapped[Any] = mapped_column(JSON)
    decision: Mapped[str] = mapped_column(String(16))
    effect: Mapped[float | None] = mapped_column(Float, nullable=True)
    ci_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    ci_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    p_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_incumbent: Mapped[int] = mapped_column(Integer)
    n_candidate: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _ShiftRow(_Base):
    __tablename__ = "shifts"
    __table_args__ = (UniqueConstraint("experiment_id", "day", "kind", name="uq_shifts_experiment_day_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(Integer, ForeignKey("experiments.id", ondelete="CASCADE"))
    day: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(NAME_LENGTH))
    detected_at_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class _DesignRow(_Base):
    __tablename__ = "designs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(Integer, ForeignKey("experiments.id", ondelete="CASCADE"))
    agent: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    document: Mapped[Any] = mapped_column(JSON)
    rationale: Mapped[str] = mapped_column(Text)
    route: Mapped[str] = mapped_column(String(NAME_LENGTH))
    valid: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


_ROWS: dict[str, type[_Base]] = {
    "experiments": _ExperimentRow,
    "trials": _TrialRow,
    "rollouts": _RolloutRow,
    "shifts": _ShiftRow,
    "designs": _DesignRow,
}
TABLES: tuple[str, ...] = tuple(_ROWS)
METADATA = _Base.metadata  # what the migrations' head must equal (tests compare them)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Experiment:
    """One run: its name, config and seed, and whether it is still running."""

    id: int
    name: str
    config: dict[str, Any]
    seed: int
    status: str  # one of EXPERIMENT_STATUSES
    created_at: datetime
    finished_at: datetime | None
    run_dir: str | None  # the folder its outputs went to (a run resumes only an experiment of its own folder)


@dataclass(frozen=True, slots=True)
class Trial:
    """One step of one experiment: what an agent ran, in which data regime, and how it did."""

    id: int
    experiment_id: int
    step: int
    agent: str
    controller: str
    config: dict[str, Any]
    regime: list[float]
    regime_key: str
    inner: dict[str, Any]  # non-finite values read back as None
    outer: dict[str, Any]
    reward: float
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Rollout:
    """A gated rollout decision on a candidate config, with the test statistics behind it."""

    id: int
    experiment_id: int
    step: int
    agent: str
    candidate_config: dict[str, Any]
    decision: str  # one of DECISIONS
    effect: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n_incumbent: int
    n_candidate: int
    reasons: list[str]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Shift:
    """A distribution shift on a simulated day, and the step at which it was detected (if it was)."""

    id: int
    experiment_id: int
    day: int
    kind: str
    detected_at_step: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Design:
    """A document proposed for an agent, with its rationale, how it was obtained and how it fared."""

    id: int
    experiment_id: int
    agent: str
    document: Any
    rationale: str
    route: str  # how it was obtained, e.g. "constrained", "retried", "fallback"
    valid: bool
    error: str | None
    reward: float | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A past trial returned by :meth:`KnowledgeStore.similar_trials` and its regime's distance to the query."""

    trial: Trial
    distance: float


_R = TypeVar("_R")


def _utc(value: datetime | None) -> datetime | None:
    """Timestamps are written in UTC; backends without time zones (SQLite) read them back naive."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _record(cls: type[_R], row: _Base) -> _R:
    values = {f.name: getattr(row, f.name) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in ("created_at", "finished_at"):
        if key in values:
            values[key] = _utc(values[key])
    return cls(**values)


# --------------------------------------------------------------------------- value conversion and checks

_JSON_HELP = "dicts with string keys, lists, str, int, float, bool, None, numpy scalars/arrays or dataclasses"
_MAX_DEPTH = 100  # nesting levels of a stored JSON value (a model's reply may nest arbitrarily deep)
_TOO_DEEP = f"<truncated: nested deeper than {_MAX_DEPTH} levels>"  # what stands in for the deeper part


def _plain(obj: Any, key: str = "value", *, nonfinite_to_none: bool = False, depth: int = 0) -> Any:
    """``obj`` as plain JSON-able Python: numpy scalars -> int/float/bool, arrays and tuples -> lists,
    dataclass instances -> dicts, integer dict keys -> strings.

    Non-finite floats, and integers beyond the float range (JSON text of them may be refused: Python stops
    at 4,300 digits), become ``None`` when ``nonfinite_to_none`` (observations) and are a
    :class:`ConfigError` otherwise (inputs). Containers nested deeper than ``_MAX_DEPTH`` levels are
    replaced by the string ``_TOO_DEEP`` in observations (never a ``RecursionError``) and are a
    ConfigError in inputs. ``key`` is the dotted path used in error messages; ``depth`` is ``obj``'s level.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return str(obj) if isinstance(obj, np.str_) else obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        number = int(obj)
        try:
            float(number)
        except OverflowError:
            if nonfinite_to_none:
                return None
            raise ConfigError(f"`{key}` must be a finite number (got an integer of {number.bit_length()} bits, "
                              f"beyond the float range)") from None
        return number
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if math.isfinite(value):
            return value
        if nonfinite_to_none:
            return None
        raise ConfigError(f"`{key}` must be a finite number: JSON has no NaN or infinity (got {value})")
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist(), key, nonfinite_to_none=nonfinite_to_none, depth=depth)
    container = isinstance(obj, (Mapping, list, tuple)) or (dataclasses.is_dataclass(obj) and not isinstance(obj, type))
    if container and depth >= _MAX_DEPTH:
        if nonfinite_to_none:
            return _TOO_DEEP
        raise ConfigError(f"`{key}` must nest at most {_MAX_DEPTH} levels deep (got deeper)")
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if isinstance(k, (bool, np.bool_)) or not isinstance(k, (str, int, np.integer)):
                raise ConfigError(f"`{key}` keys must be strings or integers (got {type(k).__name__} key {k!r})")
            name = str(k) if isinstance(k, str) else str(int(k))
            if name in out:
                raise ConfigError(f"`{key}` has the key {name!r} twice once integer keys are written as strings")
            out[name] = _plain(v, f"{key}.{name}", nonfinite_to_none=nonfinite_to_none, depth=depth + 1)
        return out
    if isinstance(obj, (list, tuple)):
        return [_plain(v, f"{key}[{i}]", nonfinite_to_none=nonfinite_to_none, depth=depth + 1)
                for i, v in enumerate(obj)]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return _plain(fields, key, nonfinite_to_none=nonfinite_to_none, depth=depth)
    raise ConfigError(f"`{key}` must be JSON-serialisable: {_JSON_HELP} (got {type(obj).__name__} {reprlib.repr(obj)})")


def _plain_dict(key: str, obj: Any, *, nonfinite_to_none: bool = False) -> dict[str, Any]:
    """A mapping (or dataclass instance) as a plain JSON object."""
    if not isinstance(obj, Mapping) and not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        raise ConfigError(f"`{key}` must be a dict (got {type(obj).__name__} {reprlib.repr(obj)})")
    out = _plain(obj, key, nonfinite_to_none=nonfinite_to_none)
    json.dumps(out, allow_nan=False)  # cannot fail after _plain; guards the invariant the columns rely on
    return out


def _check_finite(key: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"`{key}` must be a finite number (got {type(value).__name__} {reprlib.repr(value)})")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"`{key}` must be a finite number (got {number})")
    return number


def _observed(key: str, value: Any) -> float | None:
    """An observed statistic: a number, or None; NaN and +-inf are stored as None."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"`{key}` must be a number or None (got {type(value).__name__} {reprlib.repr(value)})")
    number = float(value)
    return number if math.isfinite(number) else None


def _check_name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > NAME_LENGTH:
        raise ConfigError(
            f"`{key}` must be a non-empty string of at most {NAME_LENGTH} characters "
            f"(got {type(value).__name__} {reprlib.repr(value)})"
        )
    return value


def _check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"`{key}` must be a bool (got {type(value).__name__} {reprlib.repr(value)})")
    return bool(value)


def _check_text(key: str, value: Any, *, optional: bool = False) -> str | None:
    """A text column's value. Lone surrogates (a model's reply may decode to one, e.g. ``"\\ud800"``), which
    UTF-8 cannot encode, are stored as their ``\\ud800`` escape: the database would raise on them."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        allowed = "a string or None" if optional else "a string"
        raise ConfigError(f"`{key}` must be {allowed} (got {type(value).__name__} {reprlib.repr(value)})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _check_regime(key: str, regime: Any) -> list[float]:
    """A non-empty 1-D vector of finite floats."""
    try:
        vector = np.asarray(regime, dtype=np.float64)
    except (TypeError, ValueError):
        vector = None
    if vector is None or vector.ndim != 1 or vector.size == 0 or not np.all(np.isfinite(vector)):
        raise ConfigError(f"`{key}` must be a non-empty 1-D list of finite floats (got {reprlib.repr(regime)})")
    return [float(v) for v in vector]


def regime_key(regime: Sequence[float] | np.ndarray, decimals: int = 1) -> str:
    """A coarse fingerprint of a regime vector for exact-match lookup: values rounded to ``decimals``
    and joined with commas, e.g. ``[0.249, 0.51, -0.01] -> "0.2,0.5,0.0"``."""
    check_int("decimals", decimals, 0, 12)
    values = _check_regime("regime", regime)
    return ",".join(f"{round(v, decimals) + 0.0:.{decimals}f}" for v in values)  # + 0.0: no "-0.0"


def _json_equal(a: Any, b: Any) -> bool:
    """Equality after a JSON round trip (what the database gives back)."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


# --------------------------------------------------------------------------- the store


def _engine_url(url: str | os.PathLike[str]) -> URL:
    if isinstance(url, os.PathLike) or "://" not in url:
        return URL.create("sqlite", database=str(Path(url)))
    return make_url(url)


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def user_data_dir() -> Path:
    """The per-user data directory of agentic-rs (created on first use by the store, not here)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "agentic-rs"


def default_store_url() -> str:
    """The knowledge store every run shares unless told otherwise: ``$AGENTIC_RS_STORE`` (a SQLAlchemy URL or a
    path) when set and non-empty, else ``sqlite:///<user_data_dir()>/knowledge.db``."""
    return os.environ.get(STORE_ENV, "").strip() or f"sqlite:///{user_data_dir() / 'knowledge.db'}"


def store_location(store: str | None, run_dir: str | os.PathLike[str]) -> str:
    """Where a run's knowledge goes: the shared store (:func:`default_store_url`) when ``store`` is None, a URL as
    given, or a plain path relative to the run's folder (a store of its own)."""
    if store is None:
        return default_store_url()
    if not isinstance(store, str) or not store.strip():
        raise ConfigError(f"`store` must be null (the shared store), a SQLAlchemy URL or a path (got {store!r})")
    return store if "://" in store else str(Path(run_dir) / store)


def _alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest schema revision this code knows."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations under {MIGRATIONS} (is the package data installed?)")
    return head


def _revision(connection: Any) -> str | None:
    """The store's schema revision (None before migrations), read without Alembic's start-up log lines."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic logs its context at INFO on every command: keep that out of the runs' logs unless asked for."""
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    if not alembic_log.isEnabledFor(logging.DEBUG):
        alembic_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        alembic_log.setLevel(level)


@contextmanager
def _opening_lock(url: URL) -> Iterator[None]:
    """Serialise opening a SQLite file store across processes: an exclusive ``flock`` on ``<database>-open.lock``.

    ``BEGIN IMMEDIATE`` alone does not make concurrent first opens safe: before :func:`migrate` takes it, each
    new connection switches the file to WAL and reads the schema, and of several processes doing that to a
    brand-new file one could get ``database is locked`` at once, without waiting out the busy timeout (SQLite skips
    the busy handler where waiting could deadlock, as in the switch to WAL; 1 of 68 simultaneous starts of 4-8
    processes failed so before this lock). The sidecar file is kept (deleting a lock file races with its
    next user); SQLite's own locks on the database are POSIX byte-range locks, which a ``flock`` never touches.
    Where ``fcntl`` is missing (Windows) this is a no-op.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    database = url.database or ""
    path = Path(database).expanduser()
    with open(path.with_name(path.name + "-open.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(engine: Engine) -> str:
    """Bring the database behind ``engine`` to :func:`head_revision` and return it.

    Runs in one transaction holding the database's write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL
    transaction-level advisory lock), so of several processes opening one new store at once, the first
    migrates and the others find it done. A store without a revision table but with the tables (created before
    migrations existed) is stamped with the first revision, then upgraded. A revision this code does not know
    (a store migrated by newer code) is a :class:`~envs.validation.ConfigError`.
    """
    with _quiet_alembic():
        head = head_revision()
    with engine.connect() as connection:
        if _revision(connection) == head:  # the common case: no lock, no Alembic environment
            return head
        connection.rollback()
    config = _alembic_config()
    backend = engine.url.get_backend_name()
    with _quiet_alembic(), engine.connect() as connection:
        if backend == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif backend == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        current = _revision(connection)
        known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
        if current is not None and current not in known:
            raise ConfigError(f"the knowledge store at {_shown(engine.url)} is at "
                              f"schema revision {current!r}, which this code does not know (it knows "
                              f"{sorted(known)}): it was migrated by a newer agentic-rs; upgrade the code")
        config.attributes["connection"] = connection
        if current is None and inspect(connection).has_table("experiments"):
            log.info("stamping a pre-migration knowledge store with revision %s", _BASELINE)
            command.stamp(config, _BASELINE)
        if current != head:
            command.upgrade(config, "head")
            log.info("migrated knowledge store %s from %s to %s",
                     _shown(engine.url), current, head)
        connection.commit()
    return head


class KnowledgeStore:
    """Experiments, trials, rollouts, shifts and designs in one database.

    ``url`` is a SQLAlchemy URL (``sqlite:///runs/store.db``, ``sqlite://`` in memory,
    ``postgresql+psycopg://...``) or a filesystem path, read as a SQLite file (parent folders are
    created). ``busy_timeout_s`` is how long a SQLite writer waits for another one's lock.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, url: str | os.PathLike[str], *, busy_timeout_s: float = 30.0, echo: bool = False) -> None:
        if not isinstance(url, (str, os.PathLike)) or not str(url):
            raise ConfigError(f"`url` must be a SQLAlchemy URL or a file path (got {reprlib.repr(url)})")
        busy_timeout_s = _check_finite("busy_timeout_s", busy_timeout_s)
        if busy_timeout_s < 0:
            raise ConfigError(f"`busy_timeout_s` must be in [0, inf) (got {busy_timeout_s})")
        self.url = _engine_url(url)
        kwargs: dict[str, Any] = {"echo": echo}
        is_sqlite = self.url.get_backend_name() == "sqlite"
        memory = is_sqlite and _is_memory(self.url)
        if memory:
            # one connection for the whole store: each new connection to ":memory:" would be a new, empty database
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        elif is_sqlite:
            kwargs["connect_args"] = {"timeout": busy_timeout_s}
        # a SQLite database in a file named by path (not in memory, not a `file:` URI): its folder is created and
        # opening it is serialised across processes (_opening_lock)
        file_store = is_sqlite and not memory and bool(self.url.database) and not self.url.database.startswith("file:")
        if file_store:
            Path(self.url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(self.url, **kwargs)
        if is_sqlite:
            self._configure_sqlite(busy_timeout_s, wal=not memory)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._closed = False
        with _opening_lock(self.url) if file_store else nullcontext():
            self.revision = migrate(self.engine)
        log.debug("opened knowledge store %s", self)

    def _configure_sqlite(self, busy_timeout_s: float, *, wal: bool) -> None:
        timeout_ms = int(busy_timeout_s * 1000)

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute(f"PRAGMA busy_timeout={timeout_ms}")
                if wal:
                    mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        log.warning("SQLite refused WAL journal mode (got %r); readers may block the writer", mode)
            finally:
                cursor.close()

    # ----------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Release the database connections (an in-memory database is gone after this)."""
        if not self._closed:
            self.engine.dispose()
            self._closed = True

    def __enter__(self) -> KnowledgeStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KnowledgeStore({self.location!r})"

    @property
    def location(self) -> str:
        """The store's URL with any password hidden: what a run's summary and the logs name."""
        return _shown(self.url)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        with self._sessions() as session:
            yield session

    def _require_experiment(self, session: Session, exp_id: Any) -> _ExperimentRow:
        check_int("exp_id", exp_id, 1)
        row = session.get(_ExperimentRow, int(exp_id))
        if row is None:
            raise ConfigError(
                f"`exp_id` must be the id of an existing experiment (got {exp_id}); see start_experiment()"
            )
        return row

    def _insert_once(self, row: _Base, *unique: ColumnElement[bool]) -> _Base | None:
        """Insert ``row`` in its own transaction unless a row matching ``unique`` exists.

        Returns None when written, else the row already stored (which is left untouched).
        """
        model = type(row)
        with self._session() as session:
            self._require_experiment(session, row.experiment_id)
            existing = session.scalars(select(model).where(*unique)).first()
            if existing is not None:
                return existing
            session.add(row)
            try:
                session.commit()
                return None
            except IntegrityError:
                session.rollback()  # another writer got there first: that row stands
                log.debug("lost a write race for a %s row; keeping the stored one", model.__tablename__)
                existing = session.scalars(select(model).where(*unique)).first()
                if existing is None:
                    raise
                return existing

    # ----------------------------------------------------------------------- experiments

    def start_experiment(
        self, name: str, config: Mapping[str, Any], seed: int, resume: bool = True, *, run_dir: str | None = None
    ) -> int:
        """Register an experiment and return the id to write to.

        With ``resume=True`` this is the most recent still-``running`` experiment with the same
        ``name``, ``seed``, ``run_dir`` and a JSON-equal ``config`` (what a killed run left behind);
        otherwise, or when there is none, a new experiment is created. A running experiment of the
        same name whose config or seed differs is not resumed (a warning says so); one of another
        ``run_dir`` is another run (a replicate) and is left alone.
        """
        name = _check_name("name", name)
        plain = _plain_dict("config", config)
        seed = int(check_int("seed", seed, 0, 2**63 - 1))
        run_dir = _check_text("run_dir", run_dir, optional=True)
        with self._session() as session:
            if resume:
                running = session.scalars(
                    select(_ExperimentRow)
                    .where(_ExperimentRow.name == name, _ExperimentRow.status == "running",
                           _ExperimentRow.run_dir.is_(None) if run_dir is None else _ExperimentRow.run_dir == run_dir)
                    .order_by(_ExperimentRow.id.desc())
                ).all()
                for row in running:
                    if row.seed == seed and _json_equal(row.config, plain):
                        log.info("resuming experiment %d %r (seed %d)", row.id, name, seed)
                        return row.id
                if running:
                    log.warning(
                        "experiment %r is running as id(s) %s with a different config or seed; starting a new one",
                        name,
                        [row.id for row in running],
                    )
            row = _ExperimentRow(name=name, config=plain, seed=seed, status="running", run_dir=run_dir)
            session.add(row)
            session.commit()
            log.info("started experiment %d %r (seed %d)", row.id, name, seed)
            return row.id

    def find_experiment(
        self, name: str, config: Mapping[str, Any], seed: int, status: Literal["running", "finished", "failed"] = "finished",
        *, run_dir: str | None = None,
    ) -> int | None:
        """The id of the most recent experiment with this ``name``, ``seed``, ``run_dir``, a JSON-equal ``config``
        and ``status`` (None if there is none). A run that finds its own finished experiment replays it instead of
        starting a second one with the same trials (resume is idempotent after the store marked it finished)."""
        name = _check_name("name", name)
        plain = _plain_dict("config", config)
        seed = int(check_int("seed", seed, 0, 2**63 - 1))
        check_choice("status", status, EXPERIMENT_STATUSES)
        run_dir = _check_text("run_dir", run_dir, optional=True)
        with self._session() as session:
            rows = session.scalars(
                select(_ExperimentRow)
                .where(_ExperimentRow.name == name, _ExperimentRow.status == status, _ExperimentRow.seed == seed,
                       _ExperimentRow.run_dir.is_(None) if run_dir is None else _ExperimentRow.run_dir == run_dir)
                .order_by(_ExperimentRow.id.desc())
            ).all()
            return next((row.id for row in rows if _json_equal(row.config, plain)), None)

    def finish_experiment(self, exp_id: int, status: Literal["finished", "failed"] = "finished") -> None:
        """Mark an experiment ``finished`` or ``failed``: it will not be resumed."""
        check_choice("status", status, EXPERIMENT_STATUSES[1:])
        with self._session() as session:
            row = self._require_experiment(session, exp_id)
            if row.status != "running":
                log.warning("experiment %d was already %s; marking it %s", row.id, row.status, status)
            row.status = status
            row.finished_at = _now()
            session.commit()

    def experiment(self, exp_id: int) -> Experiment:
        """One experiment by id."""
        with self._session() as session:
            return _record(Experiment, self._require_experiment(session, exp_id))

    def experiments(self, name: str | None = None) -> list[Experiment]:
        """All experiments (of one name), oldest first."""
        stmt = select(_ExperimentRow).order_by(_ExperimentRow.id)
        if name is not None:
            stmt = stmt.where(_ExperimentRow.name == name)
        with self._session() as session:
            return [_record(Experiment, row) for row in session.scalars(stmt)]

    def earlier_experiments(self, exp_id: int) -> list[Experiment]:
        """The experiments that finished before ``exp_id`` was registered, oldest first: what it may learn from.
        Fixed once ``exp_id`` exists, so a resumed run reads the same knowledge as its first attempt did, however
        many runs finished since."""
        with self._session() as session:
            me = self._require_experiment(session, exp_id)
            rows = session.scalars(
                select(_ExperimentRow)
                .where(_ExperimentRow.id != me.id, _ExperimentRow.status == "finished",
                       _ExperimentRow.finished_at < me.created_at)
                .order_by(_ExperimentRow.id)
            ).all()
            return [_record(Experiment, row) for row in rows]

    # ----------------------------------------------------------------------- trials

    def add_trial(
        self,
        exp_id: int,
        step: int,
        agent: str,
        controller: str,
        config: Mapping[str, Any],
        regime: Sequence[float] | np.ndarray,
        inner: Mapping[str, Any],
        outer: Mapping[str, Any],
        reward: float,
    ) -> bool:
        """Write one trial in one transaction; ``True`` when written.

        A trial for ``(exp_id, step)`` that is already stored is left as it is and ``False`` is
        returned (idempotent on resume; a warning is logged if the stored reward or agent differs).
        NaN in ``inner``/``outer`` is stored as None.
        """
        step = int(check_int("step", step, 0))
        row = _TrialRow(
            experiment_id=exp_id,
            step=step,
            agent=_check_name("agent", agent),
            controller=_check_name("controller", controller),
            config=_plain_dict("config", config),
            regime=_check_regime("regime", regime),
            regime_key=regime_key(regime),
            inner=_plain_dict("inner", inner, nonfinite_to_none=True),
            outer=_plain_dict("outer", outer, nonfinite_to_none=True),
            reward=_check_finite("reward", reward),
        )
        existing = self._insert_once(row, _TrialRow.experiment_id == exp_id, _TrialRow.step == step)
        if existing is None:
            return True
        existing = cast(_TrialRow, existing)
        if existing.agent != row.agent or existing.reward != row.reward:
            log.warning(
                "trial (experiment %d, step %d) is already stored (agent %r, reward %r); ignoring agent %r, reward %r",
                exp_id, step, existing.agent, existing.reward, row.agent, row.reward,
            )
        return False

    def trials(self, exp_id: int | None = None, agent: str | None = None, regime_key: str | None = None) -> list[Trial]:
        """Trials, optionally of one experiment, agent and regime key, ordered by (experiment, step)."""
        stmt = select(_TrialRow).order_by(_TrialRow.experiment_id, _TrialRow.step)
        if exp_id is not None:
            stmt = stmt.where(_TrialRow.experiment_id == exp_id)
        if agent is not None:
            stmt = stmt.where(_TrialRow.agent == agent)
        if regime_key is not None:
            stmt = stmt.where(_TrialRow.regime_key == regime_key)
        with self._session() as session:
            return [_record(Trial, row) for row in session.scalars(stmt)]

    def last_step(self, exp_id: int) -> int:
        """The largest stored step of an experiment, -1 when it has none."""
        with self._session() as session:
            last = session.scalar(select(func.max(_TrialRow.step)).where(_TrialRow.experiment_id == exp_id))
        return -1 if last is None else int(last)

    def completed_steps(self, exp_id: int) -> set[int]:
        """The steps of an experiment that have a stored trial."""
        with self._session() as session:
            return set(session.scalars(select(_TrialRow.step).where(_TrialRow.experiment_id == exp_id)))

    def similar_trials(
        self,
        agent: str,
        regime: Sequence[float] | np.ndarray,
        k: int = 10,
        exclude_experiment: int | None = None,
        *,
        pool: int | None = None,
        experiments: Iterable[int] | None = None,
    ) -> list[Neighbour]:
        """Warm start: the ``k`` best-reward past trials of ``agent`` among those run in the regimes nearest ``regime``.

        1. Fetch every trial of ``agent`` (only of ``experiments`` when given, e.g. those with the same
           reward and decision space; never of ``exclude_experiment``, typically the current one) whose
           regime has the query's length; others are skipped with a warning.
        2. Compute Euclidean distances in numpy and keep the ``pool`` nearest (default ``3 * k``;
           ties by higher reward, then older trial).
        3. Keep the ``k`` of those with the highest reward, returned nearest first (ties by higher
           reward, then older trial), each with its distance.

        This reads all of the agent's trials per call: fine for thousands of trials, not millions.
        """
        agent = _check_name("agent", agent)
        query = np.asarray(_check_regime("regime", regime))
        k = int(check_int("k", k, 1))
        pool = 3 * k if pool is None else int(check_int("pool", pool, k))
        stmt = select(_TrialRow).where(_TrialRow.agent == agent)
        if exclude_experiment is not None:
            stmt = stmt.where(_TrialRow.experiment_id != exclude_experiment)
        if experiments is not None:
            ids = [int(check_int("experiments", e, 1)) for e in experiments]
            if not ids:
                return []
            stmt = stmt.where(_TrialRow.experiment_id.in_(ids))
        with self._session() as session:
            rows = list(session.scalars(stmt))
        matching = [row for row in rows if len(row.regime) == query.size]
        if len(matching) < len(rows):
            log.warning(
                "similar_trials(%r): skipped %d trial(s) whose regime length differs from the query's %d",
                agent, len(rows) - len(matching), query.size,
            )
        if not matching:
            return []
        regimes = np.array([row.regime for row in matching], dtype=np.float64)
        distance = np.linalg.norm(regimes - query, axis=1)
        reward = np.array([row.reward for row in matching], dtype=np.float64)
        ids = np.array([row.id for row in matching])
        near = np.lexsort((ids, -reward, distance))[:pool]  # nearest first
        best = near[np.lexsort((ids[near], distance[near], -reward[near]))][:k]  # highest reward first
        chosen = best[np.lexsort((ids[best], -reward[best], distance[best]))]  # nearest first
        return [Neighbour(_record(Trial, matching[i]), float(distance[i])) for i in chosen]

    # ----------------------------------------------------------------------- rollouts, shifts, designs

    def add_rollout(
        self,
        exp_id: int,
        step: int,
        agent: str,
        candidate_config: Mapping[str, Any],
        decision: Literal["accepted", "rejected"],
        *,
        effect: float | None,
        ci_low: float | None,
        ci_high: float | None,
        p_value: float | None,
        n_incumbent: int,
        n_candidate: int,
        reasons: Iterable[str] = (),
    ) -> bool:
        """Write a gated rollout decision; ``False`` (nothing written) if ``(exp_id, step, agent)`` already has one.

        Non-finite statistics are stored as None.
        """
        step = int(check_int("step", step, 0))
        agent = _check_name("agent", agent)
        check_choice("decision", decision, DECISIONS)
        low, high = _observed("ci_low", ci_low), _observed("ci_high", ci_high)
        if low is not None and high is not None and low > high:
            raise ConfigError(f"`ci_low` must be <= `ci_high` (got {low} > {high})")
        p = _observed("p_value", p_value)
        if p is not None:
            check_probability("p_value", p)
        if isinstance(reasons, str) or not isinstance(reasons, Iterable):
            got = f"{type(reasons).__name__} {reprlib.repr(reasons)}"
            raise ConfigError(f"`reasons` must be a list of strings (got {got})")
        reasons = list(reasons)
        if not all(isinstance(r, str) for r in reasons):
            raise ConfigError(f"`reasons` must be a list of strings (got {reprlib.repr(reasons)})")
        row = _RolloutRow(
            experiment_id=exp_id,
            step=step,
            agent=agent,
            candidate_config=_plain_dict("candidate_config", candidate_config),
            decision=decision,
            effect=_observed("effect", effect),
            ci_low=low,
            ci_high=high,
            p_value=p,
            n_incumbent=int(check_int("n_incumbent", n_incumbent, 0)),
            n_candidate=int(check_int("n_candidate", n_candidate, 0)),
            reasons=[str(r) for r in reasons],
        )
        unique = (_RolloutRow.experiment_id == exp_id, _RolloutRow.step == step, _RolloutRow.agent == agent)
        return self._insert_once(row, *unique) is None

    def rollouts(self, exp_id: int | None = None, agent: str | None = None) -> list[Rollout]:
        """Rollout decisions ordered by (experiment, step, id)."""
        stmt = select(_RolloutRow).order_by(_RolloutRow.experiment_id, _RolloutRow.step, _RolloutRow.id)
        if exp_id is not None:
            stmt = stmt.where(_RolloutRow.experiment_id == exp_id)
        if agent is not None:
            stmt = stmt.where(_RolloutRow.agent == agent)
        with self._session() as session:
            return [_record(Rollout, row) for row in session.scalars(stmt)]

    def add_shift(self, exp_id: int, day: int, kind: str, detected_at_step: int | None = None) -> bool:
        """Write a distribution shift; ``False`` (nothing written) if ``(exp_id, day, kind)`` is already stored."""
        day = int(check_int("day", day, 0))
        kind = _check_name("kind", kind)
        if detected_at_step is not None:
            detected_at_step = int(check_int("detected_at_step", detected_at_step, 0))
        row = _ShiftRow(experiment_id=exp_id, day=day, kind=kind, detected_at_step=detected_at_step)
        unique = (_ShiftRow.experiment_id == exp_id, _ShiftRow.day == day, _ShiftRow.kind == kind)
        return self._insert_once(row, *unique) is None

    def shifts(self, exp_id: int | None = None) -> list[Shift]:
        """Shifts ordered by (experiment, day, id)."""
        stmt = select(_ShiftRow).order_by(_ShiftRow.experiment_id, _ShiftRow.day, _ShiftRow.id)
        if exp_id is not None:
            stmt = stmt.where(_ShiftRow.experiment_id == exp_id)
        with self._session() as session:
            return [_record(Shift, row) for row in session.scalars(stmt)]

    def add_design(
        self,
        exp_id: int,
        agent: str,
        document: Any,
        rationale: str,
        route: str,
        valid: bool,
        error: str | None = None,
        reward: float | None = None,
    ) -> int:
        """Write a design document for ``agent`` and return its id.

        ``document`` is any JSON-able value (non-finite numbers in it are stored as None);
        ``route`` says how it was obtained (e.g. ``"constrained"``, ``"retried"``, ``"fallback"``).
        """
        row = _DesignRow(
            experiment_id=exp_id,
            agent=_check_name("agent", agent),
            document=_plain(document, "document", nonfinite_to_none=True),
            rationale=_check_text("rationale", rationale),
            route=_check_name("route", route),
            valid=_check_bool("valid", valid),
            error=_check_text("error", error, optional=True),
            reward=_observed("reward", reward),
        )
        with self._session() as session:
            self._require_experiment(session, exp_id)
            session.add(row)
            session.commit()
            return row.id

    def designs(self, agent: str | None = None, valid: bool | None = None, exp_id: int | None = None) -> list[Design]:
        """Design documents (of one agent, validity, experiment), oldest first."""
        stmt = select(_DesignRow).order_by(_DesignRow.id)
        if agent is not None:
            stmt = stmt.where(_DesignRow.agent == agent)
        if valid is not None:
            stmt = stmt.where(_DesignRow.valid == _check_bool("valid", valid))
        if exp_id is not None:
            stmt = stmt.where(_DesignRow.experiment_id == exp_id)
        with self._session() as session:
            return [_record(Design, row) for row in session.scalars(stmt)]

    # ----------------------------------------------------------------------- analysis

    def to_frame(self, table: str) -> pd.DataFrame:
        """One table as a DataFrame ordered by id: one column per database column (JSON columns hold
        Python objects, timestamps are UTC)."""
        check_choice("table", table, TABLES)
        columns = _ROWS[table].__table__.columns  # type: ignore[attr-defined]
        with self._session() as session:
            rows = session.execute(select(*columns).order_by(columns["id"])).all()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=[c.name for c in columns])
        for column in columns:
            if isinstance(column.type, DateTime):
                frame[column.name] = pd.to_datetime(frame[column.name], utc=True)
        return frame


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m agents.infra.store {where,upgrade,revision -m MESSAGE} [--url URL]``: print the shared store's
    URL and revision, migrate it, or (developers) write a new migration autogenerated from the models."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m agents.infra.store", description=main.__doc__)
    parser.add_argument("action", choices=("where", "upgrade", "revision"))
    parser.add_argument("--url", default=None, help=f"the store (default: ${STORE_ENV} or the per-user file)")
    parser.add_argument("-m", "--message", default=None, help="revision: what the new migration changes")
    args = parser.parse_args(argv)
    url = args.url or default_store_url()
    if args.action == "revision":
        if not args.message:
            parser.error("revision needs -m MESSAGE")
        with KnowledgeStore(url) as store, store.engine.connect() as connection:  # at head: diff the models
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.revision(config, message=args.message, autogenerate=True)
        return
    with KnowledgeStore(url) as store:  # opening migrates
        experiments = store.experiments()
        print(f"{store!r}: schema revision {store.revision}, {len(experiments)} experiments")


if __name__ == "__main__":
    main()
