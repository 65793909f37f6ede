"""In-memory artifact store with the same contract as the local one, for tests."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from coldbrew import errors
from coldbrew.store.base import BaseArtifactStore
from coldbrew.store.errors import TamperedArtifact
from coldbrew.store.hashing import CHUNK_SIZE, check_sha256


class MemoryArtifactStore(BaseArtifactStore):
    """Blobs in a dict. Still verifies hashes on read, so tamper tests can target it too."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put_file(self, path: Path) -> str:
        digest = hashlib.sha256()
        parts: list[bytes] = []
        with open(path, "rb") as src:
            while chunk := src.read(CHUNK_SIZE):
                digest.update(chunk)
                parts.append(chunk)
        return self._put(digest.hexdigest(), b"".join(parts))

    def put_bytes(self, data: bytes) -> str:
        return self._put(hashlib.sha256(data).hexdigest(), bytes(data))

    def has(self, sha256: str) -> bool:
        return check_sha256(sha256) in self._blobs

    def read_bytes(self, sha256: str) -> bytes:
        try:
            data = self._blobs[check_sha256(sha256)]
        except KeyError:
            raise errors.NotFound(f"artifact {sha256} not found") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise TamperedArtifact(f"artifact {sha256} does not match its hash", sha256=sha256)
        return data

    def _copy_verified(self, sha256: str, target: Path, label: str) -> None:
        data = self._blobs.get(sha256)
        if data is None:
            raise errors.NotFound(f"artifact {sha256} for {label!r} not found")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise TamperedArtifact(
                f"stored bytes of {label!r} do not match sha256 {sha256}", path=label, sha256=sha256
            )
        target.write_bytes(data)

    def _put(self, sha256: str, data: bytes) -> str:
        with self._lock:
            self._blobs.setdefault(sha256, data)
        return sha256
