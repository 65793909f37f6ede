"""The prediction cache: identical events answered without running the handler, until the TTL;
counted in /metrics; a hit billed no duration in the meter; local and Redis backends."""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coldbrew.registry.meter import MeterStore
from support import Server, write_bundle

HANDLER = """
import time
RUNS = 0  # {marker}: a fresh content hash on every test run (Redis outlives the server)

def handler(event, context):
    global RUNS
    RUNS += 1
    time.sleep(0.02)
    return {{"x": event["x"], "runs": RUNS}}
"""
CONFIG = """
handler = "handler:handler"
max_instances = 1

[prediction_cache]
backend = "{backend}"
ttl_s = {ttl}
"""


def redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"COLDBREW_METER_FLUSH_INTERVAL_S": "0.2"}
    if redis_up():
        env["COLDBREW_REDIS_URL"] = "redis://127.0.0.1:6379/4"
    running = Server(tmp_path_factory.mktemp("pcache-home"), env=env)
    running.start()
    yield running
    running.stop()


def deploy(server: Server, folder: Path, name: str, backend: str, ttl: float) -> None:
    handler = HANDLER.format(marker=uuid.uuid4().hex)
    answer = server.deploy_folder(
        name, write_bundle(folder, handler, CONFIG.format(backend=backend, ttl=ttl))
    )
    assert answer.status_code == 201, answer.text


def cache_count(server: Server, name: str, result: str) -> float:
    found = re.search(
        rf'coldbrew_prediction_cache_total\{{function="{name}",result="{result}"\}} ([0-9.]+)',
        server.client.get("/metrics").text,
    )
    return float(found.group(1)) if found else 0.0


def check_cache(server: Server, name: str, ttl: float) -> None:
    first = server.invoke(name, {"x": 1}).json()
    again = [server.invoke(name, {"x": 1}).json() for _ in range(4)]
    assert again == [first] * 4  # the handler ran once for five identical events
    other = server.invoke(name, {"x": 2}).json()
    assert other["runs"] == first["runs"] + 1
    time.sleep(ttl + 0.2)
    assert server.invoke(name, {"x": 1}).json()["runs"] == first["runs"] + 2  # expired
    assert cache_count(server, name, "hit") == 4
    assert cache_count(server, name, "miss") == 3


def test_local_cache_answers_identical_events(server: Server, tmp_path: Path) -> None:
    deploy(server, tmp_path / "l", "pc-local", "local", 1.0)
    check_cache(server, "pc-local", 1.0)
    # The meter: hits cost the request, no duration.
    time.sleep(0.6)
    meter = MeterStore(f"sqlite:///{server.home / 'registry.db'}")
    try:
        rows = meter.records("pc-local")
    finally:
        meter.close()
    billed = sorted(row["billed_ms"] for row in rows)
    assert len(billed) == 7 and billed[:4] == [0, 0, 0, 0] and min(billed[4:]) >= 20
    # A request that asks for its logs is never a hit.
    logged = server.client.post(
        "/2015-03-31/functions/pc-local/invocations",
        content=b'{"x": 3}',
        headers={"X-Amz-Log-Type": "Tail"},
    )
    assert logged.status_code == 200


def test_redis_cache_answers_identical_events(server: Server, tmp_path: Path) -> None:
    if "COLDBREW_REDIS_URL" not in server.env:
        if os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1":
            pytest.fail("Redis at 127.0.0.1:6379 is required")
        pytest.skip("no Redis at 127.0.0.1:6379")
    deploy(server, tmp_path / "r", "pc-redis", "redis", 1.0)
    check_cache(server, "pc-redis", 1.0)


def test_off_by_default(server: Server, tmp_path: Path) -> None:
    handler = HANDLER.format(marker=uuid.uuid4().hex)
    config = 'handler = "handler:handler"\nmax_instances = 1\n'
    assert server.deploy_folder("pc-off", write_bundle(tmp_path / "o", handler, config)).is_success
    runs = [server.invoke("pc-off", {"x": 1}).json()["runs"] for _ in range(3)]
    assert runs == [runs[0], runs[0] + 1, runs[0] + 2]
