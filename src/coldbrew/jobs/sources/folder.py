"""``kind = "folder"``: new files of a watched folder, as S3-shaped events.

The folder stands for a bucket: ``s3.bucket.name`` is the folder's name, ``s3.object.key`` the
file's path relative to it (``/``-separated, URL-encoded as S3 does), ``eTag`` the MD5 of its
content (an S3 single-part upload's ETag), and ``s3.bucket.arn`` is ``file://<folder>``. The
absolute path of the file is in the client context, ``context.client_context.custom["path"]``.

A file is delivered once it has not changed for ``settle_s`` (a copy still being written is
not); files and folders whose name starts with ``.`` are left out (editors' and uploaders'
temporary files), and so are symbolic links (they could lead out of the folder). When the
gateway has auth on, a tenant's config must not make it read any folder of the machine: the
folder has to lie in one of ``COLDBREW_FOLDER_SOURCE_ROOTS``.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import Any

from coldbrew import errors
from coldbrew.jobs.sources.objects import ObjectSource, StoredObject, s3_event

ROOTS_VARIABLE = "COLDBREW_FOLDER_SOURCE_ROOTS"


def allowed_roots() -> list[Path]:
    raw = os.environ.get(ROOTS_VARIABLE, "")
    return [Path(p).resolve() for p in raw.split(os.pathsep) if p.strip()]


def check_folder(path: str, auth_enabled: bool) -> Path:
    """The folder, resolved, if this gateway may watch it (else ValidationError, said in
    ``coldbrew source ls``)."""
    folder = Path(path).resolve()
    roots = allowed_roots()
    if roots:
        if not any(folder == root or root in folder.parents for root in roots):
            raise errors.ValidationError(f"{path} is not inside {ROOTS_VARIABLE}")
    elif auth_enabled:
        raise errors.ValidationError(
            f"folder sources need {ROOTS_VARIABLE} (the folders tenants may watch) when auth is on"
        )
    if not folder.is_dir():
        raise errors.ValidationError(f"{path} is not a folder")
    return folder


class FolderSource(ObjectSource):
    kind = "folder"
    auth_enabled = False

    def target(self) -> str:
        return self.config.path

    def list_objects(self) -> list[StoredObject]:
        folder = check_folder(self.config.path, self.auth_enabled)
        settled_before = time.time() - self.config.settle_s
        out: list[StoredObject] = []
        for parent, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith("."):
                    continue
                path = Path(parent) / name
                try:
                    stat = path.lstat()
                except FileNotFoundError:
                    continue  # removed while listing
                if not S_ISREG(stat.st_mode):
                    continue  # symlinks (they could point out of the folder), sockets, fifos
                if stat.st_mtime > settled_before:
                    continue  # still being written, perhaps: the next poll sees it
                key = path.relative_to(folder).as_posix()
                out.append(
                    StoredObject(
                        key=key,
                        size=stat.st_size,
                        etag="",  # computed for new files only (event): MD5 reads the file
                        modified=datetime.fromtimestamp(stat.st_mtime, UTC),
                        version=f"{stat.st_size}:{stat.st_mtime_ns}",
                        path=str(path),
                    )
                )
        return out

    def event(self, obj: StoredObject) -> tuple[bytes, dict[str, Any] | None]:
        assert obj.path is not None
        digest = hashlib.md5(usedforsecurity=False)
        with open(obj.path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        folder = Path(self.config.path).resolve()
        with_etag = StoredObject(
            obj.key, obj.size, digest.hexdigest(), obj.modified, obj.version, obj.path
        )
        body = s3_event(folder.name, with_etag, "local", arn=f"file://{folder}")
        return body, {"custom": {"path": obj.path, "folder": str(folder)}}
