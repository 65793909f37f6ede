"""Artifacts in an S3 bucket (moto's server): two gateways with their own homes share one
registry and one bucket; the second runs a version it never stored, fetched and verified from
the bucket into its own bundles folder; a deletion and a collection empty the bucket again."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3_support import CREDENTIALS, moto_s3, new_bucket
from support import Server, write_bundle

HANDLER = (
    "def handler(event, context):\n"
    "    return {'echo': event, 'size': len(open('w.bin', 'rb').read())}\n"
)
CONFIG = "handler = 'handler:handler'\n"
KEY = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="  # base64 of 32 bytes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with moto_s3() as endpoint:
        client, bucket = new_bucket(endpoint)
        shared = tmp_path_factory.mktemp("shared")
        env = {
            **CREDENTIALS,
            "COLDBREW_DATABASE_URL": f"sqlite:///{shared / 'registry.db'}",
            "COLDBREW_ARTIFACTS_URL": f"s3://{bucket}/team-a",
            "COLDBREW_S3_ENDPOINT_URL": endpoint,
            "COLDBREW_ARTIFACT_KEY": KEY,
            "COLDBREW_GC_GRACE_S": "0",
        }
        first = Server(tmp_path_factory.mktemp("gw-a"), env=env)
        second = Server(tmp_path_factory.mktemp("gw-b"), env=env)
        first.start()
        try:
            second.start()
            try:
                yield {"a": first, "b": second, "s3": client, "bucket": bucket}
            finally:
                second.stop()
        finally:
            first.stop()


def _objects(cluster: dict[str, Any]) -> list[str]:
    listed = cluster["s3"].list_objects_v2(Bucket=cluster["bucket"])
    return [item["Key"] for item in listed.get("Contents", ())]


def _local_blobs(home: Path) -> list[Path]:
    return [p for p in (home / "artifacts" / "sha256").rglob("*") if p.is_file()]


def test_a_gateway_runs_a_version_it_never_stored(cluster: dict[str, Any], tmp_path: Path) -> None:
    a, b = cluster["a"], cluster["b"]
    folder = write_bundle(tmp_path / "fn", HANDLER, CONFIG)
    weights = os.urandom(300_000)
    (folder / "w.bin").write_bytes(weights)
    response = a.deploy_folder("s3fn", folder)
    assert response.status_code in (200, 201), response.text

    keys = _objects(cluster)
    assert len(keys) == 3 and all(k.startswith("team-a/sha256/") for k in keys)
    # Encrypted at rest: no object holds the plaintext, each starts with the cipher's magic.
    for key in keys:
        body = cluster["s3"].get_object(Bucket=cluster["bucket"], Key=key)["Body"].read()
        assert body.startswith(b"CBE1") and weights not in body
    assert _local_blobs(a.home) == [] and _local_blobs(b.home) == []

    answer = b.invoke("s3fn", {"x": 1})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"echo": {"x": 1}, "size": 300_000}
    # The second gateway's bundles folder is its local cache of the version.
    bundles = [p for p in (b.home / "bundles").iterdir() if not p.name.startswith(".")]
    assert len(bundles) == 1 and (bundles[0] / "w.bin").read_bytes() == weights


def test_delete_and_collect_empty_the_bucket(cluster: dict[str, Any]) -> None:
    a = cluster["a"]
    assert _objects(cluster), "the previous test deploys first"
    assert a.client.delete("/v1/functions/s3fn").status_code == 200
    report = a.client.post("/v1/gc", params={"grace_s": 0}).json()
    blobs = [item for item in report["removed"] if item["kind"] == "blob"]
    assert len(blobs) == 3 or _objects(cluster) == []  # the deletion's own pass may have run first
    assert _objects(cluster) == []


@pytest.mark.parametrize("url", ["http://bucket/x", "s3://", "s3://UPPER/x", "bucket/prefix"])
def test_a_bad_artifacts_url_is_refused_with_its_variable(url: str) -> None:
    from coldbrew.settings import InvalidSettings, Settings

    with pytest.raises(InvalidSettings, match="COLDBREW_ARTIFACTS_URL"):
        Settings(artifacts_url=url)
