"""Engines and schema upgrades.

SQLite is the single-process default: a file in the data dir, WAL so readers never wait for the
writer, ``BEGIN IMMEDIATE`` for write transactions so two writers never deadlock upgrading a read
lock, and one writer at a time per process by a lock taken before ``BEGIN IMMEDIATE`` and let go
after the commit or rollback: threads of one process then queue on that lock and wake the moment
it is free, instead of polling SQLite's busy handler, which sleeps in steps of up to 100 ms (under
a burst of API writes those sleeps were most of the latency). The busy timeout still queues
writers from other processes. PostgreSQL runs the same code.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from state import shared_strings

MIGRATIONS = Path(__file__).parent / "migrations"

# Execution option that marks a transaction as one that will write.
WRITE = "loraplane_write"

# Serialises concurrent ``upgrade_database`` calls on PostgreSQL (several HA replicas starting
# at once); any constant works as long as every replica uses the same one.
_MIGRATION_LOCK_ID = 0x6C6F7261


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'loraplane.db').resolve()}"


def make_engine(url: str, *, busy_timeout_ms: int = 5000) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # One writer lock per engine, shared by the connections it opens.
        connection_class = type("SQLiteConnection", (_WriterLockedConnection,), {"writer_lock": threading.Lock()})
        # A connection for each thread that may read at once (the API's pool, the reconciler's
        # workers, the watch poller): past the pool, each read opened and set up a connection
        # of its own and closed it again.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000, "factory": connection_class},
            pool_size=20,
            max_overflow=20,
            json_deserializer=shared_strings.loads,  # rows kept in memory share their strings
        )
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("", "psycopg2"):
        # psycopg (3) is the driver we ship in the postgres extra.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=10, json_deserializer=shared_strings.loads)


class _WriterLockedConnection(sqlite3.Connection):
    """A connection that holds its engine's writer lock from ``begin_write`` until its
    transaction ends, whichever way it ends (a pool's reset on checkin rolls back too)."""

    writer_lock: threading.Lock
    holds_writer_lock = False

    def begin_write(self, timeout_s: float) -> None:
        # Past the timeout, go on without the lock: BEGIN IMMEDIATE then waits its own busy
        # timeout and fails with "database is locked", the error a caller already handles.
        self.holds_writer_lock = self.writer_lock.acquire(timeout=timeout_s)
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._release_writer_lock()
            raise

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release_writer_lock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release_writer_lock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release_writer_lock()

    def _release_writer_lock(self) -> None:
        if self.holds_writer_lock:
            self.holds_writer_lock = False
            self.writer_lock.release()


class Sessions:
    """Short sessions on one engine for every store: ``read()``, and ``write()``, a transaction
    marked WRITE (``BEGIN IMMEDIATE`` and the writer lock on SQLite) that commits on leaving;
    ``check`` runs first inside it (a leader's fence)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write_engine = engine.execution_options(**{WRITE: True})

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self, check: Callable[[Session], None] | None = None) -> Iterator[Session]:
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            if check is not None:
                check(session)
            yield session


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below (the pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        if connection.get_execution_options().get(WRITE):
            connection.connection.dbapi_connection.begin_write(busy_timeout_ms / 1000)
        else:
            connection.exec_driver_sql("BEGIN")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade_database(engine: Engine) -> None:
    """Bring the schema to the newest migration; safe to call on every start."""
    config = alembic_config()
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            connection.commit()
        try:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
                connection.commit()


def check_database(engine: Engine) -> None:
    """Raises if the database cannot be reached (used by /readyz)."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
