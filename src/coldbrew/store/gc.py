"""Garbage collection of the local artifact store and of materialised bundles.

What is garbage is decided by one pure function, :func:`find_garbage`, from what is on disk
(:func:`scan`), what the registry references and which bundles live pools run from:

- a **blob** (``artifacts/sha256/ab/abc...``) no version's manifest names;
- a **bundle** (``bundles/<content_sha256>``) no version has and no live pool runs from;
- a **partial**: a leftover of an interrupted write (``artifacts/tmp/put-*``, a bundle's
  ``.<sha>.tmp-*`` build folder, a deploy's ``run/deploy-*`` folder, a ``.gc-*`` tombstone).

The race with a deploy in flight, and the rule that closes it. A deploy stores its blobs
first and records its version (which references them) a moment later; a collection that read
the registry in between would see those blobs as unreferenced. So nothing modified less than
``grace_s`` ago is collected, and every write that reuses what is already there refreshes its
modification time (a ``put`` of a blob already stored, a ``materialize`` of a bundle already
built). Those refreshes, and the collector's last look at a path's age before removing it,
happen under one lock file (:func:`guard`: shared for writers, exclusive for the collector),
so a blob or bundle that a deploy or an instance starts using while a collection runs is
either seen fresh and kept, or removed first and then written again by the user who found it
missing. A deploy must therefore record its version within ``grace_s`` of storing its blobs
(it takes seconds; the default grace is 15 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

log = logging.getLogger("coldbrew.gc")
Kind = Literal["blob", "bundle", "partial"]
TOMBSTONE_PREFIX = ".gc-"


@dataclass(frozen=True)
class Candidate:
    """Something on disk the collector may remove."""

    kind: Kind
    key: str
    """The blob's sha256, the bundle's content hash, or the partial's file name."""
    path: Path
    mtime: float
    size: int


@dataclass
class Report:
    """What a collection removed (or, in a dry run, would remove)."""

    dry_run: bool
    removed: list[Candidate] = field(default_factory=list)
    kept_recent: int = 0
    """Unreferenced candidates spared because they were modified within the grace period."""

    def to_dict(self) -> dict[str, object]:
        by_kind: dict[str, dict[str, int]] = {}
        for c in self.removed:
            entry = by_kind.setdefault(c.kind, {"count": 0, "bytes": 0})
            entry["count"] += 1
            entry["bytes"] += c.size
        return {
            "dry_run": self.dry_run,
            "removed": [
                {"kind": c.kind, "key": c.key, "path": str(c.path), "bytes": c.size}
                for c in self.removed
            ],
            "totals": by_kind,
            "bytes": sum(c.size for c in self.removed),
            "kept_recent": self.kept_recent,
        }


def find_garbage(
    candidates: Iterable[Candidate],
    referenced_blobs: set[str],
    referenced_bundles: set[str],
    live_bundles: set[str],
    now: float,
    grace_s: float,
) -> tuple[list[Candidate], int]:
    """The candidates to remove, and how many unreferenced ones the grace period spares."""
    garbage: list[Candidate] = []
    spared = 0
    for c in candidates:
        if c.kind == "blob" and c.key in referenced_blobs:
            continue
        if c.kind == "bundle" and (c.key in referenced_bundles or c.key in live_bundles):
            continue
        if c.kind == "partial" and c.key.startswith(TOMBSTONE_PREFIX):
            garbage.append(c)  # already condemned by an interrupted collection
            continue
        if now - c.mtime < grace_s:
            spared += 1
            continue
        garbage.append(c)
    return garbage, spared


# --- what is on disk ----------------------------------------------------------------------------


def _tree_stats(path: Path) -> tuple[float, int]:
    """(newest mtime, total bytes) of a file or folder, links not followed."""
    newest, total = 0.0, 0
    try:
        st = path.lstat()
    except FileNotFoundError:
        return newest, total
    newest = st.st_mtime
    if not path.is_dir() or path.is_symlink():
        return newest, st.st_size
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            newest = max(newest, st.st_mtime)
            if name in filenames:
                total += st.st_size
    return newest, total


def _entries(folder: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            yield from it
    except (FileNotFoundError, NotADirectoryError):
        return


def _stat(entry: os.DirEntry[str]) -> os.stat_result | None:
    try:
        return entry.stat(follow_symlinks=False)
    except FileNotFoundError:  # removed meanwhile (another gateway's collection)
        return None


def scan(artifacts_dir: Path, bundles_dir: Path, run_dir: Path | None = None) -> list[Candidate]:
    """Every blob, bundle and partial write found under the given folders."""
    found: list[Candidate] = []
    for shard in _entries(artifacts_dir / "sha256"):
        for blob in _entries(Path(shard.path)):
            if st := _stat(blob):
                found.append(Candidate("blob", blob.name, Path(blob.path), st.st_mtime, st.st_size))
    for left in _entries(artifacts_dir / "tmp"):
        if st := _stat(left):
            found.append(Candidate("partial", left.name, Path(left.path), st.st_mtime, st.st_size))
    for entry in _entries(bundles_dir):
        kind: Kind = "partial" if entry.name.startswith(".") else "bundle"
        mtime, size = _tree_stats(Path(entry.path))
        found.append(Candidate(kind, entry.name, Path(entry.path), mtime, size))
    for entry in _entries(run_dir) if run_dir else ():
        leftover = entry.name.startswith(("deploy-", TOMBSTONE_PREFIX))
        if leftover and entry.is_dir(follow_symlinks=False):
            mtime, size = _tree_stats(Path(entry.path))
            found.append(Candidate("partial", entry.name, Path(entry.path), mtime, size))
    return found


# --- removing, without racing the writers -------------------------------------------------------


@contextlib.contextmanager
def guard(folder: Path, exclusive: bool = False) -> Iterator[None]:
    """The collector's lock on ``folder`` (a store root or the bundles folder).

    Writers that reuse an existing blob or bundle hold it shared while they check and refresh
    it; the collector holds it exclusively while it re-checks an age and removes. It is an
    ``flock`` on the folder itself (no lock file), so several gateway processes sharing a home
    agree."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def touch(path: Path) -> bool:
    """Refresh ``path``'s modification time (it is in use again); False if it is gone."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def _lock_folder(c: Candidate, artifacts_dir: Path, bundles_dir: Path) -> Path:
    return bundles_dir if c.path.parent == bundles_dir else artifacts_dir


def remove(
    garbage: Iterable[Candidate],
    artifacts_dir: Path,
    bundles_dir: Path,
    grace_s: float,
    now: float,
) -> list[Candidate]:
    """Remove ``garbage``, skipping what is ``grace_s`` younger than ``now`` when looked at
    again under the lock (it was refreshed since the scan); returns what went.

    A folder is renamed to a tombstone under the lock and deleted after it is released, so
    writers never wait for a large ``rmtree``."""
    removed: list[Candidate] = []
    for c in garbage:
        folder = _lock_folder(c, artifacts_dir, bundles_dir)
        doomed: Path | None = None
        with guard(folder, exclusive=True):
            if not c.path.exists() and not c.path.is_symlink():
                continue
            fresh = now - _tree_stats(c.path)[0] < grace_s
            if fresh and not c.key.startswith(TOMBSTONE_PREFIX):
                continue  # used again since the scan (a refresh happens under this lock)
            if c.path.is_dir() and not c.path.is_symlink():
                doomed = c.path
                if not c.key.startswith(TOMBSTONE_PREFIX):
                    doomed = c.path.with_name(f"{TOMBSTONE_PREFIX}{c.key}-{uuid.uuid4().hex[:8]}")
                    os.rename(c.path, doomed)
            else:
                c.path.unlink(missing_ok=True)
        if doomed is not None:
            shutil.rmtree(doomed, ignore_errors=True)
        removed.append(c)
    return removed


def collect(
    artifacts_dir: Path,
    bundles_dir: Path,
    run_dir: Path | None,
    referenced_blobs: set[str],
    referenced_bundles: set[str],
    live_bundles: set[str],
    grace_s: float,
    read_at: float,
    dry_run: bool = False,
) -> Report:
    """One collection: scan, decide, and (unless ``dry_run``) remove.

    ``read_at`` is when the referenced sets were read from the registry (before this call):
    ages count from then, so what was stored or used after the read is never collected by a
    decision that could not see it (see the module docstring)."""
    candidates = scan(artifacts_dir, bundles_dir, run_dir)
    garbage, spared = find_garbage(
        candidates, referenced_blobs, referenced_bundles, live_bundles, read_at, grace_s
    )
    report = Report(dry_run=dry_run, kept_recent=spared)
    if dry_run:
        report.removed = garbage
    else:
        report.removed = remove(garbage, artifacts_dir, bundles_dir, grace_s, read_at)
    return report


# --- the server's collector ---------------------------------------------------------------------


class RemoteBlobs(Protocol):
    """Blobs kept elsewhere than a local folder (``S3ArtifactStore``)."""

    def scan(self) -> list[Candidate]: ...

    def remove(self, garbage: list[Candidate], grace_s: float, now: float) -> list[Candidate]: ...


class GarbageCollector:
    """Runs :func:`collect` for a server: on demand (``POST /v1/gc``, ``coldbrew gc``), soon
    after a function is deleted, and every ``interval_s`` (0: never by itself).

    ``references`` reads the registry (``Registry.referenced_artifacts``) and ``live`` names the
    bundles live pools run from; both are passed in, since the store knows nothing of either."""

    def __init__(
        self,
        artifacts_dir: Path,
        bundles_dir: Path,
        run_dir: Path | None,
        references: Callable[[], tuple[set[str], set[str]]],
        live: Callable[[], set[str]],
        grace_s: float,
        interval_s: float = 0.0,
        remote: RemoteBlobs | None = None,
    ) -> None:
        self.remote = remote
        """A bucket holding the blobs instead of ``artifacts_dir`` (store/s3.py)."""
        self.artifacts_dir = artifacts_dir
        self.bundles_dir = bundles_dir
        self.run_dir = run_dir
        self.references = references
        self.live = live
        self.grace_s = grace_s
        self.interval_s = interval_s
        self.last: Report | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[object]] = set()

    async def collect(self, dry_run: bool = False, grace_s: float | None = None) -> Report:
        """One pass (passes never overlap); ``grace_s`` overrides the configured grace."""
        async with self._lock:
            read_at = time.time()
            blobs, bundles = await asyncio.to_thread(self.references)
            report = await asyncio.to_thread(
                collect,
                self.artifacts_dir,
                self.bundles_dir,
                self.run_dir,
                blobs,
                bundles,
                self.live(),
                self.grace_s if grace_s is None else grace_s,
                read_at,
                dry_run,
            )
            if self.remote is not None:
                grace = self.grace_s if grace_s is None else grace_s
                await asyncio.to_thread(self._remote, report, blobs, grace, read_at)
        if report.removed and not dry_run:
            totals = report.to_dict()["totals"]
            log.info("garbage collection removed %s", totals)
        self.last = report
        return report

    def _remote(self, report: Report, blobs: set[str], grace_s: float, read_at: float) -> None:
        assert self.remote is not None
        garbage, spared = find_garbage(self.remote.scan(), blobs, set(), set(), read_at, grace_s)
        report.kept_recent += spared
        if not report.dry_run:
            garbage = self.remote.remove(garbage, grace_s, read_at)
        report.removed.extend(garbage)

    def soon(self) -> None:
        """Start a pass in the background (after a delete); its failure is only logged."""
        task = asyncio.create_task(self._quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self) -> None:
        try:
            await self.collect()
        except Exception:
            log.exception("garbage collection failed")

    async def start(self) -> None:
        if self.interval_s > 0:
            task = asyncio.create_task(self._every_interval())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._quietly()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
