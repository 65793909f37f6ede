"""Turn an uploaded file (a bundle archive or a bare model) into a bundle folder, safely.

Archives are extracted with tarfile's ``data`` filter and zip members are checked by hand, so an
upload can never write outside its folder (no absolute paths, no ``..``, no links out).
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from coldbrew import errors
from coldbrew.runtime.config import MODEL_SUFFIXES, find_config_file

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def is_archive(filename: str) -> bool:
    return filename.lower().endswith(ARCHIVE_SUFFIXES)


def is_model_file(filename: str) -> bool:
    return PurePosixPath(filename).suffix.lower() in MODEL_SUFFIXES


def safe_filename(filename: str) -> str:
    name = PurePosixPath(filename.replace("\\", "/")).name
    if not name or name in (".", ".."):
        raise errors.ValidationError(f"unusable file name {filename!r}")
    return name


def _extract_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise errors.ValidationError(f"cannot read the bundle archive: {exc}") from None


def _extract_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                parts = PurePosixPath(member.filename).parts
                if member.filename.startswith("/") or ".." in parts:
                    raise errors.ValidationError(
                        f"archive member {member.filename!r} escapes the bundle"
                    )
            bundle.extractall(dest)
    except (zipfile.BadZipFile, OSError) as exc:
        raise errors.ValidationError(f"cannot read the bundle archive: {exc}") from None


def bundle_root(folder: Path) -> Path:
    """The folder holding the config: the archive's root, or its single top-level folder."""
    if find_config_file(folder):
        return folder
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and find_config_file(entries[0]):
        return entries[0]
    return folder


def unpack_upload(upload: Path, filename: str, dest: Path) -> tuple[Path, str | None]:
    """Unpack ``upload`` (whose client-side name is ``filename``) into ``dest``.

    Returns the bundle folder and, for a bare model file, that file's name (its config is then
    synthesised). Raises ValidationError for anything else."""
    dest.mkdir(parents=True, exist_ok=True)
    name = safe_filename(filename)
    lowered = name.lower()
    if lowered.endswith((".tar.gz", ".tgz", ".tar")):
        _extract_tar(upload, dest)
        return bundle_root(dest), None
    if lowered.endswith(".zip"):
        _extract_zip(upload, dest)
        return bundle_root(dest), None
    if is_model_file(name):
        shutil.copyfile(upload, dest / name)
        return dest, name
    raise errors.ValidationError(
        f"'{name}' is neither a bundle archive ({', '.join(ARCHIVE_SUFFIXES)}) nor a model file "
        f"({', '.join(sorted(MODEL_SUFFIXES))})"
    )
