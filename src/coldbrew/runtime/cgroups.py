"""The instance side of memory cgroups: make a group, join it, set its limit.

The gateway decides where groups live (``COLDBREW_CGROUP_ROOT``, under its own memory cgroup);
forked processes create and join their own group, so the gateway never waits on a migration.

A version template runs as its function's unprivileged uid (``isolation.py``), so neither it nor
its forks can make a group or set a limit: the gateway makes their groups ahead of demand, with
the limit already set and only ``cgroup.procs`` given to the function's uid, and hands them over
with each ``Spawn`` (``Isolation.cgroups``). The template keeps them in a stash and takes one,
before each fork, for the process it forks.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

ROOT_VARIABLE = "COLDBREW_CGROUP_ROOT"


_root: Path | None = None
_stash: list[Path] = []
"""Groups made by the gateway, not yet used (in a version template)."""
_reserved: Path | None = None
"""The group the next fork joins (taken from the stash just before forking)."""


def remember_root() -> None:
    """Read the root once, in the runtime template: version templates replace their whole
    environment with the function's, but keep this module's memory across the fork."""
    global _root
    root = os.environ.get(ROOT_VARIABLE)
    _root = Path(root) if root else None


def cgroup_root() -> Path | None:
    return _root


def new_group(root: Path, name: str | None = None) -> Path:
    group = root / (name or f"s-{uuid.uuid4().hex[:12]}")
    group.mkdir(exist_ok=True)
    return group


def join(group: Path) -> None:
    (group / "cgroup.procs").write_text(str(os.getpid()))


def set_limit(group: Path, memory_mb: int) -> None:
    """Raises OSError (EBUSY) when the group already uses more than the new limit."""
    limit = str(memory_mb << 20)
    (group / "memory.limit_in_bytes").write_text(limit)
    # Without this the limit could be dodged by swapping (where swap accounting exists).
    with contextlib.suppress(OSError):
        (group / "memory.memsw.limit_in_bytes").write_text(limit)


def stash(groups: list[str]) -> None:
    _stash.extend(Path(group) for group in groups)


def reserve() -> Path | None:
    """In the template, before a fork: take a stashed group for the child (None: none left)."""
    global _reserved
    _reserved = _stash.pop() if _stash else None
    return _reserved


def privileged() -> bool:
    return os.geteuid() == 0


def enter(name: str, memory_mb: int) -> Path | None:
    """In a freshly forked instance: make, limit and join its own group (as root), or join the
    group reserved for it (as the function's uid, limit already set). None: no group."""
    if _root is None:
        return None
    if privileged():
        group = new_group(_root, name)
        set_limit(group, memory_mb)
    elif _reserved is not None:
        group = _reserved
    else:
        return None
    join(group)
    return group


def members(group: Path) -> list[int]:
    """Processes in ``group`` (an instance and everything it started)."""
    try:
        return [int(pid) for pid in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def make_for(root: Path, count: int, memory_mb: int, uid: int, gid: int) -> list[str]:
    """In the gateway (root): groups for a version template's forks, limit set, joinable by
    ``uid`` and by nobody else (only ``cgroup.procs`` is theirs, never the limit files)."""
    groups = []
    for _ in range(count):
        group = new_group(root, f"v-{uuid.uuid4().hex[:12]}")
        set_limit(group, memory_mb)
        os.chown(group / "cgroup.procs", uid, gid)
        groups.append(str(group))
    return groups
