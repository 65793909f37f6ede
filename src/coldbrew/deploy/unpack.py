"""Turn an uploaded file (a bundle archive or a bare model) into a bundle folder, safely.

An upload can never write outside its folder, nor fill the disk:

- member names that are absolute, contain ``..`` or (in zips) backslashes or drive letters are
  refused; tar members also pass tarfile's ``data`` filter, which refuses links pointing outside
  the folder and device files, FIFOs and other special files;
- the number of entries and the bytes actually written are counted while extracting, member by
  member and chunk by chunk, and extraction stops at ``UnpackLimits`` (the sizes an archive's
  headers declare are never trusted: a zip entry that says 1 KB and inflates to 1 GB is cut off
  at the limit);
- the finished folder is measured again the way the store will read it (a symlink or hard link
  counts as a full copy of its target, since a stored bundle holds one), so links cannot
  multiply a small archive into a large bundle;
- on any refusal the partial folder is removed before the error is raised.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

from coldbrew import errors
from coldbrew.runtime.config import MODEL_SUFFIXES, find_config_file

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
COPY_CHUNK = 1024 * 1024
_DIR_MODE = 0o755
_FILE_MODE = 0o644


@dataclass(frozen=True)
class UnpackLimits:
    """How large an unpacked bundle may be (``COLDBREW_MAX_UNPACKED_BYTES``,
    ``COLDBREW_MAX_BUNDLE_FILES``)."""

    max_bytes: int = 1024**3
    max_files: int = 10_000


class _Budget:
    """Counts entries and written bytes against the limits; raises BundleTooLarge past them."""

    def __init__(self, limits: UnpackLimits) -> None:
        self.limits = limits
        self.files = 0
        self.bytes = 0

    def entry(self) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise too_many_files(self.limits)

    def spend(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_bytes:
            raise too_many_bytes(self.limits)

    def copy(self, src: BinaryIO, out: BinaryIO) -> None:
        # Read at most one byte past what is left, so a bomb is caught having written
        # no more than the limit.
        while chunk := src.read(min(COPY_CHUNK, self.limits.max_bytes - self.bytes + 1)):
            self.spend(len(chunk))
            out.write(chunk)


def too_many_bytes(limits: UnpackLimits) -> errors.BundleTooLarge:
    return errors.BundleTooLarge(
        f"the bundle unpacks to more than {_size(limits.max_bytes)} "
        "(COLDBREW_MAX_UNPACKED_BYTES); extraction was stopped and nothing was kept",
        max_unpacked_bytes=limits.max_bytes,
    )


def too_many_files(limits: UnpackLimits) -> errors.BundleTooLarge:
    return errors.BundleTooLarge(
        f"the bundle has more than {limits.max_files:,} files and folders "
        "(COLDBREW_MAX_BUNDLE_FILES); extraction was stopped and nothing was kept",
        max_bundle_files=limits.max_files,
    )


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"


def is_model_file(filename: str) -> bool:
    return PurePosixPath(filename).suffix.lower() in MODEL_SUFFIXES


def safe_filename(filename: str) -> str:
    name = PurePosixPath(filename.replace("\\", "/")).name
    if not name or name in (".", ".."):
        raise errors.ValidationError(f"unusable file name {filename!r}")
    return name


def _check_member_name(name: str) -> PurePosixPath:
    """The member's relative path, or ValidationError if it could point outside the bundle."""
    pure = PurePosixPath(name)
    drive = len(name) > 1 and name[1] == ":"
    if pure.is_absolute() or ".." in pure.parts or "\\" in name or drive or "\0" in name:
        raise errors.ValidationError(f"archive member {name!r} escapes the bundle")
    return pure


def _open_new(target: Path, mode: int) -> BinaryIO:
    """Create ``target`` as a fresh regular file, never writing through a link at its place."""
    if target.is_symlink() or target.is_file():
        target.unlink()  # a repeated member replaces the earlier one, as tar itself does
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    return os.fdopen(fd, "wb")


MAX_TAR_READ = 8 * 1024 * 1024
"""Largest single read tarfile may make. Member data is read here in ``COPY_CHUNK`` pieces, so
only a header (a pax header, a GNU long name) asks for more, and tarfile holds it in memory
whole: a legitimate one is a few hundred bytes, a hostile one could declare gigabytes."""


class _BoundedStream:
    """The decompressed tar stream, refusing reads that could only be hostile headers and any
    position past ``cap`` (so no header or skip makes tarfile decompress without bound)."""

    def __init__(self, raw: BinaryIO, cap: int, limits: UnpackLimits) -> None:
        self.raw, self.cap, self.limits = raw, cap, limits

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > MAX_TAR_READ:
            raise errors.ValidationError("the bundle archive has an oversized tar header")
        if self.raw.tell() + size > self.cap:
            raise too_many_bytes(self.limits)
        return self.raw.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset if whence == os.SEEK_SET else self.raw.tell() + offset
        if whence not in (os.SEEK_SET, os.SEEK_CUR) or target > self.cap:
            raise too_many_bytes(self.limits)
        return self.raw.seek(target)

    def tell(self) -> int:
        return self.raw.tell()


def _decompressed(archive: Path) -> BinaryIO:
    """The archive's tar stream, by its magic bytes (not by what its name claims)."""
    with open(archive, "rb") as head:
        magic = head.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(archive, "rb")  # type: ignore[return-value]
    if magic[:3] == b"BZh":
        return bz2.open(archive, "rb")  # type: ignore[return-value]
    if magic == b"\xfd7zXZ\x00":
        return lzma.open(archive, "rb")  # type: ignore[return-value]
    return open(archive, "rb")


def _extract_tar(archive: Path, dest: Path, budget: _Budget) -> None:
    dest = dest.resolve()  # the data filter compares real paths
    limits = budget.limits
    # Beyond the data, the stream holds per entry a header, maybe pax headers (macOS tar writes
    # them for every file) and padding, then the end-of-archive blocks.
    cap = limits.max_bytes + (limits.max_files + 1) * 8 * tarfile.BLOCKSIZE + tarfile.RECORDSIZE
    try:
        with _decompressed(archive) as raw:
            stream = cast(BinaryIO, _BoundedStream(raw, cap, limits))
            with tarfile.open(fileobj=stream, mode="r:") as tar:
                _extract_members(tar, dest, budget)
    except tarfile.FilterError as exc:
        raise errors.ValidationError(f"archive member refused: {exc}") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise errors.ValidationError(f"cannot read the bundle archive: {exc}") from None


def _extract_members(tar: tarfile.TarFile, dest: Path, budget: _Budget) -> None:
    for member in tar:  # headers are read one at a time: a huge index is never built
        budget.entry()
        _check_member_name(member.name)
        member = tarfile.data_filter(member, str(dest))
        target = dest / member.name
        if member.isdir():
            target.mkdir(_DIR_MODE, parents=True, exist_ok=True)
            continue
        target.parent.mkdir(_DIR_MODE, parents=True, exist_ok=True)
        if member.issym():  # the data filter checked that it points inside
            if target.is_symlink() or target.is_file():
                target.unlink()
            os.symlink(member.linkname, target)
            continue
        # A hard link becomes a copy of its (already extracted) target, paid for in full.
        if member.islnk():
            source: BinaryIO | None = open(dest / member.linkname, "rb")  # noqa: SIM115
        else:
            source = tar.extractfile(member)
        if source is None:
            raise errors.ValidationError(f"archive member {member.name!r} has no data")
        with source, _open_new(target, member.mode or _FILE_MODE) as out:
            budget.copy(source, out)


def _zip_directory(archive: Path) -> tuple[int, int] | None:
    """(entries, bytes) of the central directory, as its end record declares them, read
    before ``ZipFile`` reads the directory into memory and builds an object per entry (a
    zip of millions of empty entries would otherwise take gigabytes just to be opened)."""
    try:
        with open(archive, "rb") as fp:
            record = zipfile._EndRecData(fp)  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return None
    if not record:
        return None
    return int(record[zipfile._ECD_ENTRIES_TOTAL]), int(record[zipfile._ECD_SIZE])  # type: ignore[attr-defined]


def _extract_zip(archive: Path, dest: Path, budget: _Budget) -> None:
    entries, size = _zip_directory(archive) or (0, 0)
    if entries > budget.limits.max_files:
        raise too_many_files(budget.limits)
    # A directory entry is 46 bytes and its names: 4 KB each is generous for a real bundle.
    if size > (budget.limits.max_files + 1) * 4096:
        raise errors.ValidationError(
            f"the zip's central directory is implausibly large ({size:,} bytes)"
        )
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                budget.entry()
                rel = _check_member_name(member.filename)
                target = dest.joinpath(*rel.parts) if rel.parts else dest
                if member.is_dir():
                    target.mkdir(_DIR_MODE, parents=True, exist_ok=True)
                    continue
                kind = stat.S_IFMT(member.external_attr >> 16)
                if kind not in (0, stat.S_IFREG):  # symlinks, devices, FIFOs
                    raise errors.ValidationError(
                        f"archive member {member.filename!r} is not a regular file"
                    )
                target.parent.mkdir(_DIR_MODE, parents=True, exist_ok=True)
                executable = (member.external_attr >> 16) & 0o100
                mode = 0o755 if executable else _FILE_MODE
                with bundle.open(member) as src, _open_new(target, mode) as out:
                    budget.copy(src, out)
    # RuntimeError: an encrypted member; NotImplementedError: an unknown compression method.
    except (
        zipfile.BadZipFile,
        NotImplementedError,
        RuntimeError,
        OSError,
        EOFError,
        zlib.error,
    ) as exc:
        raise errors.ValidationError(f"cannot read the bundle archive: {exc}") from None


def _measure(folder: Path, limits: UnpackLimits) -> None:
    """Check the folder as the store will read it: every file a link reaches counts in full."""
    budget = _Budget(limits)
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in (*dirnames, *filenames):
            budget.entry()
            try:
                info = os.stat(os.path.join(dirpath, name))  # follows links, like the store
            except OSError:
                continue  # a dangling link is not shipped
            if stat.S_ISREG(info.st_mode):
                budget.spend(info.st_size)


def bundle_root(folder: Path) -> Path:
    """The folder holding the config: the archive's root, or its single top-level folder."""
    if find_config_file(folder):
        return folder
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and find_config_file(entries[0]):
        return entries[0]
    return folder


def unpack_upload(
    upload: Path, filename: str, dest: Path, limits: UnpackLimits | None = None
) -> tuple[Path, str | None]:
    """Unpack ``upload`` (whose client-side name is ``filename``) into ``dest``.

    Returns the bundle folder and, for a bare model file, that file's name (its config is then
    synthesised). Raises ValidationError for anything else, and BundleTooLarge past
    ``limits``; either way ``dest`` is removed."""
    limits = limits or UnpackLimits()
    name = safe_filename(filename)
    lowered = name.lower()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if lowered.endswith((".tar.gz", ".tgz", ".tar")):
            _extract_tar(upload, dest, _Budget(limits))
            _measure(dest, limits)
            return bundle_root(dest), None
        if lowered.endswith(".zip"):
            _extract_zip(upload, dest, _Budget(limits))
            _measure(dest, limits)
            return bundle_root(dest), None
        if is_model_file(name):
            if upload.stat().st_size > limits.max_bytes:
                raise too_many_bytes(limits)
            shutil.copyfile(upload, dest / name)
            return dest, name
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    raise errors.ValidationError(
        f"'{name}' is neither a bundle archive ({', '.join(ARCHIVE_SUFFIXES)}) nor a model file "
        f"({', '.join(sorted(MODEL_SUFFIXES))})"
    )
