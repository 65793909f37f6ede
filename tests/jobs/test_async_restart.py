"""A gateway that stops cleanly hands its running events back at once (no waiting for their
leases), and the whole async path on a PostgreSQL registry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from jobs_support import start_together
from sqlalchemy import create_engine, text

from support import Server, write_bundle

HANDLER = """
import time

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"request_id": context.aws_request_id}
"""
CONFIG = """
handler = 'handler:handler'
concurrency = 8
max_instances = 1
max_queue = 100

[destinations]
on_success = 'results'
"""


def _run_ids(server: Server, name: str) -> set[str]:
    found = server.client.get(f"/v1/functions/{name}/results", params={"limit": 1000}).json()
    return {r["requestContext"]["requestId"] for r in found["results"]}


def _wait_all(server: Server, name: str, ids: list[str], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if set(ids) <= _run_ids(server, name):
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{len(set(ids) - _run_ids(server, name))} events never ran")


@pytest.mark.timeout(180)
def test_a_clean_stop_hands_running_events_back(tmp_path: Path) -> None:
    # A visibility timeout far longer than the test: only a release at stop lets the restarted
    # gateway run the interrupted events quickly.
    env = {"COLDBREW_ASYNC_VISIBILITY_S": "600", "COLDBREW_ASYNC_POLL_S": "0.1"}
    home = tmp_path / "home"
    first = Server(home, env)
    try:
        first.start()
        folder = write_bundle(tmp_path / "b", HANDLER, CONFIG)
        assert first.deploy_folder("long", folder).status_code == 201
        ids = [
            first.client.post("/v1/functions/long/invoke?async=1", json={"sleep": 7}).json()[
                "request_id"
            ]
            for _ in range(4)
        ]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait until they are leased and running
            events = first.client.get("/v1/functions/long/events").json()["events"]
            if all(e["attempts"] == 1 for e in events):
                break
            time.sleep(0.1)
    finally:
        first.stop()  # SIGTERM: 5 s of drain, then the leases go back
    second = Server(home, env)
    try:
        second.start()
        # They run again at once (each sleeps 7 s, longer than the 5 s drain), well before
        # a 600 s lease would expire.
        _wait_all(second, "long", ids, 90)
        attempts = {
            e["request_id"]: e["attempts"]
            for e in second.client.get("/v1/functions/long/events").json()["events"]
        }
        assert all(attempts[i] == 2 for i in ids), attempts
    finally:
        second.stop()


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_async_on_a_postgresql_registry(tmp_path: Path, postgres_url: str) -> None:
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    env = {"COLDBREW_DATABASE_URL": postgres_url, "COLDBREW_ASYNC_POLL_S": "0.1"}
    # One home (the artifact store is a local folder), one PostgreSQL registry.
    one, two = Server(tmp_path / "home", env), Server(tmp_path / "home", env)
    try:
        start_together(one, two)
        folder = write_bundle(tmp_path / "bundle", HANDLER, CONFIG)
        deployed = one.deploy_folder("pg", folder)
        assert deployed.status_code == 201, deployed.text
        # Submitted to both gateways; either may run any of them (SKIP LOCKED leases).
        ids = [
            server.client.post("/v1/functions/pg/invoke?async=1", json={"sleep": 0.05}).json()[
                "request_id"
            ]
            for _ in range(20)
            for server in (one, two)
        ]
        _wait_all(one, "pg", ids, 60)
        states = one.client.get("/v1/functions/pg/events", params={"limit": 100}).json()
        assert {e["state"] for e in states["events"]} == {"succeeded"}
        assert len(states["events"]) == 40
    finally:
        one.stop()
        two.stop()
