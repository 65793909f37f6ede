"""Example 3, water quality from device bursts, end to end with the machine's real services.

The seed's Lambda handler (examples/water_quality/handler.py: validates readings, answers
VALIDATION_ERROR / INFERENCE_ERROR) with its model loaded from S3 and cached in /tmp and in
memory; S3 is moto's server on loopback, reached through ``AWS_ENDPOINT_URL_S3`` with its keys
in coldbrew secrets. Devices publish bursts of readings to the machine's Mosquitto
(127.0.0.1:1883) and do not wait; an ``[[event_source]]`` turns each message into an async
invocation of the ``prod`` alias; the ``results`` destination records every outcome. Then
model updates and rollbacks, the seed's way (a new S3 object, the variable pointing at it) and
the coldbrew way (``deploy --model``, ``alias set``).

Skips without Mosquitto, unless COLDBREW_REQUIRE_SERVICES=1 (then it fails).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from coldbrew.cli.main import app
from s3_support import moto_s3, new_bucket
from support import Server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "water_quality"
BROKER = ("127.0.0.1", 1883)
READING = {
    "ph": 7.2,
    "hardness": 180,
    "solids": 21000,
    "chloramines": 3.1,
    "sulfate": 240,
    "conductivity": 380,
    "organic_carbon": 12,
    "trihalomethanes": 60,
    "turbidity": 3.5,
}
TOML = """handler = "handler:handler"
description = "water quality from device bursts: model in S3, readings over MQTT"
memory_mb = 256
timeout_s = 10

[environment]
MODEL_S3_URI = "s3://{bucket}/water-quality/{model}"
AWS_ENDPOINT_URL_S3 = "{endpoint}"
AWS_DEFAULT_REGION = "us-east-1"

[secrets]
AWS_ACCESS_KEY_ID = "models-key-id"
AWS_SECRET_ACCESS_KEY = "models-secret"

[destinations]
on_success = "results"
on_failure = "results"

[[event_source]]
kind = "mqtt"
url = "mqtt://127.0.0.1:1883"
topic = "{prefix}/+/readings"
qualifier = "prod"
"""


def _broker_up() -> bool:
    try:
        with socket.create_connection(BROKER, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module", autouse=True)
def mosquitto() -> None:
    if _broker_up():
        return
    reason = "no MQTT broker (Mosquitto) at 127.0.0.1:1883"
    if os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (COLDBREW_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def _train_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("water_train_under_test", EXAMPLE / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cli(args: list[str], stdin: str | None = None) -> Result:
    result = CliRunner(env={"COLUMNS": "200", "COLDBREW_URL": None}).invoke(app, args, input=stdin)
    assert result.exit_code == 0, f"coldbrew {' '.join(args)}: {result.output}"
    return result


class Devices:
    """Devices on the broker: publish and go (QoS 1, nobody waits for an answer)."""

    def __init__(self, prefix: str) -> None:
        import paho.mqtt.client as mqtt

        self.prefix = prefix
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{prefix}")
        self.client.connect(*BROKER)
        self.client.loop_start()

    def publish(self, device: str, payload: Any) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(f"{self.prefix}/{device}/readings", body, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("water")
    train = _train_module()
    models = tmp / "models"
    for seed, name in ((7, "v1.json"), (8, "v2.json"), (9, "new.json")):
        train.build(models, seed=seed, filename=name)
    prefix = f"coldbrew-test-{uuid.uuid4().hex[:8]}"
    with moto_s3() as endpoint:
        s3, bucket = new_bucket(endpoint)
        for name in ("v1.json", "v2.json"):
            s3.upload_file(str(models / name), bucket, f"water-quality/{name}")
        bundle = tmp / "bundle"
        shutil.copytree(EXAMPLE, bundle, ignore=shutil.ignore_patterns("model.*", "__pycache__"))
        server = Server(tmp / "home", env={"COLDBREW_EVENT_SOURCE_SYNC_S": "0.5"})
        server.start()
        devices = Devices(prefix)
        try:
            yield {
                "server": server,
                "bundle": bundle,
                "models": models,
                "bucket": bucket,
                "endpoint": endpoint,
                "prefix": prefix,
                "devices": devices,
            }
        finally:
            devices.close()
            server.stop()


def _deploy_s3_bundle(w: dict[str, Any], model: str) -> int:
    toml = TOML.format(bucket=w["bucket"], model=model, endpoint=w["endpoint"], prefix=w["prefix"])
    (w["bundle"] / "coldbrew.toml").write_text(toml)
    server: Server = w["server"]
    _cli(["deploy", str(w["bundle"]), "--name", "water-quality", "--url", server.url])
    return int(server.client.get("/v1/functions/water-quality").json()["latest_version"])


def _results(server: Server, after: int) -> list[dict[str, Any]]:
    answer = server.client.get("/v1/functions/water-quality/results", params={"after": after})
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]


def _wait_results(server: Server, after: int, count: int, timeout_s: float = 40) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    found: list[Any] = []
    while time.monotonic() < deadline:
        found = _results(server, after)
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{len(found)} of {count} results after {timeout_s} s: {found[-3:]}")


def _body(record: dict[str, Any]) -> dict[str, Any]:
    response = record["responsePayload"]
    return {"statusCode": response["statusCode"], **json.loads(response["body"])}


def _last_id(server: Server) -> int:
    records = _results(server, 0)
    return max((r["id"] for r in records), default=0)


def _model_behind_prod(w: dict[str, Any], device: str = "probe") -> str:
    """Publish one reading and return which model answered it."""
    server: Server = w["server"]
    after = _last_id(server)
    w["devices"].publish(device, {"readings": [READING]})
    [record] = _wait_results(server, after, 1)
    body = _body(record)
    assert body["statusCode"] == 200, body
    return str(body["model"])


def test_bursts_over_mqtt_then_model_updates_and_rollbacks(world: dict[str, Any]) -> None:
    w, server = world, world["server"]
    _cli(["secrets", "set", "models-key-id", "--url", server.url], stdin="testing")
    _cli(["secrets", "set", "models-secret", "--url", server.url], stdin="testing")
    assert _deploy_s3_bundle(w, "v1.json") == 1
    _cli(["alias", "set", "water-quality", "prod", "1", "--url", server.url])

    # The model comes from S3 (through the variable's endpoint, with the secrets' keys).
    sync = server.invoke("water-quality:prod", READING)
    assert sync.status_code == 200, sync.text
    assert sync.json()["model"].startswith(f"s3://{w['bucket']}/water-quality/v1.json@")

    # The source subscribes within a sync period: probe until a message comes through.
    deadline = time.monotonic() + 30
    while not _results(server, 0):
        assert time.monotonic() < deadline, "no MQTT message became an invocation"
        w["devices"].publish("probe", {"readings": [READING]})
        time.sleep(0.5)
    time.sleep(1)  # let the probes in flight land
    after = _last_id(server)

    # A burst: 3 devices x 8 messages at once, 2 invalid readings, 1 message that is not JSON.
    started = time.monotonic()
    bad = {k: v for k, v in READING.items() if k != "turbidity"}
    for device in ("pump-1", "pump-2", "tank-3"):
        for i in range(8):
            reading = bad if device == "tank-3" and i in (2, 5) else {**READING, "ph": 6.6 + i / 5}
            w["devices"].publish(device, {"readings": [reading]})
    w["devices"].publish("pump-1", b"not json at all")
    published_s = time.monotonic() - started
    records = _wait_results(server, after, 24)
    done_s = time.monotonic() - started
    print(f"\nburst of 24 messages published in {published_s:.2f} s, all results in {done_s:.2f} s")
    assert len(records) == 24  # the non-JSON message was dropped, not invoked
    bodies = [_body(r) for r in records]
    assert sum(b["statusCode"] == 200 for b in bodies) == 22
    refused = [b for b in bodies if b["statusCode"] == 400]
    assert len(refused) == 2
    assert all(b["error"]["code"] == "VALIDATION_ERROR" for b in refused)
    assert "turbidity" in refused[0]["error"]["message"]
    assert all(b["model"].endswith("@" + b["model"].split("@")[1]) for b in bodies if "model" in b)
    assert {r["requestContext"]["condition"] for r in records} == {"Success"}

    # The seed's way: a new object in S3 and the variable pointing at it (a new version).
    assert _deploy_s3_bundle(w, "v2.json") == 2
    _cli(["alias", "set", "water-quality", "prod", "2", "--url", server.url])
    assert "/water-quality/v2.json@" in _model_behind_prod(w)
    _cli(["alias", "set", "water-quality", "prod", "1", "--url", server.url])  # rollback
    assert "/water-quality/v1.json@" in _model_behind_prod(w)

    # The coldbrew way: a new model file, same code and config; a model in the bundle wins.
    new = str(w["models"] / "new.json")
    _cli(["deploy", "water-quality", "--model", new, "--url", server.url])
    _cli(["alias", "set", "water-quality", "prod", "3", "--url", server.url])
    assert _model_behind_prod(w) == "bundle:new.json"
    _cli(["alias", "set", "water-quality", "prod", "2", "--url", server.url])  # rollback
    assert "/water-quality/v2.json@" in _model_behind_prod(w)


def test_a_redeploy_without_the_table_unsubscribes(world: dict[str, Any]) -> None:
    """Runs after the test above: the source follows the latest version's config."""
    server: Server = world["server"]
    sources = server.client.get("/v1/functions/water-quality").json()
    assert sources["latest_version"] >= 3
    toml = (world["bundle"] / "coldbrew.toml").read_text()
    (world["bundle"] / "coldbrew.toml").write_text(toml.split("[[event_source]]")[0])
    _cli(["deploy", str(world["bundle"]), "--name", "water-quality", "--url", server.url])
    latest = server.client.get("/v1/functions/water-quality").json()["latest_version"]
    assert latest == sources["latest_version"] + 1
    _cli(["alias", "set", "water-quality", "prod", str(latest), "--url", server.url])
    time.sleep(2)  # > 2 sync periods
    after = _last_id(server)
    world["devices"].publish("pump-1", {"readings": [READING]})
    time.sleep(3)
    assert _results(server, after) == []
