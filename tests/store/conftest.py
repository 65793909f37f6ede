"""Fixtures running the artifact store contract against every implementation."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from coldbrew.store import ArtifactStore, LocalArtifactStore, MemoryArtifactStore


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


@pytest.fixture(params=[_local, _memory], ids=["local", "memory"])
def sut(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    return request.param(tmp_path)


@pytest.fixture
def store(sut: StoreUnderTest) -> ArtifactStore:
    return sut.store
