"""The instance side of memory cgroups: make a group, join it, set its limit.

The gateway decides where groups live (``COLDBREW_CGROUP_ROOT``, under its own memory cgroup);
forked processes create and join their own group, so the gateway never waits on a migration.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

ROOT_VARIABLE = "COLDBREW_CGROUP_ROOT"


_root: Path | None = None


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
