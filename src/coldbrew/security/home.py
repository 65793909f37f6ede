"""The gateway's half of isolation: which uid a function gets, and what that uid may touch.

With isolation on (``runtime/isolation.py`` decides; coldbrew runs as root), every function's
code runs as its own uid, and the folders under ``COLDBREW_HOME`` are set so that uid reaches
only what is its own:

    <home>                 0711 root   (traverse only: nothing can be listed)
    ├── registry.db*       0600 root   (keys, functions, usage)
    ├── uids.json          0600 root   (function -> uid, this module)
    ├── artifacts/         0700 root   (every function's blobs)
    ├── logs/              0700 root   (instances write theirs through a descriptor opened
    │                                   for them before they drop privileges)
    ├── bundles/           0711 root
    │   └── <sha256>/      0700 root + ACL user:<uid>:r-x for each function running it
    └── run/               0711 root
        ├── deploy-*/      0700 root + ACL user:<uid>:--x while its trial load runs
        └── instances/g<gateway pid>/<instance>/
                           a tmpfs of COLDBREW_INSTANCE_TMP_MB, mode 0700, owned by the uid:
                           the instance's private TMPDIR

Two functions deploying identical bundles share one content-addressed folder, hence ACLs
(``system.posix_acl_access``, written here without libacl) rather than a single owner. Where
the interpreter lives under a folder others cannot search (pyenv under ``/root``), that folder
gets ``group:<isolation_uid_base>:--x``, and function processes keep that one group.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import shutil
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

from coldbrew.runtime import messages as m
from coldbrew.runtime.isolation import Decision, decide
from coldbrew.settings import Settings

log = logging.getLogger("coldbrew.isolation")

MS_NOSUID, MS_NODEV = 0x2, 0x4
MNT_DETACH = 2


def harden(settings: Settings) -> Decision:
    """Decide isolation (raising for ``on`` without root), say so, and set the home's modes."""
    decision = decide(settings.isolation, os.geteuid())
    if decision.enabled:
        log.info("isolation is on: %s", decision.reason)
    else:
        log.warning("isolation is OFF: %s", decision.reason)
    home = settings.home
    if settings.database_url is None:  # SQLite makes -wal and -shm with the database's mode
        os.close(os.open(home / "registry.db", os.O_WRONLY | os.O_CREAT, 0o600))
    for private in (settings.artifacts_dir, settings.logs_dir):
        private.mkdir(mode=0o700, parents=True, exist_ok=True)
        _chmod(private, 0o700)
    for entry in home.iterdir() if home.is_dir() else []:
        if entry.is_file() and not entry.is_symlink():
            _chmod(entry, 0o600)  # registry.db, -wal, -shm, uids.json
    if not decision.enabled:
        return decision
    for traversed in (home, settings.bundles_dir, settings.run_dir):
        _chmod(traversed, 0o711)
    # Under the grants lock: a sibling gateway on this home may be granting a folder right now,
    # and a chmod after its grant would rewrite the ACL mask and so take the grant away (its
    # instance would then fail with "No module named 'handler'").
    with acl_lock(home):
        for entry in settings.run_dir.iterdir():
            # (A deploy folder with an ACL is a sibling worker's trial load, in progress.)
            if entry.name != "instances" and not entry.is_symlink() and not _has_acl(entry):
                _chmod(entry, 0o700 if entry.is_dir() else 0o600)
        for bundle in settings.bundles_dir.iterdir():
            if bundle.is_dir() and not _has_acl(bundle):
                _chmod(bundle, 0o700)  # readable again only through grant_bundle
    _reach_interpreter(settings.isolation_uid_base, home)
    return decision


class FunctionIds:
    """A stable uid per function name, recorded in ``<home>/uids.json`` (one lock, so several
    gateways sharing a home agree). uid == gid; numbers are never reused for another name."""

    def __init__(self, home: Path, base: int) -> None:
        self.path = home / "uids.json"
        self.base = base
        self.known: dict[str, int] = {}

    def uid(self, function: str) -> int:
        uid = self.known.get(function)
        if uid is not None:
            return uid
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            text = file.read()
            known: dict[str, int] = json.loads(text) if text.strip() else {}
            if function not in known:
                known[function] = max([self.base, *known.values()]) + 1
                file.seek(0)
                file.truncate()
                file.write(json.dumps(known, indent=1, sort_keys=True))
                file.flush()
                os.fsync(file.fileno())
        self.known = known
        return known[function]


class Isolator:
    """What the local backend asks before starting a function's process."""

    def __init__(self, settings: Settings, decision: Decision) -> None:
        self.settings = settings
        self.decision = decision
        self.ids = FunctionIds(settings.home, settings.isolation_uid_base)
        self.tmpfs = True
        """Whether private /tmp folders are size-bounded tmpfs mounts (else plain folders)."""
        self._reach: list[Path] | None = None
        """Folders others may not search that functions must (``_unsearchable``)."""

    def keep_reach(self) -> None:
        """Before each start of a function's process: the folders above the home and the
        interpreter are still searchable for it (another program may have reset their mode
        since the gateway started; then the function would fail with "No module named ..." or
        "Permission denied"). A stat and an xattr read per folder when nothing changed."""
        if not self.enabled:
            return
        base = self.settings.isolation_uid_base
        if self._reach is None:
            self._reach = _unsearchable(self.settings.home)
        _keep_search(self._reach, base, self.settings.home)

    @property
    def enabled(self) -> bool:
        return self.decision.enabled

    def identity(self, function: str) -> m.Isolation | None:
        if not self.enabled:
            return None
        uid = self.ids.uid(function)
        return m.Isolation(
            uid=uid,
            gid=uid,
            groups=[self.settings.isolation_uid_base],
            max_processes=self.settings.instance_max_processes,
            max_open_files=self.settings.instance_max_open_files,
        )

    def grant_bundle(self, bundle_dir: str, uid: int) -> None:
        """Let ``uid`` read one bundle folder (and search the deploy folder of a trial load)."""
        bundle = Path(bundle_dir)
        home = self.settings.home
        try:
            locked_grant(home, bundle, USER, uid, 0o5, private=True)
            if bundle.parent.name.startswith("deploy-"):
                locked_grant(home, bundle.parent, USER, uid, 0o1, private=True)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            with acl_lock(home):
                _grant_by_group(bundle, uid)

    def instances_dir(self) -> Path:
        """This gateway's folder of private /tmp folders (``g<pid>``: a restarted gateway can
        tell its dead predecessor's from a live sibling worker's)."""
        return self.settings.run_dir / "instances" / f"g{os.getpid()}"

    def make_tmp(self, path: Path, identity: m.Isolation | None) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if identity is None:
            return
        for parent in (path.parent.parent, path.parent):
            _chmod(parent, 0o711)
        if self.tmpfs and _mount_tmpfs(path, identity, self.settings.instance_tmp_mb):
            return
        self.tmpfs = False
        os.chown(path, identity.uid, identity.gid)
        os.chmod(path, 0o700)

    def remove_tmp(self, path: Path) -> None:
        if self.enabled:
            _unmount(path)
        shutil.rmtree(path, ignore_errors=True)

    def sweep(self) -> None:
        """Private /tmp folders left by gateways that died without cleaning up."""
        root = self.settings.run_dir / "instances"
        for folder in root.glob("g*") if root.is_dir() else []:
            pid = folder.name[1:]
            if pid.isdigit() and not _pid_alive(int(pid)):
                for tmp in folder.iterdir() if self.enabled else []:
                    _unmount(tmp)
                shutil.rmtree(folder, ignore_errors=True)


# --- POSIX ACLs, as the kernel stores them (linux/posix_acl_xattr.h) ------------------------
ACL_XATTR = "system.posix_acl_access"
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
NO_ID = 0xFFFFFFFF
_HEADER, _ENTRY = struct.Struct("<I"), struct.Struct("<HHI")


def _read_acl(path: Path) -> dict[tuple[int, int], int]:
    try:
        blob = os.getxattr(path, ACL_XATTR)
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            raise
        mode = os.stat(path).st_mode
        return {
            (USER_OBJ, NO_ID): (mode >> 6) & 7,
            (GROUP_OBJ, NO_ID): (mode >> 3) & 7,
            (OTHER, NO_ID): mode & 7,
        }
    entries = {}
    for offset in range(_HEADER.size, len(blob), _ENTRY.size):
        tag, perm, ident = _ENTRY.unpack_from(blob, offset)
        entries[(tag, ident)] = perm
    return entries


ACL_LOCK = "acl.lock"
"""``<home>/acl.lock``: held while an ACL is read and written back, by every gateway on the home."""


@contextlib.contextmanager
def acl_lock(home: Path) -> Iterator[None]:
    """One writer of ACLs (and of the modes that rewrite them) at a time on ``home``.

    An ACL is written whole (read, add an entry, write back), so two gateways granting two
    functions the same content-addressed bundle at once would otherwise keep only one of the
    grants, and a sibling's start-up ``chmod`` would undo a grant made a moment before."""
    fd = os.open(home / ACL_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def locked_grant(
    home: Path, path: Path, tag: int, ident: int, perms: int, private: bool = False
) -> bool:
    """``grant`` under ``acl_lock``; without taking it when the grant is already there (the
    common case: every start of an instance checks)."""
    entries = _read_acl(path)
    if _with_grant(entries, tag, ident, perms, private) == entries:
        return False
    with acl_lock(home):
        return grant(path, tag, ident, perms, private)


def _with_grant(
    entries: dict[tuple[int, int], int], tag: int, ident: int, perms: int, private: bool
) -> dict[tuple[int, int], int]:
    updated = dict(entries)
    if private:
        updated[(GROUP_OBJ, NO_ID)] = updated[(OTHER, NO_ID)] = 0
    updated[(tag, ident)] = entries.get((tag, ident), 0) | perms
    updated[(MASK, NO_ID)] = _group_class(updated)
    return updated


def grant(path: Path, tag: int, ident: int, perms: int, private: bool = False) -> bool:
    """Add ``perms`` (r=4, w=2, x=1) for one user (USER) or group (GROUP) to ``path``'s ACL;
    ``private``: and take everything from its group and from others. False: already so.

    Read-modify-write: where another process may grant the same path, hold ``acl_lock``."""
    entries = _read_acl(path)
    updated = _with_grant(entries, tag, ident, perms, private)
    if updated == entries:
        return False  # already granted: no write, so no ctime change
    entries = updated
    blob = _HEADER.pack(2) + b"".join(
        _ENTRY.pack(tag_, perm, ident_) for (tag_, ident_), perm in sorted(entries.items())
    )
    os.setxattr(path, ACL_XATTR, blob)
    return True


def _group_class(entries: dict[tuple[int, int], int]) -> int:
    perms = 0
    for (tag, _ident), perm in entries.items():
        if tag in (USER, GROUP_OBJ, GROUP):
            perms |= perm
    return perms


def _grant_by_group(bundle: Path, gid: int) -> None:
    """Without ACLs (a file system that has none): the folder's group, for one function only."""
    current = os.stat(bundle).st_gid
    if current not in (0, gid):
        raise PermissionError(
            f"{bundle} is already used by the function with gid {current} and this file system "
            "has no ACLs to let a second function read it: give the home an ext4/xfs/tmpfs "
            "file system, or deploy a bundle that differs in any byte"
        )
    os.chown(bundle, 0, gid)
    os.chmod(bundle, 0o750)
    if bundle.parent.name.startswith("deploy-"):
        os.chown(bundle.parent, 0, gid)
        os.chmod(bundle.parent, 0o710)


def _has_acl(path: Path) -> bool:
    try:
        os.getxattr(path, ACL_XATTR)
    except OSError:
        return False
    return True


def _reach_interpreter(group: int, home: Path) -> None:
    """Let function processes (group ``group``) search the folders above the interpreter, the
    installed packages and the home, where others may not: import needs to reach them."""
    for folder in _unsearchable(home):
        try:
            if locked_grant(home, folder, GROUP, group, 0o1):
                log.info("isolation: functions may now search (not list) %s", folder)
        except OSError as exc:
            log.warning("isolation: cannot let functions search %s: %s", folder, exc)


def _unsearchable(home: Path) -> list[Path]:
    """Folders above the interpreter, the installed packages and the home that others may not
    search (``Isolator.keep_reach`` checks them again)."""
    needed = {Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix) if p}
    needed |= {Path(p) for p in sys.path if p and Path(p).is_dir()}
    needed.add(Path(sys.executable).resolve().parent)
    needed.add(home)
    ancestors = {a for path in needed for a in path.resolve().parents} | {home.resolve()}
    found = []
    for folder in sorted(ancestors):
        with contextlib.suppress(OSError):
            if os.stat(folder).st_mode & 0o001 == 0:
                found.append(folder)
    return found


def _keep_search(folders: list[Path], group: int, home: Path) -> None:
    """Grant again what a ``chmod`` took since (it rewrites the ACL mask: ``chmod 700`` of a
    parent, as pytest does to its own temporary root, makes the entry count for nothing)."""
    for folder in folders:
        try:
            if locked_grant(home, folder, GROUP, group, 0o1):
                log.warning(
                    "isolation: %s lost the search permission functions need (changed by "
                    "another program?); granted again",
                    folder,
                )
        except OSError as exc:  # moved or removed: the function's own error will say so
            log.warning("isolation: cannot let functions search %s again: %s", folder, exc)


# --- private /tmp -----------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def _mount_tmpfs(path: Path, identity: m.Isolation, size_mb: int) -> bool:
    options = f"size={size_mb}m,mode=0700,uid={identity.uid},gid={identity.gid}".encode()
    result = _libc.mount(b"tmpfs", str(path).encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options)
    if result != 0:
        log.warning(
            "isolation: no tmpfs for private /tmp (%s): plain folders, without a size bound",
            os.strerror(ctypes.get_errno()),
        )
        return False
    return True


def _unmount(path: Path) -> None:
    _libc.umount2(str(path).encode(), MNT_DETACH)  # EINVAL when it is no mount point: fine


def _chmod(path: Path, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, mode)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
