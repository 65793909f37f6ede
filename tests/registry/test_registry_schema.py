"""Migrations: idempotent, and exactly the schema the models describe."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from coldbrew.registry import Registry
from coldbrew.registry.models import Base


def test_migrate_is_idempotent(make_registry: Callable[[], Registry], registry_url: str) -> None:
    first = make_registry()
    first.migrate()
    first.migrate()
    make_registry().migrate()  # a second process starting on a migrated database
    engine = create_engine(registry_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"functions", "versions", "aliases", "alembic_version"} <= tables


def test_migration_matches_models(registry: Registry, registry_url: str) -> None:
    engine = create_engine(registry_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_sqlite_is_tuned(make_registry: Callable[[], Registry], registry_url: str) -> None:
    if not registry_url.startswith("sqlite"):
        pytest.skip("SQLite pragmas only")
    reg = make_registry()
    with reg._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0
