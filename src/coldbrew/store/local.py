"""Artifact store in a local folder: ``<root>/sha256/ab/abcdef...``.

The default on one machine. Blobs are written to ``<root>/tmp`` (same filesystem) and renamed
into place, so a blob path that exists always holds a complete file. Unreferenced blobs are
removed by ``store/gc.py``; a blob's modification time is when it was last stored."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from coldbrew import errors
from coldbrew.store import gc
from coldbrew.store.base import BaseArtifactStore
from coldbrew.store.crypto import ArtifactCipher
from coldbrew.store.errors import TamperedArtifact
from coldbrew.store.hashing import CHUNK_SIZE, check_sha256

_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


class LocalArtifactStore(BaseArtifactStore):
    """Content-addressed blobs under ``root``; safe for several processes sharing ``root``."""

    def __init__(self, root: Path, cipher: ArtifactCipher | None = None) -> None:
        self.cipher = cipher
        """When set, blobs are written encrypted (store/crypto.py); reads handle both."""
        self.root = Path(root)
        self._blobs = self.root / "sha256"
        self._tmp = self.root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path_of(self, sha256: str) -> Path:
        """Where the blob with this hash lives (whether or not it is stored)."""
        check_sha256(sha256)
        return self._blobs / sha256[:2] / sha256

    def put_file(self, path: Path) -> str:
        with open(path, "rb") as src:
            return self._put_stream(src)

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with self._temp_file() as (tmp_path, out):
            if self.cipher is not None:
                self.cipher.encrypt(iter([data]), out, digest)
            else:
                out.write(data)
            self._commit(tmp_path, out, digest)
        return digest

    def has(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    def read_bytes(self, sha256: str) -> bytes:
        path = self.path_of(sha256)
        try:
            with open(path, "rb") as src:
                data = b"".join(self._plain(src, sha256))
        except FileNotFoundError:
            raise errors.NotFound(f"artifact {sha256} not found") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise TamperedArtifact(f"artifact {sha256} does not match its hash", sha256=sha256)
        return data

    def _copy_verified(self, sha256: str, target: Path, label: str) -> None:
        digest = hashlib.sha256()
        try:
            src = open(self.path_of(sha256), "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            raise errors.NotFound(f"artifact {sha256} for {label!r} not found") from None
        with src, open(target, "wb") as out:
            for chunk in self._plain(src, sha256):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise TamperedArtifact(
                f"stored bytes of {label!r} do not match sha256 {sha256}", path=label, sha256=sha256
            )

    def _plain(self, src: BinaryIO, sha256: str) -> Iterator[bytes]:
        if self.cipher is not None:
            yield from self.cipher.decrypt(src, sha256)
            return
        while chunk := src.read(CHUNK_SIZE):
            yield chunk

    def _put_stream(self, src: BinaryIO) -> str:
        if self.cipher is not None:
            return self._put_encrypted(src)
        digest = hashlib.sha256()
        with self._temp_file() as (tmp_path, out):
            while chunk := src.read(CHUNK_SIZE):
                digest.update(chunk)
                out.write(chunk)
            self._commit(tmp_path, out, digest.hexdigest())
        return digest.hexdigest()

    def _put_encrypted(self, src: BinaryIO) -> str:
        """Hash the plaintext first (the blob's name), then encrypt under that name."""
        digest = hashlib.sha256()
        while chunk := src.read(CHUNK_SIZE):
            digest.update(chunk)
        sha256 = digest.hexdigest()
        src.seek(0)
        with self._temp_file() as (tmp_path, out):
            self.cipher.encrypt(iter(lambda: src.read(CHUNK_SIZE), b""), out, sha256)  # type: ignore[union-attr]
            self._commit(tmp_path, out, sha256)
        return sha256

    @contextmanager
    def _temp_file(self) -> Iterator[tuple[Path, BinaryIO]]:
        """A temp file in the store's own filesystem, removed unless committed."""
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        tmp_path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                yield tmp_path, out
        finally:
            tmp_path.unlink(missing_ok=True)

    def _commit(self, tmp_path: Path, out: BinaryIO, sha256: str) -> None:
        """Move a finished temp file to its content address, unless it is already stored.

        A blob already stored has its modification time refreshed instead, under the garbage
        collector's lock: a deploy reusing it must not lose it to a collection that started
        before the deploy recorded its version (store/gc.py)."""
        final = self.path_of(sha256)
        with gc.guard(self.root):
            if final.is_file() and gc.touch(final):
                return
            out.flush()
            # fsync before rename: after a crash a blob path must never hold a truncated file.
            os.fsync(out.fileno())
            # Read-only so that nothing edits a blob in place by accident; content is its name.
            os.chmod(tmp_path, _READ_ONLY)
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp_path, final)
