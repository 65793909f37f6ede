"""Engine construction: the SQLite settings that make one file safe for many threads and
processes, and the write-transaction flavour that makes concurrent deploys serialise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

WRITE_OPTION = "coldbrew_write"
"""Execution option marking a connection that will write; on SQLite it begins IMMEDIATE."""

SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def build_engine(url: str) -> Engine:
    """Create an engine for ``url``; on SQLite also create the file's folder and tune it."""
    parsed = make_url(url)
    if not is_sqlite(parsed):
        return create_engine(parsed, pool_pre_ping=True)
    kwargs: dict[str, Any] = {}
    database = parsed.database or ""
    if database in ("", ":memory:") or "mode=memory" in str(parsed.query):
        # One shared connection, or every new connection would see its own empty database.
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    elif not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, **kwargs)
    _tune_sqlite(engine)
    return engine


def _tune_sqlite(engine: Engine) -> None:
    """WAL (readers never block the writer), foreign keys (off by default in SQLite), a busy
    timeout (wait for the write lock instead of failing), and explicit BEGINs.

    pysqlite's own transaction handling begins lazily and DEFERRED: two deploys would both
    read, then both try to upgrade to a write lock, and one would fail with "database is
    locked" without waiting. Taking over BEGIN lets writes start with BEGIN IMMEDIATE, which
    takes the write lock up front and so queues behind the busy timeout instead."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class CoreStore:
    """A store with an engine of its own on the registry database at ``url``, used through
    SQLAlchemy Core: ``engine`` for reads, ``_write`` for transactions that begin IMMEDIATE on
    SQLite (``WRITE_OPTION``). ``UrlStore`` is the same with ORM sessions."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = build_engine(url)
        self._write = self.engine.execution_options(**{WRITE_OPTION: True})

    def close(self) -> None:
        self.engine.dispose()


class UrlStore:
    """A store with an engine of its own on the registry database at ``url``: read sessions,
    and write transactions that begin IMMEDIATE on SQLite (``WRITE_OPTION``), so concurrent
    writers queue on the file's lock instead of failing to upgrade it."""

    def __init__(self, url: str) -> None:
        self._engine = build_engine(url)
        self._read = sessionmaker(self._engine, expire_on_commit=False)
        self._write_engine = self._engine.execution_options(**{WRITE_OPTION: True})
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._write_sessions() as session, session.begin():
            yield session
