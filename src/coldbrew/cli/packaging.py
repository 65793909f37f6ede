"""Turn what the user points ``coldbrew deploy`` at into one uploadable file.

A model file or an archive goes up as it is; a folder is packed into a ``.tar.gz`` first. The
packer leaves out what a working folder accumulates but a function never needs (bytecode, git
history), which also keeps the content hash stable: the server hashes what it receives, so a
stray ``.pyc`` in the files it receives would otherwise make a new version of an unchanged
bundle.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from coldbrew.deploy.unpack import ARCHIVE_SUFFIXES
from coldbrew.runtime.config import MODEL_SUFFIXES as MODEL_FORMATS

MODEL_SUFFIXES = tuple(MODEL_FORMATS)
EXCLUDED = ("__pycache__", ".git", "*.pyc", ".DS_Store")
"""Names (shell patterns) skipped at any depth when packing a folder."""


class PackagingError(ValueError):
    """The path cannot be deployed (missing, or a file type the server would refuse)."""


@dataclass
class Upload:
    """One file ready to send: the name tells the server how to unpack it."""

    filename: str
    data: IO[bytes]
    size: int


def default_name(path: Path) -> str:
    """A function name from a file or folder name: ``model.tar.gz`` -> ``model``, ``My Model``
    -> ``My-Model``; the registry only accepts ``[A-Za-z0-9_-]``."""
    stem = path.resolve().name if path.name in ("", ".") else path.name
    for suffix in (*ARCHIVE_SUFFIXES, *MODEL_SUFFIXES):
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")
    return name or "function"


def is_excluded(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in EXCLUDED)


def _filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if any(is_excluded(part) for part in Path(info.name).parts):
        return None
    # Owner and mtime do not matter to a function; zeroing them makes packing the same folder
    # twice give the same bytes.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def pack_folder(folder: Path) -> bytes:
    """A gzipped tar of ``folder``'s contents (paths relative to it), skipping ``EXCLUDED``."""
    buffer = io.BytesIO()
    # mtime=0 in the gzip header too (tarfile's "w:gz" stamps the current time).
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for child in sorted(folder.iterdir()):
            if not is_excluded(child.name):
                tar.add(child, arcname=child.name, filter=_filter)
    return buffer.getvalue()


def prepare_upload(path: Path) -> Upload:
    """The upload for ``path``: folders are packed in memory (bundles are code plus a model,
    small enough), files are streamed from disk."""
    if path.is_dir():
        data = pack_folder(path)
        return Upload(f"{default_name(path)}.tar.gz", io.BytesIO(data), len(data))
    if not path.is_file():
        raise PackagingError(f"{path} does not exist")
    lowered = path.name.lower()
    if not lowered.endswith(ARCHIVE_SUFFIXES + MODEL_SUFFIXES):
        known = ", ".join(ARCHIVE_SUFFIXES + MODEL_SUFFIXES)
        raise PackagingError(f"{path.name}: deploy a folder, an archive or a model file ({known})")
    return Upload(path.name, path.open("rb"), path.stat().st_size)
