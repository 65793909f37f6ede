"""Garbage collection of blobs in an S3 bucket (moto's server): the collector lists the
bucket, spares what is referenced or younger than the grace period, and deletes the rest; a
put of a stored blob makes it young again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from coldbrew.store.gc import GarbageCollector
from coldbrew.store.s3 import S3ArtifactStore
from s3_support import new_bucket


def _collector(store: S3ArtifactStore, tmp_path: Path, referenced: set[str]) -> GarbageCollector:
    return GarbageCollector(
        tmp_path / "artifacts",
        tmp_path / "bundles",
        None,
        lambda: (referenced, set()),
        lambda: set(),
        grace_s=900,
        remote=store,
    )


def test_unreferenced_old_blobs_go_and_the_rest_stay(s3_endpoint: str, tmp_path: Path) -> None:
    client, bucket = new_bucket(s3_endpoint)
    store = S3ArtifactStore(bucket, "p", client=client)
    kept, doomed = store.put_bytes(b"referenced"), store.put_bytes(b"unreferenced")
    collector = _collector(store, tmp_path, {kept})

    spared = asyncio.run(collector.collect())  # within the grace period: nothing goes
    assert spared.removed == [] and spared.kept_recent == 1
    dry = asyncio.run(collector.collect(dry_run=True, grace_s=0))
    assert [c.key for c in dry.removed] == [doomed] and store.has(doomed)

    report = asyncio.run(collector.collect(grace_s=0))
    assert [(c.kind, c.key) for c in report.removed] == [("blob", doomed)]
    assert store.has(kept) and not store.has(doomed)


def test_a_put_of_a_stored_blob_refreshes_it(s3_endpoint: str) -> None:
    client, bucket = new_bucket(s3_endpoint)
    store = S3ArtifactStore(bucket, "", client=client)
    digest = store.put_bytes(b"weights")
    first = client.head_object(Bucket=bucket, Key=store.key_of(digest))["LastModified"]
    time.sleep(1.1)  # LastModified has a resolution of one second
    assert store.put_bytes(b"weights") == digest
    again = client.head_object(Bucket=bucket, Key=store.key_of(digest))["LastModified"]
    assert again > first
    # ...so the collector's last look spares it even if its scan saw it old.
    [candidate] = store.scan()
    assert store.remove([candidate], grace_s=60, now=time.time()) == []
    assert store.has(digest)
