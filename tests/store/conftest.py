"""Fixtures running the artifact store contract against every implementation."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coldbrew.store import ArtifactStore, LocalArtifactStore, MemoryArtifactStore
from coldbrew.store.crypto import ArtifactCipher
from coldbrew.store.s3 import S3ArtifactStore
from s3_support import moto_s3, new_bucket


@dataclass
class StoreUnderTest:
    store: ArtifactStore
    corrupt: Callable[[str], None]
    """Overwrite the stored bytes of a blob behind the store's back."""


def _local(tmp_path: Path) -> StoreUnderTest:
    store = LocalArtifactStore(tmp_path / "artifacts")

    def corrupt(sha256: str) -> None:
        path = store.path_of(sha256)
        os.chmod(path, stat.S_IWUSR | stat.S_IRUSR)
        path.write_bytes(b"evil" + path.read_bytes())

    return StoreUnderTest(store, corrupt)


def _memory(tmp_path: Path) -> StoreUnderTest:
    store = MemoryArtifactStore()

    def corrupt(sha256: str) -> None:
        store._blobs[sha256] = b"evil"

    return StoreUnderTest(store, corrupt)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 in server mode, for the whole session (a bucket per test)."""
    with moto_s3() as endpoint:
        yield endpoint


def _s3(endpoint: str, cipher: ArtifactCipher | None = None) -> StoreUnderTest:
    client, bucket = new_bucket(endpoint)
    store = S3ArtifactStore(bucket, "models/v1", client=client, cipher=cipher)

    def corrupt(sha256: str) -> None:
        key = store.key_of(sha256)
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        client.put_object(Bucket=bucket, Key=key, Body=b"evil" + body)

    return StoreUnderTest(store, corrupt)


def _s3_plain(tmp_path: Path, endpoint: str) -> StoreUnderTest:
    return _s3(endpoint)


def _s3_encrypted(tmp_path: Path, endpoint: str) -> StoreUnderTest:
    return _s3(endpoint, ArtifactCipher(b"k" * 32))


@pytest.fixture(
    params=[_local, _memory, _s3_plain, _s3_encrypted],
    ids=["local", "memory", "s3", "s3-encrypted"],
)
def sut(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    if request.param in (_s3_plain, _s3_encrypted):
        return request.param(tmp_path, request.getfixturevalue("s3_endpoint"))
    return request.param(tmp_path)


@pytest.fixture
def store(sut: StoreUnderTest) -> ArtifactStore:
    return sut.store
