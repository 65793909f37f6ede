"""/metrics, /v1/cost and /v1/usage after known traffic, compared to the cent (and tighter)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import Server, write_bundle

PER_REQUEST = 0.20 / 1_000_000
PER_GB_S = 0.0000166667
SLEEPY = """
import time

def handler(event, context):
    time.sleep(event.get("sleep", 0.02))
    if event.get("fail"):
        raise ValueError("asked to fail")
    print("sleeping for", event.get("sleep", 0.02))
    return {"ok": True}
"""


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("observe-home"),
        env={
            "COLDBREW_LOG_FORMAT": "json",
            "COLDBREW_ALERT_INTERVAL_S": "0.5",
            "COLDBREW_ALERT_MIN_INVOCATIONS": "3",
        },
    )
    server.start()
    yield server
    server.stop()


def sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_metrics_and_cost_match_the_traffic(observed: Server, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "b", SLEEPY, 'handler = "handler:handler"\nmemory_mb = 1024\n')
    assert observed.deploy_folder("sleepy", bundle).status_code == 201
    billed: list[int] = []
    cold = 0
    for i in range(6):
        response = observed.invoke("sleepy", {"sleep": 0.02, "fail": i == 5})
        assert response.status_code == (500 if i == 5 else 200)
        billed.append(int(response.headers["x-coldbrew-billed-duration-ms"]))
        cold += response.headers["x-coldbrew-cold-start"] == "true"
    gbs = sum(1024 / 1024 * b / 1000 for b in billed)
    expected_cost = len(billed) * PER_REQUEST + gbs * PER_GB_S

    text = observed.client.get("/metrics").text
    fv = {"function": "sleepy", "version": "1"}
    assert sample(text, "coldbrew_invocations_total", **fv) == 6
    assert sample(text, "coldbrew_invocations_total", **fv, status="OK") == 5
    assert sample(text, "coldbrew_errors_total", **fv, code="FUNCTION_ERROR") == 1
    assert sample(text, "coldbrew_cold_starts_total", **fv) == cold >= 1
    assert sample(text, "coldbrew_duration_seconds_count", **fv) == 6
    assert sample(text, "coldbrew_billed_gb_seconds_total", **fv) == pytest.approx(gbs, abs=1e-9)
    metric_cost = sample(text, "coldbrew_cost_usd_total", **fv)
    assert metric_cost == pytest.approx(expected_cost, abs=1e-12)
    assert round(metric_cost, 2) == round(expected_cost, 2)

    report = observed.client.get("/v1/cost", params={"function": "sleepy"}).json()
    row = report["functions"][0]
    assert row["key"] == "sleepy" and row["invocations"] == 6
    assert row["gb_seconds"] == pytest.approx(gbs, abs=1e-9)
    assert row["cost_usd"] == pytest.approx(expected_cost, abs=1e-12)
    assert row["cost_per_invocation_usd"] == pytest.approx(expected_cost / 6, abs=1e-12)

    usage = observed.client.get("/v1/usage", params={"function": "sleepy", "since": "1h"}).json()
    assert sorted(r["billed_ms"] for r in usage["invocations"]) == sorted(billed)
    assert {r["status"] for r in usage["invocations"]} == {"OK", "FUNCTION_ERROR"}


def test_throttles_are_counted_and_free(observed: Server, tmp_path: Path) -> None:
    import concurrent.futures

    config = 'handler = "handler:handler"\nmax_instances = 1\nmax_queue = 0\nmemory_mb = 128\n'
    bundle = write_bundle(tmp_path / "t", SLEEPY, config)
    assert observed.deploy_folder("narrow", bundle).status_code == 201
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = list(
            pool.map(lambda _: observed.invoke("narrow", {"sleep": 0.3}).status_code, range(4))
        )
    throttled = codes.count(429)
    assert throttled >= 1
    text = observed.client.get("/metrics").text
    assert sample(text, "coldbrew_throttles_total", function="narrow") == throttled
    report = observed.client.get("/v1/cost", params={"function": "narrow"}).json()
    assert report["functions"][0]["billed_requests"] == codes.count(200)


def test_logs_by_request_id_and_since(observed: Server) -> None:
    response = observed.invoke("sleepy", {"sleep": 0.001}, headers={"x-request-id": "req-logs-1"})
    assert response.status_code == 200
    deadline = time.monotonic() + 5
    lines: list[str] = []
    while time.monotonic() < deadline and not lines:
        lines = observed.client.get(
            "/v1/functions/sleepy/logs", params={"request_id": "req-logs-1"}
        ).json()["lines"]
        time.sleep(0.1)
    assert lines[0].startswith("START RequestId: req-logs-1")
    assert any("sleeping for" in line for line in lines)
    assert lines[-1].startswith("REPORT RequestId: req-logs-1")
    recent = observed.client.get("/v1/functions/sleepy/logs", params={"since": "10m"}).json()
    assert any("req-logs-1" in line for line in recent["lines"])
    assert observed.client.get("/v1/functions/nope/logs").json()["error"]["code"] == "NOT_FOUND"
    assert observed.client.get("/v1/cost", params={"since": "soon"}).status_code == 400


def test_access_log_is_json(observed: Server) -> None:
    import json

    observed.invoke("sleepy", {"sleep": 0.001}, headers={"x-request-id": "req-access-1"})
    time.sleep(0.2)
    found = [
        json.loads(line)
        for line in observed.log_path.read_text().splitlines()
        if line.startswith("{") and "req-access-1" in line
    ]
    assert found and found[0]["function"] == "sleepy" and found[0]["status"] == "OK"
    assert {"request_id", "version", "cold_start", "duration_ms", "billed_ms"} <= set(found[0])


def test_error_rate_alert_fires(observed: Server) -> None:
    for _ in range(3):
        observed.invoke("sleepy", {"sleep": 0.001, "fail": True})
    deadline = time.monotonic() + 5
    active: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        active = observed.client.get("/v1/alerts").json()["active"]
        if any(a["rule"] == "error_rate" and a["function"] == "sleepy" for a in active):
            break
        time.sleep(0.2)
    assert any(a["rule"] == "error_rate" and a["function"] == "sleepy" for a in active)
