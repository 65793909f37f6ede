"""Event sources on real services: an S3 prefix on moto's server (each new object invokes once,
and a restarted gateway neither loses nor replays any), a watched folder, a Redis stream read
in batches (a failing entry is retried, then dead-lettered; the others are acked once), and
malformed ``[[event_source]]`` tables refused at deploy.

One gateway home for the module: the first gateway delivers the S3 prefix's first objects, the
second (restarted on the same registry) the rest, and runs the other sources' tests."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from typer.testing import CliRunner

from coldbrew.cli.main import app
from support import Server, require_service, wait_for, write_bundle

REDIS_URL = "redis://127.0.0.1:6379/0"
ENV = {
    "COLDBREW_EVENT_SOURCE_SYNC_S": "0.3",
    "COLDBREW_ASYNC_POLL_S": "0.1",
}
RECORDER = """
def handler(event, context):
    return {"ok": True}
"""
RESULTS = """
concurrency = 8  # one instance runs every event: no cold start per object

[destinations]
on_success = "results"
"""
S3_CONFIG = """handler = "handler:handler"
{results}
[[event_source]]
kind = "s3"
bucket = "{bucket}"
prefix = "uploads/"
endpoint_url = "{endpoint}"
region = "us-east-1"
poll_s = 0.3
"""


@pytest.fixture(scope="module")
def redis_client() -> Any:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        client.ping()
    except Exception as exc:
        require_service("Redis at 127.0.0.1:6379", exc)
    return client


def _payloads(server: Server, name: str, at_least: int = 0) -> list[dict[str, Any]]:
    """The events of the function's successful runs (its ``results`` destination); [] while
    there are fewer than ``at_least``."""
    found = server.client.get(f"/v1/functions/{name}/results", params={"limit": 1000}).json()
    out = [r["requestPayload"] for r in found["results"] if r["condition"] == "Success"]
    return out if len(out) >= at_least else []


def _keys(payloads: list[dict[str, Any]]) -> list[str]:
    return sorted(unquote_plus(p["Records"][0]["s3"]["object"]["key"]) for p in payloads)


@dataclass
class World:
    server: Server
    """The second gateway, started on the home the first one used."""
    bucket: str
    first: list[dict[str, Any]]
    """The S3 events the first gateway delivered."""


@pytest.fixture(scope="module")
def world(moto: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A gateway delivers an S3 prefix's first three objects and stops; two more objects
    arrive while none runs (one overwrites an object delivered before); a second starts."""
    from s3_support import new_bucket

    tmp = tmp_path_factory.mktemp("sources")
    s3, bucket = new_bucket(moto)
    s3.put_object(Bucket=bucket, Key="elsewhere/skip.csv", Body=b"not under the prefix")
    first = Server(tmp / "home", ENV)
    try:
        first.start()
        config = S3_CONFIG.format(results=RESULTS, bucket=bucket, endpoint=moto)
        bundle = write_bundle(tmp / "s3fn", RECORDER, config)
        assert first.deploy_folder("s3fn", bundle).status_code == 201
        for i in range(3):
            s3.put_object(Bucket=bucket, Key=f"uploads/day {i}.csv", Body=f"a,b\n{i},2\n".encode())
        delivered = wait_for(lambda: _payloads(first, "s3fn", 3), 30, "three S3 events")
    finally:
        first.stop()
    s3.put_object(Bucket=bucket, Key="uploads/late.csv", Body=b"x\n")
    s3.put_object(Bucket=bucket, Key="uploads/day 0.csv", Body=b"a,b\n9,9\n")
    second = Server(tmp / "home", ENV)
    try:
        second.start()
        yield World(second, bucket, delivered)
    finally:
        second.stop()


def test_s3_new_objects_arrive_in_lambdas_s3_event_shape(world: World) -> None:
    assert _keys(world.first) == ["uploads/day 0.csv", "uploads/day 1.csv", "uploads/day 2.csv"]
    record = world.first[0]["Records"][0]
    assert record["eventSource"] == "aws:s3"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["awsRegion"] == "us-east-1"
    assert record["eventTime"].endswith("Z")
    assert record["s3"]["bucket"]["name"] == world.bucket
    assert record["s3"]["object"]["key"].startswith("uploads/day+")  # URL-encoded, as S3's
    assert record["s3"]["object"]["size"] == len(b"a,b\n0,2\n")
    assert record["s3"]["object"]["eTag"] in {
        hashlib.md5(f"a,b\n{i},2\n".encode()).hexdigest() for i in range(3)
    }


def test_s3_a_restarted_gateway_neither_loses_nor_replays(world: World) -> None:
    server = world.server
    wait_for(lambda: _payloads(server, "s3fn", 5), 30, "the two objects of the downtime")
    time.sleep(1.0)  # three more polls: an object delivered before would be delivered again
    assert _keys(_payloads(server, "s3fn")) == [
        "uploads/day 0.csv",  # twice: overwritten while no gateway ran
        "uploads/day 0.csv",
        "uploads/day 1.csv",
        "uploads/day 2.csv",
        "uploads/late.csv",
    ]
    listed = server.client.get("/v1/functions/s3fn/sources").json()["sources"]
    assert [s["kind"] for s in listed] == ["s3"]
    assert listed[0]["delivered"] == 2 and listed[0]["last_error"] is None


def test_a_watched_folder_delivers_s3_shaped_events(world: World, tmp_path: Path) -> None:
    server = world.server
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    config = f"""handler = "handler:handler"
{RESULTS}
[[event_source]]
kind = "folder"
path = "{inbox}"
suffix = ".jsonl"
settle_s = 0
poll_s = 0.3
"""
    bundle = write_bundle(tmp_path / "folderfn", RECORDER, config)
    assert server.deploy_folder("folderfn", bundle).status_code == 201
    (inbox / "sub" / "a b.jsonl").write_bytes(b'{"x": 1}\n')
    (inbox / "top.jsonl").write_bytes(b'{"x": 2}\n')
    (inbox / "ignored.txt").write_bytes(b"wrong suffix")
    (inbox / ".partial.jsonl").write_bytes(b"a dotfile")
    wait_for(lambda: _payloads(server, "folderfn", 2), 30, "two folder events")
    time.sleep(0.7)  # two more polls: nothing else comes
    payloads = _payloads(server, "folderfn")
    assert _keys(payloads) == ["sub/a b.jsonl", "top.jsonl"]
    record = next(p for p in payloads if "sub" in p["Records"][0]["s3"]["object"]["key"])
    s3 = record["Records"][0]["s3"]
    assert s3["bucket"]["name"] == "inbox"
    assert s3["object"]["key"] == "sub/a+b.jsonl"
    assert s3["object"]["eTag"] == hashlib.md5(b'{"x": 1}\n').hexdigest()
    assert s3["object"]["size"] == 9


REDIS_HANDLER = """
import os
import redis

r = redis.Redis.from_url(os.environ["REDIS"], decode_responses=True)

def handler(event, context):
    prefix = os.environ["PREFIX"]
    r.rpush(prefix + ":batches", len(event["Records"]))
    failures = []
    for record in event["Records"]:
        r.hincrby(prefix + ":deliveries", record["body"], 1)
        if record["body"] == "bad":
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
"""


def test_a_redis_stream_batch_acks_the_good_and_dead_letters_the_failing(
    world: World, redis_client: Any, tmp_path: Path
) -> None:
    server, r = world.server, redis_client
    prefix = f"coldbrew-test-{uuid.uuid4().hex[:8]}"
    stream = f"{prefix}:in"
    for body in ("one", "bad", "two"):  # before the deploy: TRIM_HORIZON reads them as a batch
        r.xadd(stream, {"body": body, "origin": "test"})
    config = f"""handler = "handler:handler"

[environment]
REDIS = "{REDIS_URL}"
PREFIX = "{prefix}"

[[event_source]]
kind = "redis"
url = "{REDIS_URL}"
stream = "{stream}"
batch_size = 10
batching_window_s = 0.2
max_retry_attempts = 1
visibility_timeout_s = 0.5
"""
    bundle = write_bundle(tmp_path / "streamfn", REDIS_HANDLER, config)
    try:
        assert server.deploy_folder("streamfn", bundle).status_code == 201
        dlq = wait_for(
            lambda: server.client.get("/v1/functions/streamfn/dlq").json().get("dead_letters"),
            30,
            "the failing entry in the dead letters",
        )
        assert r.hgetall(f"{prefix}:deliveries") == {"one": "1", "two": "1", "bad": "2"}
        assert r.lrange(f"{prefix}:batches", 0, -1) == ["3", "1"]  # one batch, then the retry
        assert len(dlq) == 1 and dlq[0]["reason"] == "RetriesExhausted"
        assert dlq[0]["attempts"] == 2
        group = r.xinfo_groups(stream)[0]
        assert group["name"] == "coldbrew-streamfn" and group["pending"] == 0  # all acked
        listed = server.client.get("/v1/functions/streamfn/sources").json()["sources"]
        assert listed[0]["dead_lettered"] == 1 and listed[0]["retried"] == 1
        assert listed[0]["lag"] == {"lag": 0, "pending": 0}
        shown = CliRunner(env={"COLUMNS": "200", "COLDBREW_URL": server.url}).invoke(
            app, ["source", "ls", "streamfn"]
        )
        assert shown.exit_code == 0, shown.output
        assert "redis" in shown.output and stream in shown.output and "pending 0" in shown.output
        metrics = server.client.get("/metrics").text
        dead = 'coldbrew_async_events_total{function="streamfn",outcome="dead_lettered"} 1.0'
        assert dead in metrics
    finally:
        r.delete(stream, f"{prefix}:deliveries", f"{prefix}:batches")


def test_malformed_sources_are_refused_at_deploy(world: World, tmp_path: Path) -> None:
    for i, (table, reason) in enumerate(
        [
            ('kind = "redis"\nurl = "redis://x"\nstream = "s"\nbatch_size = 0', "batch_size"),
            ('kind = "sqs"\nurl = "x"', "kind is one of"),
            ('kind = "folder"\npath = "relative/inbox"', "absolute"),
        ]
    ):
        bundle = write_bundle(
            tmp_path / f"bad{i}",
            RECORDER,
            f'handler = "handler:handler"\n[[event_source]]\n{table}\n',
        )
        answer = world.server.deploy_folder("badsource", bundle)
        assert answer.status_code == 400, answer.text
        assert reason in answer.text
