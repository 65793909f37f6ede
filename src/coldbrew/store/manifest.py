"""Manifests: ``{relative posix path: sha256}`` describing a bundle folder."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from coldbrew import errors
from coldbrew.store.hashing import check_sha256, hash_file

if TYPE_CHECKING:
    from coldbrew.store.base import ArtifactStore

SKIP_DIRS = frozenset({"__pycache__", ".git"})
SKIP_SUFFIXES = (".pyc",)


def _bundle_files(folder: Path) -> list[tuple[str, Path]]:
    """(relative posix path, absolute path) of every file worth shipping, sorted by path."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        # Pruning in place stops os.walk from descending into caches and VCS metadata.
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for filename in filenames:
            if filename.endswith(SKIP_SUFFIXES):
                continue
            path = Path(dirpath) / filename
            if path.is_file():
                found.append((path.relative_to(folder).as_posix(), path))
    return sorted(found)


def manifest_of(folder: Path) -> dict[str, str]:
    """Hash every file under ``folder`` without storing anything (e.g. to check a deploy
    is already known before uploading it)."""
    return {rel: hash_file(path) for rel, path in _bundle_files(Path(folder))}


def store_folder(store: ArtifactStore, folder: Path) -> dict[str, str]:
    """Store every file under ``folder`` and return its manifest."""
    return {rel: store.put_file(path) for rel, path in _bundle_files(Path(folder))}


def check_manifest(manifest: dict[str, str]) -> None:
    """Refuse manifests that could write outside the destination folder or are ambiguous.

    Keys must be normalised relative posix paths (no ``..``, no leading ``/``, no ``./`` or
    ``//``), because materialize joins them to a destination folder."""
    for key, sha256 in manifest.items():
        if not isinstance(key, str) or not key:
            raise errors.ValidationError(f"manifest path must be a non-empty string: {key!r}")
        pure = PurePosixPath(key)
        if pure.is_absolute() or "\\" in key or ".." in pure.parts:
            raise errors.ValidationError(f"manifest path escapes the bundle: {key!r}")
        if str(pure) != key or key in {".", ""}:
            raise errors.ValidationError(f"manifest path is not normalised: {key!r}")
        check_sha256(sha256)
