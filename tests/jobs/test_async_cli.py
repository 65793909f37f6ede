"""``coldbrew invoke --async``, ``coldbrew dlq``, ``coldbrew schedule`` and ``coldbrew events``
against a real server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from coldbrew.cli.main import app
from support import Server, write_bundle

HANDLER = """
def handler(event, context):
    if event.get("fail"):
        raise RuntimeError("failing on purpose")
    return {"ok": True}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("cli-async-home"),
        {"COLDBREW_ASYNC_POLL_S": "0.1", "COLDBREW_SCHEDULE_POLL_S": "0.2"},
    )
    try:
        running.start()
        folder = write_bundle(
            tmp_path_factory.mktemp("b") / "fn", HANDLER, "handler = 'handler:handler'\n"
        )
        assert running.deploy_folder("jobs", folder).status_code == 201
        # No retries, so a failure is a dead letter at once.
        put = running.client.put(
            "/2019-09-25/functions/jobs/event-invoke-config", json={"MaximumRetryAttempts": 0}
        )
        assert put.status_code == 200, put.text
        yield running
    finally:
        running.stop()


@pytest.fixture
def cli(server: Server) -> Any:
    runner = CliRunner(env={"COLUMNS": "200", "COLDBREW_URL": server.url})

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        return result.output

    return run


def _wait(check: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_invoke_async_then_dlq_commands(cli: Any, server: Server) -> None:
    out = cli("invoke", "jobs", "--async", "-d", '{"fail": true}', "--idempotency-key", "k1")
    request_id = json.loads(out)["request_id"]
    again = json.loads(cli("invoke", "jobs", "--async", "-d", "{}", "--idempotency-key", "k1"))
    assert again == {"request_id": request_id, "status": "duplicate"}
    _wait(lambda: request_id in cli("dlq", "ls", "jobs"))
    listed = cli("dlq", "ls", "jobs")
    assert "RetriesExhausted" in listed and "failing on purpose" in listed
    shown = json.loads(cli("dlq", "show", "jobs", request_id))
    assert shown["payload"] == {"fail": True} and shown["error"]["type"] == "RuntimeError"
    assert "failed" in cli("events", "jobs")
    assert "redriven: 1 event(s)" in cli("dlq", "redrive", "jobs", request_id)
    _wait(lambda: json.loads(cli("events", "jobs", request_id))["attempts"] == 2)
    _wait(lambda: request_id in cli("dlq", "ls", "jobs"))
    assert "purged: 1 dead letter(s)" in cli("dlq", "purge", "jobs")
    assert json.loads(cli("results", "jobs")) == []  # no results destination configured
    cli("dlq", "show", "jobs", request_id, code=1)


def test_schedule_commands(cli: Any) -> None:
    out = cli("schedule", "add", "jobs", "rate(1 second)", "--name", "fast", "-d", '{"a": 1}')
    assert "schedule fast of jobs: rate(1 second)" in out
    rows = _wait(
        lambda: [s for s in json.loads(cli("schedule", "ls", "--json")) if s["last_request_id"]]
    )
    assert rows[0]["input"] == {"a": 1} and rows[0]["source"] == "cli"
    assert "fast" in cli("schedule", "ls", "jobs")
    runs = json.loads(cli("schedule", "history", "jobs", "fast", "--json"))
    assert any(r["request_id"] == rows[0]["last_request_id"] for r in runs)
    assert all(r["idempotency_key"] == f"schedule:fast:{r['tick']}" for r in runs)
    cli("schedule", "history", "jobs", "nope", code=1)
    cli("schedule", "add", "jobs", "rate(1 second)", "--name", "fast", code=1)  # CONFLICT
    cli("schedule", "add", "jobs", "cron(61 * * * ? *)", code=1)  # VALIDATION_ERROR
    assert "deleted schedule fast of jobs" in cli("schedule", "rm", "jobs", "fast")
    cli("schedule", "rm", "jobs", "fast", code=1)
