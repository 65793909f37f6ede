"""Migration 0006_route_credentials: routes made before it keep working, and forward nothing."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from coldbrew.registry import Registry
from coldbrew.registry.registry import MIGRATIONS
from coldbrew.registry.routes import RouteTable


def test_an_older_route_gets_forward_credentials_off(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0002_routes")
            conn.exec_driver_sql(
                "INSERT INTO routes (method, path, function_name, payload_format, stage, "
                "created_at) VALUES ('GET', '/old', 'f', '2.0', '$default', "
                "'2026-11-23 00:00:00.000000')"
            )
    finally:
        engine.dispose()
    registry = Registry(url)
    registry.migrate()
    try:
        (route,) = RouteTable(registry).list()
        assert route.route_key == "GET /old" and route.forward_credentials is False
        added = RouteTable(registry).add("GET /new", "f", forward_credentials=True)
        assert added.forward_credentials is True
    finally:
        registry.close()
