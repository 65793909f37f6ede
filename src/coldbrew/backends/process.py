"""Handles on the processes the gateway runs, shaped like uvicorn's supervisors ``Process``:
``pid``, ``is_alive()``, ``ping()``, ``terminate()``, ``kill()``.

The pools and ``scaling.Instance`` see only :class:`Process`; each backend says what stands
behind it:

    Process (Protocol)
    ├── ProcessGroup    an instance or a version template: a session leader the gateway reaches
    │                   by signals only (the template forked it, so it is not our child), with
    │                   its memory cgroup, whose every member goes with it
    ├── ChildProcess    the runtime template: a ``subprocess.Popen`` child of the gateway
    └── (backends/inprocess.py's fake, an asyncio task)

``ping`` is uvicorn's name for "still answering": these handles have no channel of their own
(an instance's channel belongs to ``scaling.Instance``), so it is a liveness check bounded by
``timeout``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Protocol

from coldbrew.runtime import cgroups


class Process(Protocol):
    @property
    def pid(self) -> int | None: ...

    def is_alive(self) -> bool: ...

    def ping(self, timeout: float = 5.0) -> bool: ...

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM)."""

    def kill(self) -> None:
        """Stop it now (SIGKILL), with everything it started."""


class ProcessGroup:
    """A session leader (pgid == pid) and, when it has one, its memory cgroup."""

    def __init__(self, pid: int, cgroup: str | None = None) -> None:
        self._pid = pid
        self.cgroup = cgroup
        """The process's memory cgroup (None: none could be made; memory is sampled instead)."""

    @property
    def pid(self) -> int:
        return self._pid

    def is_alive(self) -> bool:
        try:
            os.kill(self._pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another uid (isolation): it exists
            pass
        return not _zombie(self._pid)

    def ping(self, timeout: float = 5.0) -> bool:
        return self.is_alive()

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pid, signal.SIGTERM)

    def kill(self) -> None:
        kill_tree(self._pid, self.cgroup)

    def reap(self) -> None:
        """After the process ended: kill what it left running (its group and cgroup), without
        signalling its pid, which may belong to another process by now."""
        kill_tree(self._pid, self.cgroup, leader=False)

    def __repr__(self) -> str:
        return f"ProcessGroup(pid={self._pid}, cgroup={self.cgroup!r})"


class ChildProcess:
    """A child of the gateway (``subprocess.Popen``): it can also be waited for."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def ping(self, timeout: float = 5.0) -> bool:
        return self.is_alive()

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.terminate()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()

    def join(self, timeout: float | None = None) -> int | None:
        """Wait for the exit (its status), or None when ``timeout`` passed first."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace_s: float = 5.0) -> None:
        """terminate, then kill if it has not exited within ``grace_s``; always reaped."""
        self.terminate()
        if self.join(grace_s) is None:
            self.kill()
            self.join()


def kill_tree(pid: int, group: str | None, leader: bool = True) -> None:
    """SIGKILL ``pid``'s process group (instances are session leaders: pgid == pid) and every
    process in its memory cgroup. ``leader=False`` after the instance has exited: its pid may
    be reused, but a group id is not while any member lives."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if leader:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if group:
        for _ in range(3):  # a fork bomb may add members while we kill: a few rounds
            members = cgroups.members(Path(group))
            if not members:
                break
            for member in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(member, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    """Dead but not yet waited for by its parent (the template reaps its children)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (comm) state ...": comm may hold spaces and ")"; the state follows the last
            return stat.read().rpartition(b")")[2].split()[0] == b"Z"
    except (OSError, IndexError):
        return False
