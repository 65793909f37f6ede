"""The operator commands against a live server: keys, audit, logs, alerts and cost."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from coldbrew.cli.main import app
from support import Server, write_bundle

HANDLER = (
    'def handler(event, context):\n    print("served", event.get("n"))\n    return {"ok": 1}\n'
)


def test_keys_audit_and_auth_from_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    runner = CliRunner(env={"COLUMNS": "200", "COLDBREW_HOME": str(home), "COLDBREW_API_KEY": None})
    first = runner.invoke(app, ["keys", "create", "--role", "admin", "--local", "--json"])
    assert first.exit_code == 0, first.output
    admin = json.loads(first.output)["key"]
    server = Server(home, env={"COLDBREW_AUTH": "on"})
    server.start()
    try:
        env = {"COLDBREW_URL": server.url}
        denied = runner.invoke(app, ["ls"], env=env)
        assert denied.exit_code == 1
        assert "UNAUTHORIZED" in denied.output
        as_admin = {**env, "COLDBREW_API_KEY": admin}
        assert runner.invoke(app, ["ls", "--json"], env=as_admin).exit_code == 0
        made = runner.invoke(
            app,
            ["keys", "create", "--role", "invoker", "--functions", "digits", "--json"],
            env=as_admin,
        )
        assert made.exit_code == 0, made.output
        invoker = json.loads(made.output)
        listed = runner.invoke(app, ["keys", "ls", "--json"], env=as_admin)
        assert invoker["id"] in listed.output
        assert invoker["key"] not in listed.output  # secrets are shown once, never listed
        as_invoker = {**env, "COLDBREW_API_KEY": invoker["key"]}
        assert runner.invoke(app, ["keys", "ls"], env=as_invoker).exit_code == 1
        revoked = runner.invoke(app, ["keys", "revoke", invoker["id"]], env=as_admin)
        assert revoked.exit_code == 0, revoked.output
        assert runner.invoke(app, ["ls"], env=as_invoker).exit_code == 1
        audit = runner.invoke(app, ["audit", "--json"], env=as_admin)
        assert audit.exit_code == 0, audit.output
        actions = {event["action"] for event in json.loads(audit.output)}
        assert {"key.create", "key.revoke"} <= actions
    finally:
        server.stop()


def test_logs_alerts_and_cost_from_the_cli(server: Server, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", HANDLER, 'handler = "handler:handler"\nmemory_mb = 256\n')
    assert server.deploy_folder("operated", bundle).status_code == 201
    for n in range(3):
        server.invoke("operated", {"n": n}, headers={"x-request-id": f"op-{n}"})
    runner = CliRunner(env={"COLUMNS": "200", "COLDBREW_URL": server.url})
    logs = runner.invoke(app, ["logs", "operated", "--request-id", "op-1"])
    assert logs.exit_code == 0, logs.output
    assert "served 1" in logs.output and "served 2" not in logs.output
    alerts = runner.invoke(app, ["alerts", "--json"])
    assert alerts.exit_code == 0, alerts.output
    cost = runner.invoke(app, ["cost", "--function", "operated", "--json", "--since", "1h"])
    assert cost.exit_code == 0, cost.output
    assert "operated" in cost.output
    table = runner.invoke(app, ["cost", "--always-on-hourly", "0.10"])
    assert table.exit_code == 0, table.output
