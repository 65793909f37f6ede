"""A bundle's ``[[schedule]]`` with two gateways on one COLDBREW_HOME: every tick runs exactly
once (one event, one result), and a redeploy without the table removes the schedule."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from jobs_support import start_together

from support import Server, write_bundle

HANDLER = """
def handler(event, context):
    return {"got": event}
"""
CONFIG = """
handler = 'handler:handler'

[destinations]
on_success = 'results'

[[schedule]]
name = 'beat'
expression = 'rate(1 second)'
input = {k = 1}
"""
ENV = {
    "COLDBREW_SCHEDULE_POLL_S": "0.1",
    "COLDBREW_ASYNC_POLL_S": "0.1",
}


@pytest.mark.timeout(180)
def test_two_gateways_fire_each_tick_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    one, two = Server(home, ENV), Server(home, ENV)
    try:
        start_together(one, two)
        folder = write_bundle(tmp_path / "bundle", HANDLER, CONFIG)
        deployed = one.deploy_folder("beats", folder)
        assert deployed.status_code == 201, deployed.text

        def ticks() -> list[str]:
            events = one.client.get("/v1/functions/beats/events", params={"limit": 1000})
            return [
                e["idempotency_key"]
                for e in events.json()["events"]
                if (e["idempotency_key"] or "").startswith("schedule:beat:")
            ]

        deadline = time.monotonic() + 60
        while len(ticks()) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        listed = two.client.get("/v1/functions/beats/schedules").json()["schedules"]
        assert [(s["name"], s["source"], s["input"]) for s in listed] == [
            ("beat", "config", {"k": 1})
        ]
        # Redeploy without the table: the schedule goes, and its ticks stop.
        write_bundle(folder, HANDLER + "\n# v2\n", "handler = 'handler:handler'\n")
        assert one.deploy_folder("beats", folder).status_code == 201
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not one.client.get("/v1/functions/beats/schedules").json()["schedules"]:
                break
            time.sleep(0.2)
        assert one.client.get("/v1/functions/beats/schedules").json()["schedules"] == []
        time.sleep(1.5)  # let the last fired events run
        fired = ticks()
        assert len(fired) >= 5
        assert len(set(fired)) == len(fired)
        results = one.client.get("/v1/functions/beats/results", params={"limit": 1000}).json()
        runs = Counter(r["requestContext"]["requestId"] for r in results["results"])
        assert runs and max(runs.values()) == 1  # no tick ran twice
        payloads = [r["requestPayload"] for r in results["results"]]
        assert all(p == {"k": 1} for p in payloads)
        time.sleep(1.5)
        assert len(ticks()) == len(fired)  # no more ticks once the schedule is gone
    finally:
        one.stop()
        two.stop()
