"""Batch jobs end to end on one real, auth-on gateway (docs/ASYNC.md "Batch jobs"): the CLI
with its results and errors files, bad input refused with its line, who may see which job,
cancel, and, last, a gateway killed with -9 mid-job whose restart completes the job with every
row in the output exactly once."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from coldbrew.jobs.batch_formats import read_table
from coldbrew.registry.security import SecurityStore
from coldbrew.security.keyring import Keyring, KeySpec
from support import Server, pack_folder, write_bundle

HANDLER = """
import time

def handler(event, context):
    if "instances" in event:  # packed: many rows, one answer per row
        if any(row[0] < 0 for row in event["instances"]):
            raise ValueError("negative")
        return {"predictions": [row[0] * 2 for row in event["instances"]], "classes": [0, 1]}
    time.sleep(event.get("sleep") or 0)
    if event.get("fail"):
        raise ValueError(f"row {event['n']} refused")
    return {"n": event["n"], "twice": event["n"] * 2}
"""
# Not batched: chunks of min(64, 16 x 2) = 32 rows, 3 at a time (96 rows fit its queue of 100).
# A long queue timeout: rows wait out a slow first cold start instead of being throttled and
# retried with a backoff (on a loaded machine a version template takes seconds).
CONFIG = "handler = 'handler:handler'\nconcurrency = 16\nmax_instances = 2\nqueue_timeout_s = 60\n"
ENV = {
    "COLDBREW_AUTH": "on",
    "COLDBREW_API_KEY": "",
    "COLDBREW_PRELOAD_MODULES": "[]",  # plain handlers: a fast start
    "COLDBREW_ASYNC_VISIBILITY_S": "2",  # a killed gateway's job is claimed again after 2 s
    "COLDBREW_ASYNC_POLL_S": "0.1",
}
FINAL = ("completed", "failed", "cancelled")


class Gateway:
    """The module's gateway (restarted by the crash test) and its keys."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.server = Server(home, ENV)
        self.keys: dict[str, str | None] = {"none": None}

    def make_key(self, role: str, functions: tuple[str, ...] = ("*",)) -> str:
        store = SecurityStore(f"sqlite:///{self.home / 'registry.db'}")
        try:
            return Keyring(store).create(KeySpec(role=role, functions=functions))[1]
        finally:
            store.close()

    def call(self, method: str, path: str, role: str = "admin", **kwargs: Any) -> httpx.Response:
        token = self.keys[role]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.server.client.request(method, path, headers=headers, **kwargs)

    def submit(self, name: str, body: bytes, fmt: str, role: str = "admin", **params: Any):
        return self.call(
            "POST",
            f"/v1/functions/{name}/jobs",
            role,
            params={"format": fmt, **params},
            content=body,
        )

    def wait(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.call("GET", f"/v1/jobs/{job_id}").json()
            if job["state"] in FINAL:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish: {job}")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "COLDBREW_URL": self.server.url,
            "COLDBREW_API_KEY": self.keys["admin"],
        }
        argv = [sys.executable, "-m", "coldbrew.cli.main", "batch", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    made = Gateway(tmp_path_factory.mktemp("batch-home"))
    try:
        made.server.start()
        made.keys["admin"] = made.make_key("admin")
        for role in ("deployer", "invoker", "viewer"):
            made.keys[role] = made.make_key(role, ("alpha",))
        bundle = pack_folder(write_bundle(tmp_path_factory.mktemp("bundle"), HANDLER, CONFIG))

        def deploy(name: str) -> httpx.Response:
            files = {"file": ("b.tar.gz", bundle)}
            return made.call("POST", "/v1/functions", data={"name": name}, files=files)

        with ThreadPoolExecutor(2) as pool:  # each deploy waits for its trial load: overlap them
            for deployed in pool.map(deploy, ("alpha", "beta")):
                assert deployed.status_code == 201, deployed.text
        yield made
    finally:
        made.server.stop()


def _csv(path: Path, rows: int, fail_every: int = 0, sleep: float = 0.0) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["n", "fail", "sleep"])
        for n in range(rows):
            writer.writerow([n, int(bool(fail_every) and n % fail_every == 3), sleep or ""])
    return path


def test_cli_submit_wait_writes_results_in_order_and_errors(
    gateway: Gateway, tmp_path: Path
) -> None:
    source = _csv(tmp_path / "rows.csv", 300, fail_every=100)
    done = gateway.cli("submit", "alpha", str(source), "--wait")
    assert done.returncode == 0, done.stderr
    assert "300/300" in done.stderr  # the progress bar's last state
    results = read_table(tmp_path / "rows.results.csv", "csv")
    failed = read_table(tmp_path / "rows.errors.csv", "csv")
    # Input order, one result per row, the failures only in the errors file with their code
    # and input line (the header is line 1).
    assert [int(r["row"]) for r in results] == [n for n in range(300) if n % 100 != 3]
    assert all(json.loads(r["output"])["twice"] == 2 * int(r["row"]) for r in results)
    assert [(int(r["row"]), int(r["line"]), r["code"]) for r in failed] == [
        (3, 5, "FUNCTION_ERROR"),
        (103, 105, "FUNCTION_ERROR"),
        (203, 205, "FUNCTION_ERROR"),
    ]
    assert failed[0]["message"] == "row 3 refused"
    ids = [r["request_id"] for r in results + failed]
    assert len(set(ids)) == 300
    # Each row was one metered invocation, under its own request id.
    usage = gateway.call("GET", "/v1/usage", params={"function": "alpha", "limit": 5000}).json()
    assert set(ids) <= {u["request_id"] for u in usage["invocations"]}

    job = gateway.call("GET", "/v1/functions/alpha/jobs").json()["jobs"][0]
    assert (job["state"], job["rows_succeeded"], job["rows_failed"]) == ("completed", 297, 3)
    assert job["chunks_total"] == job["chunks_done"] == 10 and job["rows_per_s"] > 0


def test_jsonl_to_parquet_over_http(gateway: Gateway, tmp_path: Path) -> None:
    body = b"".join(json.dumps({"n": n}).encode() + b"\n" for n in range(50))
    created = gateway.submit("alpha", body, "jsonl", output_format="parquet")
    assert created.status_code == 201, created.text
    job = gateway.wait(created.json()["id"])
    assert job["state"] == "completed" and job["rows_succeeded"] == 50
    got = gateway.call("GET", f"/v1/jobs/{job['id']}/results")
    (tmp_path / "r.parquet").write_bytes(got.content)
    rows = read_table(tmp_path / "r.parquet", "parquet")
    assert [(r["row"], json.loads(r["output"])["n"]) for r in rows] == [(n, n) for n in range(50)]


def test_packed_chunks_are_split_back_and_bad_rows_fail_alone(gateway: Gateway) -> None:
    body = b"".join(b"[%d]\n" % (-1 if n == 42 else n) for n in range(70))
    job = gateway.wait(gateway.submit("alpha", body, "jsonl", shape="packed").json()["id"])
    assert (job["rows_succeeded"], job["rows_failed"]) == (69, 1)
    rows = [
        json.loads(line)
        for line in gateway.call("GET", f"/v1/jobs/{job['id']}/results").text.splitlines()
    ]
    assert [r["output"] for r in rows[:2]] == [
        {"predictions": [0], "classes": [0, 1]},
        {"predictions": [2], "classes": [0, 1]},
    ]
    assert [r["row"] for r in rows] == [n for n in range(70) if n != 42]
    # Chunks of 32: the first and last went as one invocation each; the one holding the bad
    # row ran row by row, so only that row failed.
    ids = [r["request_id"] for r in rows]
    assert len(set(ids[:32])) == 1 and len(set(ids[32:63])) == 31 and len(set(ids[63:])) == 1
    failed = [
        json.loads(line)
        for line in gateway.call("GET", f"/v1/jobs/{job['id']}/errors").text.splitlines()
    ]
    assert [(f["row"], f["line"], f["code"]) for f in failed] == [(42, 43, "FUNCTION_ERROR")]


def test_unparseable_input_is_400_with_its_line(gateway: Gateway) -> None:
    bad_csv = gateway.submit("alpha", b"n,fail\n1,0\n2\n3,0\n", "csv")
    assert bad_csv.status_code == 400
    assert bad_csv.json()["error"]["line"] == 3 and "line 3" in bad_csv.json()["error"]["message"]
    bad_json = gateway.submit("alpha", b'{"n": 1}\n\n{"n": \n', "jsonl")
    assert (bad_json.status_code, bad_json.json()["error"]["line"]) == (400, 3)
    not_parquet = gateway.submit("alpha", b"n\n1\n", "parquet")
    assert not_parquet.json()["error"]["code"] == "VALIDATION_ERROR"
    missing = gateway.submit("nope", b"n\n1\n", "csv")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "NOT_FOUND")
    # Nothing was queued by any of them.
    assert all(j["function"] != "nope" for j in gateway.call("GET", "/v1/jobs").json()["jobs"])


def test_a_job_belongs_to_its_function(gateway: Gateway) -> None:
    beta = gateway.submit("beta", b'{"n": 1}\n', "jsonl").json()["id"]
    alpha = gateway.submit("alpha", b'{"n": 1}\n', "jsonl", role="invoker").json()["id"]
    gateway.wait(beta), gateway.wait(alpha)
    expected = {  # for none, admin, deployer, invoker, viewer (scoped keys cover alpha only)
        ("POST", "/v1/functions/beta/jobs?format=jsonl"): (401, 201, 404, 404, 404),
        ("POST", "/v1/functions/alpha/jobs?format=jsonl"): (401, 201, 201, 201, 403),
        ("GET", f"/v1/jobs/{beta}"): (401, 200, 404, 404, 404),
        ("GET", f"/v1/jobs/{alpha}"): (401, 200, 200, 200, 200),
        ("GET", f"/v1/jobs/{beta}/results"): (401, 200, 404, 404, 404),
        ("POST", f"/v1/jobs/{beta}/cancel"): (401, 200, 404, 404, 403),
        ("DELETE", f"/v1/jobs/{alpha}"): (401, 200, 200, 200, 403),
        ("GET", "/v1/functions/beta/jobs"): (401, 200, 404, 404, 404),
    }
    roles = ("none", "admin", "deployer", "invoker", "viewer")
    for (method, path), statuses in expected.items():
        body = b'{"n": 1}\n' if method == "POST" else None
        got = tuple(gateway.call(method, path, role, content=body).status_code for role in roles)
        assert got == statuses, (method, path, got)
    listed = gateway.call("GET", "/v1/jobs", "invoker").json()["jobs"]
    assert listed and {j["function"] for j in listed} == {"alpha"}
    # Naming a file on the gateway's machine is for admins only.
    sneaky = gateway.submit("alpha", b"", "csv", role="deployer", path="/etc/passwd")
    assert sneaky.status_code == 403


def test_cancel_stops_a_running_job(gateway: Gateway, tmp_path: Path) -> None:
    body = _csv(tmp_path / "slow.csv", 3000, sleep=0.02).read_bytes()
    job_id = gateway.submit("alpha", body, "csv", parallelism=1).json()["id"]
    deadline = time.monotonic() + 20
    while gateway.call("GET", f"/v1/jobs/{job_id}").json()["chunks_done"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelled = gateway.call("POST", f"/v1/jobs/{job_id}/cancel").json()
    assert cancelled["state"] == "cancelled"
    time.sleep(0.5)  # a chunk in flight when it was cancelled is never recorded
    after = gateway.call("GET", f"/v1/jobs/{job_id}").json()
    assert after["state"] == "cancelled" and after["rows_done"] == cancelled["rows_done"] < 3000
    assert gateway.call("GET", f"/v1/jobs/{job_id}/results").status_code == 409
    assert gateway.cli("wait", job_id).returncode == 1


def test_resumed_after_kill_9_every_row_exactly_once(gateway: Gateway, tmp_path: Path) -> None:
    """Last in the module: it kills the module's gateway (and starts another on its home)."""
    source = _csv(tmp_path / "big.csv", 4000, sleep=0.01)
    job_id = gateway.submit("alpha", source.read_bytes(), "csv").json()["id"]
    deadline = time.monotonic() + 30
    while (job := gateway.call("GET", f"/v1/jobs/{job_id}").json())["chunks_done"] < 5:
        assert time.monotonic() < deadline and job["state"] in ("queued", "running"), job
        time.sleep(0.02)
    process = gateway.server.process
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    gateway.server.client.close()
    gateway.server = Server(gateway.home, ENV)
    gateway.server.start()
    job = gateway.wait(job_id, timeout=60)
    assert job["state"] == "completed", job
    assert job["runs"] == 2 and job["rows_succeeded"] == 4000
    results = gateway.call("GET", f"/v1/jobs/{job_id}/results")
    rows = list(csv.DictReader(results.text.splitlines()))
    assert [int(r["row"]) for r in rows] == list(range(4000))  # each row once, in input order
    assert all(json.loads(r["output"])["n"] == int(r["row"]) for r in rows)
    assert len({r["request_id"] for r in rows}) == 4000
