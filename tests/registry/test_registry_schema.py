"""Migrations: idempotent, and exactly the schema the models describe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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


def test_an_older_meter_loses_its_request_id_index(tmp_path: Path) -> None:
    """A registry made before migration 0005 upgrades in place: its rows stay, the index on
    request_id (which made every meter insert slow) goes."""
    from alembic import command
    from alembic.config import Config

    from coldbrew.registry.registry import MIGRATIONS

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0003_meter")
            conn.exec_driver_sql(
                "INSERT INTO invocations (request_id, function_name, version, started_at, "
                "duration_ms, billed_ms, memory_mb, gb_seconds, cost_usd, cold_start, status) "
                "VALUES ('r1', 'f', 1, '2026-11-23 00:00:00.000000', 1, 1, 128, 0.1, 0.1, 0, 'OK')"
            )
        names = {i["name"] for i in inspect(engine).get_indexes("invocations")}
        assert "ix_invocations_request_id" in names
        Registry(url).migrate()
        names = {i["name"] for i in inspect(engine).get_indexes("invocations")}
        assert "ix_invocations_request_id" not in names
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT request_id FROM invocations").scalar() == "r1"
    finally:
        engine.dispose()
