"""Memory limits for local instances: a cgroup where one can be made, else RSS sampling.

cgroup v1 (the machines this was built on let root create ``memory`` groups) makes the kernel
enforce ``memory_mb`` exactly: an instance over the limit is OOM-killed inside its own group and
``memory.oom_control`` records it. Pages a child shares copy-on-write with its template stay
charged to the template, so only what the instance itself allocates counts, as on Lambda.
Without cgroups a sampler reads each instance's unique set size (USS) and kills it when over.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil

CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")


def _own_memory_cgroup() -> Path | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return CGROUP_V1_MEMORY / path.lstrip("/")
    return None


class CgroupMemoryLimiter:
    """One cgroup v1 memory group per instance, under ``<our group>/coldbrew-<pid>``.

    The gateway only makes the root; each forked process makes and joins its own group (see
    ``runtime/cgroups.py``), so no migration is ever on the gateway's clock."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def create(cls) -> CgroupMemoryLimiter | None:
        own = _own_memory_cgroup()
        if own is None or not own.is_dir():
            return None
        _remove_stale_roots(own)
        root = own / f"coldbrew-{os.getpid()}"
        try:
            root.mkdir(exist_ok=True)
            probe = root / "probe"
            probe.mkdir(exist_ok=True)
            (probe / "memory.limit_in_bytes").write_text(str(64 << 20))
            probe.rmdir()
        except OSError:
            with contextlib.suppress(OSError):
                root.rmdir()
            return None
        return cls(root)

    def oom_killed(self, group: str) -> bool:
        try:
            text = (Path(group) / "memory.oom_control").read_text()
        except OSError:
            return False
        fields = dict(line.split() for line in text.splitlines() if line.strip())
        return int(fields.get("oom_kill", "0")) > 0

    def release(self, group: str) -> None:
        with contextlib.suppress(OSError):
            Path(group).rmdir()

    def sweep(self) -> None:
        """Remove groups no process is in any more (spares of stopped templates)."""
        for group in self.root.iterdir():
            if group.is_dir():
                with contextlib.suppress(OSError):
                    if not (group / "cgroup.procs").read_text().strip():
                        group.rmdir()

    def close(self) -> None:
        for group in self.root.glob("*"):
            if group.is_dir():
                with contextlib.suppress(OSError):
                    group.rmdir()
        with contextlib.suppress(OSError):
            self.root.rmdir()


def _remove_stale_roots(own: Path) -> None:
    """Groups left by gateways that were killed without cleaning up (their pid is gone)."""
    for stale in own.glob("coldbrew-*"):
        pid = stale.name.removeprefix("coldbrew-")
        if not pid.isdigit() or psutil.pid_exists(int(pid)):
            continue
        for group in [*stale.iterdir(), stale]:
            if group.is_dir():
                with contextlib.suppress(OSError):
                    group.rmdir()


def unique_memory_bytes(pid: int) -> int | None:
    """USS of a process: what it would free on exit (shared template pages excluded)."""
    try:
        return int(psutil.Process(pid).memory_full_info().uss)
    except (psutil.Error, OSError):
        return None
