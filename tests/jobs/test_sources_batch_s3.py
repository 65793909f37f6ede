"""An S3 prefix with ``batch_job = true`` on a real gateway and moto's S3 server (docs/ASYNC.md
"From an object source"): a CSV put into the bucket becomes one batch job whose results and
errors objects are uploaded beside it, every row exactly once in input order with its request
id, and those objects start no job of their own. An upload that fails (its bucket does not
exist) is shown on the job and retried; a gateway stopped before the upload succeeded uploads
after its restart."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support import Server, wait_for, write_bundle

ENV = {
    "COLDBREW_EVENT_SOURCE_SYNC_S": "0.3",
    "COLDBREW_ASYNC_POLL_S": "0.1",
    "COLDBREW_PRELOAD_MODULES": "[]",  # a plain handler: a fast start
}
HANDLER = """
def handler(event, context):
    n = int(event["n"])
    if n % 3 == 2:
        raise ValueError(f"row {n} is refused")
    return {"n": n, "twice": n * 2}
"""
CONFIG = """handler = "handler:handler"
concurrency = 8
max_instances = 1  # one cold start serves every row
queue_timeout_s = 60  # rows wait out the cold start instead of being retried with a backoff

[[event_source]]
kind = "s3"
bucket = "{bucket}"
prefix = "in/"
endpoint_url = "{endpoint}"
region = "us-east-1"
batch_job = true
poll_s = 0.3

[[event_source]]
kind = "s3"
bucket = "{bucket}"
prefix = "later/"
endpoint_url = "{endpoint}"
region = "us-east-1"
batch_job = true
batch_output = "s3://{missing}/scored/"
poll_s = 0.3
"""
ROWS = 8
FAILING = [n for n in range(ROWS) if n % 3 == 2]


@dataclass
class World:
    server: Server
    s3: Any
    bucket: str
    missing: str
    """The bucket the ``later/`` source's ``batch_output`` names, not created at first."""


@pytest.fixture(scope="module")
def world(moto: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from s3_support import new_bucket

    tmp = tmp_path_factory.mktemp("s3batch")
    s3, bucket = new_bucket(moto)
    missing = f"coldbrew-missing-{uuid.uuid4().hex[:12]}"
    world = World(Server(tmp / "home", ENV), s3, bucket, missing)
    server = world.server
    server.start()
    try:
        config = CONFIG.format(bucket=bucket, endpoint=moto, missing=missing)
        bundle = write_bundle(tmp / "fn", HANDLER, config)
        assert server.deploy_folder("s3batch", bundle).status_code == 201
        body = "n\n" + "".join(f"{i}\n" for i in range(ROWS))
        s3.put_object(Bucket=bucket, Key="in/data.csv", Body=body.encode())
        s3.put_object(Bucket=bucket, Key="later/more.csv", Body=b"n\n1\n2\n")
        yield world
    finally:
        world.server.stop()  # the gateway the tests left running


def _object(s3: Any, bucket: str, key: str) -> list[dict[str, str]] | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except s3.exceptions.NoSuchKey:
        return None
    except s3.exceptions.NoSuchBucket:
        return None
    return list(csv.DictReader(io.StringIO(body)))


def _jobs(server: Server) -> list[dict[str, Any]]:
    return server.client.get("/v1/functions/s3batch/jobs").json()["jobs"]


def test_results_and_errors_are_uploaded_beside_the_object(world: World) -> None:
    s3, bucket = world.s3, world.bucket
    results = wait_for(
        lambda: _object(s3, bucket, "in/data.results.csv"), 25, "in/data.results.csv"
    )
    succeeded = [n for n in range(ROWS) if n not in FAILING]
    assert [int(r["row"]) for r in results] == succeeded  # each once, in input order
    assert [r["output"] for r in results] == [f'{{"n":{n},"twice":{2 * n}}}' for n in succeeded]
    failures = _object(s3, bucket, "in/data.errors.csv")
    assert failures is not None, "the errors object is uploaded before the results object"
    assert [int(r["row"]) for r in failures] == FAILING
    assert {r["code"] for r in failures} == {"FUNCTION_ERROR"}, failures
    request_ids = [r["request_id"] for r in results + failures]
    assert all(request_ids) and len(set(request_ids)) == ROWS

    (job,) = [j for j in _jobs(world.server) if j["output_uri"].startswith(f"s3://{bucket}/")]
    assert job["state"] == "completed" and job["rows_failed"] == len(FAILING)
    assert job["output_uri"] == f"s3://{bucket}/in/data.results.csv"
    assert job["errors_uri"] == f"s3://{bucket}/in/data.errors.csv"
    assert job["uploaded_at"] is not None and job["upload_error"] is None
    head = s3.head_object(Bucket=bucket, Key="in/data.results.csv")
    assert head["Metadata"] == {"coldbrew-job-id": job["id"]}

    time.sleep(1.2)  # four more polls: the uploaded objects start no job of their own
    assert len(_jobs(world.server)) == 2, _jobs(world.server)


def test_a_failed_upload_is_shown_retried_and_done_after_a_restart(
    world: World, tmp_path: Path
) -> None:
    def failing() -> dict[str, Any] | None:
        found = [j for j in _jobs(world.server) if world.missing in (j["output_uri"] or "")]
        return found[0] if found and found[0]["upload_error"] else None

    job = wait_for(failing, 25, "the later/ job's failed upload")
    assert job["state"] == "completed" and job["uploaded_at"] is None
    assert "NoSuchBucket" in job["upload_error"], job
    assert job["output_uri"] == f"s3://{world.missing}/scored/more.results.csv"
    status = subprocess.run(
        [sys.executable, "-m", "coldbrew.cli.main", "batch", "status", job["id"]],
        capture_output=True,
        text=True,
        timeout=30,
        env={**world.server.env, "COLDBREW_URL": world.server.url},
    )
    assert status.returncode == 0, status.stderr
    assert "NoSuchBucket" in status.stdout and "pending" in status.stdout, status.stdout
    sources = world.server.client.get("/v1/functions/s3batch/sources").json()
    listed = sources["sources"] if isinstance(sources, dict) else sources
    assert any(s["lag"] == {"pending_objects": 0, "pending_uploads": 1} for s in listed), listed

    # The gateway stops with the upload still pending; the bucket appears; the next gateway on
    # the same home uploads, from what the registry says alone.
    world.server.stop()
    world.s3.create_bucket(Bucket=world.missing)
    world.server = Server(world.server.home, ENV)
    world.server.start()
    results = wait_for(
        lambda: _object(world.s3, world.missing, "scored/more.results.csv"), 20, "the upload"
    )
    assert [int(r["row"]) for r in results] == [0]
    failures = _object(world.s3, world.missing, "scored/more.errors.csv")
    assert failures is not None and [int(r["row"]) for r in failures] == [1]
    after = world.server.client.get(f"/v1/jobs/{job['id']}").json()
    assert after["uploaded_at"] is not None and after["upload_error"] is None
    assert len(_jobs(world.server)) == 2  # nothing ran again
