"""Fixtures of the async-invocation tests: a migrated registry database on SQLite and on
PostgreSQL, and moto's S3 server for the object sources (skipped when absent, failed under
COLDBREW_REQUIRE_SERVICES=1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from coldbrew.jobs.queue import EventQueue
from coldbrew.registry import Registry
from coldbrew.registry.engine import build_engine
from support import require_service


def _reset_postgres(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated registry database, one per backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        _reset_postgres(url)
    registry = Registry(url)
    registry.migrate()
    registry.close()
    yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    made = build_engine(db_url)
    yield made
    made.dispose()


@pytest.fixture
def queue(engine: Engine) -> EventQueue:
    return EventQueue(engine)


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    """The endpoint URL of moto's S3 server, one per test module."""
    try:
        from s3_support import moto_s3

        context = moto_s3()
        endpoint = context.__enter__()
    except Exception as exc:  # moto not installed, or its server would not start
        require_service("moto's S3 server", exc)
    try:
        yield endpoint
    finally:
        context.__exit__(None, None, None)
