"""The artifact store contract, and the folder-building logic every implementation shares."""

from __future__ import annotations

import abc
import os
import shutil
import uuid
from pathlib import Path
from typing import Protocol, runtime_checkable

from coldbrew.store import gc
from coldbrew.store.manifest import check_manifest


@runtime_checkable
class ArtifactStore(Protocol):
    """Content-addressed blob storage: a blob's name is the hex sha256 of its bytes."""

    def put_file(self, path: Path) -> str:
        """Store a file (streamed, atomic, idempotent) and return its sha256."""
        ...

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` and return its sha256."""
        ...

    def has(self, sha256: str) -> bool:
        """Whether a blob with this hash is stored."""
        ...

    def read_bytes(self, sha256: str) -> bytes:
        """Return a blob's bytes, verified (NotFound if missing, TamperedArtifact if altered)."""
        ...

    def materialize(self, manifest: dict[str, str], dest: Path) -> Path:
        """Build the folder described by ``manifest`` at ``dest`` atomically; return ``dest``."""
        ...


class BaseArtifactStore(abc.ABC):
    """Implements :meth:`materialize` once on top of :meth:`_copy_verified`.

    A folder is built in a hidden temporary sibling of ``dest`` and renamed into place, so a
    reader never sees a half-built bundle and, because the rename is atomic, a ``dest`` that
    exists is complete. When two processes race, one rename wins and the loser discards its
    copy."""

    @abc.abstractmethod
    def put_file(self, path: Path) -> str: ...

    @abc.abstractmethod
    def put_bytes(self, data: bytes) -> str: ...

    @abc.abstractmethod
    def has(self, sha256: str) -> bool: ...

    @abc.abstractmethod
    def read_bytes(self, sha256: str) -> bytes: ...

    @abc.abstractmethod
    def _copy_verified(self, sha256: str, target: Path, label: str) -> None:
        """Write blob ``sha256`` to ``target``, hashing while copying; raise NotFound if it is
        missing and TamperedArtifact (naming ``label``) if the bytes do not match."""

    def materialize(self, manifest: dict[str, str], dest: Path) -> Path:
        """Build ``dest`` so that each manifest key is a file holding the blob it maps to.

        Idempotent: if ``dest`` exists it was completed by an earlier call and is returned as
        is (bundles are immutable, so a folder at a content-derived path never goes stale)."""
        check_manifest(manifest)
        dest = Path(dest)
        # Refreshed under the collector's lock: a bundle used again is not garbage (store/gc.py);
        # one collected a moment ago is built again below.
        with gc.guard(dest.parent):
            if dest.is_dir() and gc.touch(dest):
                return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            # 0700 from the start: a published folder is private until the gateway grants its
            # function (security/home.py), never readable by every uid in between.
            tmp.mkdir(mode=0o700)
            for rel, sha256 in sorted(manifest.items()):
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self._copy_verified(sha256, target, rel)
            _rename_into_place(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest


def _rename_into_place(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest`` unless another process got there first."""
    try:
        os.rename(tmp, dest)
    except OSError:
        # ENOTEMPTY/EEXIST: a concurrent materialize won the race; its folder is equally good.
        if not dest.is_dir():
            raise
