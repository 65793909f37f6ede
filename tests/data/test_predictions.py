"""The prediction log: a sampled share within statistical bounds, redaction, hashing, the
export in three formats through the real CLI, and retention of the log and the meter."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from coldbrew.observe.predictions import redact
from coldbrew.observe.retention import Retention
from coldbrew.registry import Registry
from coldbrew.registry.meter import MeterStore
from coldbrew.registry.predictions import PredictionStore
from support import Server, write_bundle

HANDLER = """
def handler(event, context):
    return {"y": event["x"] * 2, "echo": event.get("user", {}).get("email")}
"""
SAMPLED = """
handler = "handler:handler"
concurrency = 8
log_predictions = 0.1
log_redact = ["$.user.email", "$.echo"]  # paths of the event or of the output
"""
HASHED = """
handler = "handler:handler"
log_predictions = 1.0
log_inputs = "hash"
"""
N = 2000
RATE = 0.1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("predictions-home"),
        env={"COLDBREW_PREDICTION_FLUSH_INTERVAL_S": "0.2"},
    )
    running.start()
    yield running
    running.stop()


def cli(server: Server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coldbrew.cli.main", *args, "--url", server.url],
        capture_output=True,
        timeout=60,
        env={**os.environ, "COLDBREW_HOME": str(server.home)},
    )


def invoke_many(server: Server, name: str, n: int) -> dict[str, int]:
    """request id -> x, for n invocations from 8 threads."""

    def one(xs: range) -> list[tuple[str, int]]:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            done = []
            for x in xs:
                event = {"x": x, "user": {"email": f"user{x}@example.com"}}
                answer = client.post(f"/v1/functions/{name}/invoke", json=event)
                assert answer.status_code == 200, answer.text
                done.append((answer.headers["x-request-id"], x))
            return done

    with ThreadPoolExecutor(8) as pool:
        parts = pool.map(one, [range(i, n, 8) for i in range(8)])
    return dict(pair for part in parts for pair in part)


def test_sampled_share_redaction_and_exports(server: Server, tmp_path: Path) -> None:
    assert server.deploy_folder("plog", write_bundle(tmp_path / "s", HANDLER, SAMPLED)).is_success
    sent = invoke_many(server, "plog", N)
    out = tmp_path / "log.jsonl"
    done = cli(server, "predictions", "plog", "--since", "1h", "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # Binomial(N, RATE): mean 200, sd 13.4; 5 sd either side fails a correct log once in 3.5M.
    sd = math.sqrt(N * RATE * (1 - RATE))
    assert abs(len(rows) - N * RATE) <= 5 * sd, len(rows)
    ids = [row["request_id"] for row in rows]
    assert len(set(ids)) == len(ids) and set(ids) <= set(sent)
    for row in rows:
        x = sent[row["request_id"]]
        assert row["function_name"] == "plog" and row["version"] == 1 and row["status"] == "OK"
        assert json.loads(row["input"]) == {"x": x, "user": {"email": "[redacted]"}}
        assert json.loads(row["output"]) == {"y": 2 * x, "echo": "[redacted]"}
        assert row["latency_ms"] > 0 and datetime.fromisoformat(row["at"]).tzinfo is not None
        assert len(row["input_sha256"]) == 64
    # The same rows as CSV and as Parquet.
    as_csv, as_parquet = tmp_path / "log.csv", tmp_path / "log.parquet"
    for path in (as_csv, as_parquet):
        done = cli(server, "predictions", "plog", "--since", "1h", "--out", str(path))
        assert done.returncode == 0, done.stderr
    with as_csv.open() as f:
        assert [r["request_id"] for r in csv.DictReader(f)] == ids
    table = pq.read_table(as_parquet)
    assert table.column("request_id").to_pylist() == ids
    assert str(table.schema.field("at").type) == "timestamp[us, tz=UTC]"
    limited = cli(server, "predictions", "plog", "--limit", "5")
    assert limited.returncode == 0 and len(limited.stdout.splitlines()) == 5
    assert cli(server, "predictions", "nope").returncode == 1  # NOT_FOUND, one line
    future = cli(server, "predictions", "plog", "--since", "2999-01-01T00:00:00")
    assert future.returncode == 0 and future.stdout == b""


def test_hash_only_logs_no_input(server: Server, tmp_path: Path) -> None:
    assert server.deploy_folder("phash", write_bundle(tmp_path / "h", HANDLER, HASHED)).is_success
    event = {"x": 21}
    answer = server.client.post("/v1/functions/phash/invoke", content=json.dumps(event).encode())
    assert answer.status_code == 200
    lines = server.client.get("/v1/functions/phash/predictions").text.splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert row["input"] is None
    assert row["input_sha256"] == hashlib.sha256(json.dumps(event).encode()).hexdigest()
    assert json.loads(row["output"]) == {"y": 42, "echo": None}


def test_redact_paths() -> None:
    doc = {"a": {"b": 1, "c": [1, {"d": 2}]}, "e": 3}
    assert redact(doc, ["$.a.b", "$.a.c[1].d", "$.missing.x", "$.e"]) == {
        "a": {"b": "[redacted]", "c": [1, {"d": "[redacted]"}]},
        "e": "[redacted]",
    }
    assert doc["a"]["b"] == 1  # a copy


def test_retention_deletes_old_predictions_and_meter_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry = Registry(url)
    registry.migrate()
    registry.close()
    now = datetime.now(UTC)
    store, meter = PredictionStore(url), MeterStore(url)
    try:
        store.insert(
            [
                {
                    "request_id": f"r{age}",
                    "function_name": "f",
                    "version": 1,
                    "caller": None,
                    "at": now - timedelta(days=age),
                    "latency_ms": 1.0,
                    "status": "OK",
                    "input": "{}",
                    "input_sha256": "0" * 64,
                    "output": "{}",
                }
                for age in (0, 10, 40)
            ]
        )
        meter.insert(
            [
                {
                    "request_id": f"m{age}",
                    "function_name": "f",
                    "version": 1,
                    "qualifier": None,
                    "caller": None,
                    "started_at": now - timedelta(days=age),
                    "duration_ms": 1.0,
                    "billed_ms": 1,
                    "memory_mb": 128,
                    "gb_seconds": 0.0,
                    "cost_usd": 0.0,
                    "cold_start": False,
                    "init_ms": None,
                    "status": "OK",
                }
                for age in (0, 100, 500)
            ]
        )
        done = Retention(store, prediction_days=30, meter_days=400).run_once(now)
        assert done == {"predictions": 1, "meter": 1}
        assert [r["request_id"] for r in store.rows("f")] == ["r0", "r10"]
        assert Retention(store, 0, 0).run_once(now) == {"predictions": 0, "meter": 0}
    finally:
        store.close()
        meter.close()
