"""A gateway killed with SIGKILL loses no accepted async event: after a restart on the same
COLDBREW_HOME every request id that got a 202 runs (at least once).

Runs are recorded by the ``results`` destination, written by the gateway (not by the handler,
whose instance may have no writable path shared with the test)."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from support import Server, write_bundle

EVENTS = 1000
HANDLER = """
import time

def handler(event, context):
    time.sleep(0.02)
    return {"request_id": context.aws_request_id, "i": event["i"]}
"""
CONFIG = """
handler = 'handler:handler'
concurrency = 4
max_instances = 2
max_queue = 1000

[destinations]
on_success = 'results'
"""
ENV = {
    "COLDBREW_ASYNC_VISIBILITY_S": "2",
    "COLDBREW_ASYNC_POLL_S": "0.1",
    "COLDBREW_ASYNC_CONCURRENCY": "8",
}


def _results(server: Server) -> dict[str, int]:
    """request id -> times its result was recorded."""
    seen: dict[str, int] = {}
    after = 0
    while True:
        page = server.client.get(
            "/v1/functions/slow/results", params={"after": after, "limit": 1000}
        ).json()["results"]
        if not page:
            return seen
        for record in page:
            rid = record["requestContext"]["requestId"]
            seen[rid] = seen.get(rid, 0) + 1
        after = page[-1]["id"]


def _submit_all(server: Server, threads: int = 4) -> list[str]:
    def some(start: int) -> list[str]:
        ids = []
        with httpx.Client(base_url=server.url, timeout=30) as client:  # one connection each
            for i in range(start, EVENTS, threads):
                response = client.post("/v1/functions/slow/invoke?async=1", json={"i": i})
                assert response.status_code == 202, response.text
                ids.append(str(response.json()["request_id"]))
        return ids

    with ThreadPoolExecutor(threads) as pool:
        return [rid for part in pool.map(some, range(threads)) for rid in part]


@pytest.mark.timeout(300)
def test_sigkill_loses_no_accepted_event(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = Server(home, ENV)
    leftovers: list[psutil.Process] = []
    try:
        first.start()
        folder = write_bundle(tmp_path / "bundle", HANDLER, CONFIG)
        assert first.deploy_folder("slow", folder).status_code == 201
        accepted = _submit_all(first)
        assert len(set(accepted)) == EVENTS
        # Let some run, so that the kill lands with events leased and in flight.
        deadline = time.monotonic() + 30
        while len(_results(first)) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.process is not None
        leftovers = psutil.Process(first.process.pid).children(recursive=True)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
    finally:
        first.stop()
    done_before = len(_results_from_db(home))
    assert done_before < EVENTS, "the kill came too late to test anything"

    second = Server(home, ENV)
    try:
        second.start()
        deadline = time.monotonic() + 90
        seen: dict[str, int] = {}
        while time.monotonic() < deadline:
            seen = _results(second)
            if set(accepted) <= set(seen):
                break
            time.sleep(0.25)
        missing = set(accepted) - set(seen)
        assert not missing, f"{len(missing)} accepted events never ran, e.g. {sorted(missing)[:3]}"
        queued = second.client.get("/v1/functions/slow/events", params={"state": "queued"})
        assert queued.json()["events"] == []
        # The events leased when the gateway died ran again once their leases expired: same
        # request id, a second attempt (how a duplicate is recognised).
        events = second.client.get("/v1/functions/slow/events", params={"limit": 1000}).json()
        assert any(e["attempts"] >= 2 for e in events["events"])
    finally:
        second.stop()
        for process in leftovers:  # children of the killed gateway, if any outlived it
            if process.is_running():
                process.kill()


def _results_from_db(home: Path) -> set[str]:
    """What had run before the kill, read straight from the registry file."""
    import sqlite3

    with sqlite3.connect(home / "registry.db") as db:
        return {row[0] for row in db.execute("SELECT request_id FROM async_results")}
