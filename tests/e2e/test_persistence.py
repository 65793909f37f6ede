"""The registry outlives the server: restart on SQLite and on PostgreSQL, functions still serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import Server, write_bundle

HANDLER = (
    "def handler(event, context):\n"
    '    return {"twice": event["x"] * 2, "v": context.function_version}\n'
)


def deploy_restart_invoke(tmp_path: Path, env: dict[str, str]) -> None:
    home = tmp_path / "home"
    first = Server(home, env=env)
    first.start()
    try:
        bundle = write_bundle(tmp_path / "b", HANDLER, 'handler = "handler:handler"\n')
        assert first.deploy_folder("durable", bundle).status_code == 201
        (bundle / "handler.py").write_text(HANDLER.replace("* 2", "* 3"))
        assert first.deploy_folder("durable", bundle).json()["version"] == 2
        assert first.invoke("durable", {"x": 2}).json() == {"twice": 6, "v": "2"}
    finally:
        first.stop()
    second = Server(home, env=env)
    second.start()
    try:
        assert second.invoke("durable", {"x": 2}).json() == {"twice": 6, "v": "2"}
        assert second.invoke("durable:1", {"x": 2}).json() == {"twice": 4, "v": "1"}
        listed = second.client.get("/v1/functions").json()["functions"]
        # On PostgreSQL the session's database is shared with other test files: count ours.
        assert [f["name"] for f in listed].count("durable") == 1
    finally:
        second.stop()


def test_restart_on_sqlite(tmp_path: Path) -> None:
    deploy_restart_invoke(tmp_path, {})


@pytest.mark.postgres
def test_restart_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    deploy_restart_invoke(tmp_path, {"COLDBREW_DATABASE_URL": postgres_url})
