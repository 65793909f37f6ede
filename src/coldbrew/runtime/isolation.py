"""Who user code runs as: each function's own unprivileged uid, decided once, dropped in the child.

The gateway and the runtime template run as root (the template must fork children that become
different functions); every process that runs a function's code, its version template and its
instances, drops to that function's uid/gid with ``no_new_privs`` *after* the fork and *before*
the handler is imported or the model loaded. The kernel's own checks then keep one function
away from another's processes and from the gateway's: ``/proc/<pid>/environ``, signals, ptrace
and ``pidfd_getfd`` all need the same uid (or CAP_SYS_PTRACE, which is gone), and the change of
uid makes the process non-dumpable, which closes ``/proc/<pid>/fd`` even to the same uid.

A dependency layer's own runtime template (``backends/local.py``) imports the layer's packages,
which are the deployer's code, so it must never run as root: it is started per (layer, function)
through ``python -P -m coldbrew.runtime.isolation <identity> -- <command>``, which drops to the
function's uid, limits and ``no_new_privs`` with the runtime's own packages only, then execs the
template with the layer on its path. Its forks have nothing left to drop.

The gateway side (which uid a function gets, the home folder's modes, private /tmp) lives in
``coldbrew.security.home``; ``docs/SECURITY.md`` says what this is and is not.
"""

from __future__ import annotations

import ctypes
import os
import re
import resource
import sys
from dataclasses import dataclass

import msgspec

from coldbrew.runtime import messages as m

PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
# Resolved once, at import in the runtime template: dlopen and the symbol lookup cost ~0.5 ms,
# which a child would otherwise pay on a caller's clock.
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl


@dataclass(frozen=True)
class Decision:
    """Whether isolation is on, and why (shown in the start-up log and ``GET /v1/info``)."""

    enabled: bool
    reason: str


def decide(mode: str, euid: int) -> Decision:
    """``COLDBREW_ISOLATION`` (auto, on, off) and the gateway's euid -> on or off, and why.

    Raises InvalidSettings for ``on`` without root: a platform asked to isolate that cannot
    must not start and quietly run everyone's code as one user."""
    if mode == "off":
        return Decision(False, "COLDBREW_ISOLATION=off: every function runs as the gateway's user")
    if euid == 0:
        return Decision(True, "coldbrew runs as root: each function runs as its own uid")
    if mode == "on":
        from coldbrew.settings import InvalidSettings

        raise InvalidSettings(
            "invalid setting COLDBREW_ISOLATION=on: isolating functions from each other needs "
            f"coldbrew to run as root, and it runs as uid {euid}. Start it as root, or set "
            "COLDBREW_ISOLATION=auto (isolation is then off, and says so) and start again."
        )
    return Decision(
        False,
        f"coldbrew runs as uid {euid}, not root: every function runs as that user and can "
        "read the registry, keys and other functions' bundles",
    )


def dropped(isolation: m.Isolation | None) -> bool:
    """Whether this process already runs as the function's uid (forks of a version template)."""
    return isolation is not None and os.getuid() == isolation.uid


def drop_privileges(isolation: m.Isolation | None) -> None:
    """Become the function's uid/gid for good, with its limits; a no-op when isolation is off.

    Order matters: limits first (only root may raise them, and they must not be raisable
    after), then ``no_new_privs`` (no setuid binary can give root back), then the groups and
    gid, and the uid last (after it, nothing else may be changed). ``setresuid`` sets the
    saved uid too, so there is no way back to root."""
    if isolation is None:
        return
    nproc = isolation.max_processes
    files = isolation.max_open_files
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    set_no_new_privs()
    if dropped(isolation):
        return  # a version template's fork: identity inherited, only the limits were per instance
    os.setgroups(isolation.groups)
    os.setresgid(isolation.gid, isolation.gid, isolation.gid)
    os.setresuid(isolation.uid, isolation.uid, isolation.uid)
    if os.geteuid() != isolation.uid or os.getegid() != isolation.gid:
        raise PermissionError(f"could not drop to uid {isolation.uid}")  # never run as root


TMP_ROOT = "COLDBREW_TMP_ROOT"
"""The runtime template's note of its gateway's private /tmp folder (``unmount_under``)."""
MNT_DETACH = 2


def mounts_under(folder: str) -> list[str]:
    """Mount points at or below ``folder`` in this mount namespace, deepest first."""
    prefix = folder.rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as table:
        for line in table:
            fields = line.split(" ")
            if len(fields) < 5:
                continue
            # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
            point = re.sub(r"\\([0-7]{3})", lambda e: chr(int(e[1], 8)), fields[4])
            if point == folder.rstrip("/") or point.startswith(prefix):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_under(folder: str) -> int:
    """Detach every mount at or below ``folder`` (private /tmp tmpfs mounts); how many went.

    The gateway mounts each instance's tmpfs in the machine's mount namespace; a gateway killed
    with SIGKILL cannot unmount them, so its runtime template (root, in a session of its own,
    it outlives the gateway by the moment it takes to see its control socket close) does."""
    gone = 0
    for point in mounts_under(folder):
        if _libc.umount2(point.encode(), MNT_DETACH) == 0:
            gone += 1
    return gone


def set_no_new_privs() -> None:
    if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def no_new_privs() -> bool:
    return bool(_prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1)


EXEC_PYTHONPATH = "COLDBREW_EXEC_PYTHONPATH"
"""The PYTHONPATH of the program ``exec_as`` starts (the layer first): never the bootstrap's."""


def exec_command(isolation: m.Isolation, command: list[str]) -> list[str]:
    """``command``, run as ``isolation``'s uid from its first instruction (see ``main``)."""
    identity = msgspec.json.encode(isolation).decode()
    return [sys.executable, "-P", "-m", "coldbrew.runtime.isolation", identity, "--", *command]


def main(argv: list[str]) -> None:
    """Drop to the identity in ``argv[0]``, then exec ``argv[2:]`` (after ``--``).

    Runs as root with the gateway's own PYTHONPATH (``-P``: not even the working folder), so
    nothing of a layer is imported before the drop; the exec'd program gets ``EXEC_PYTHONPATH``
    as its PYTHONPATH. ``no_new_privs`` and the limits survive ``execve``."""
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: python -m coldbrew.runtime.isolation IDENTITY -- COMMAND...")
    drop_privileges(msgspec.json.decode(argv[0], type=m.Isolation))
    env = dict(os.environ)
    path = env.pop(EXEC_PYTHONPATH, None)
    if path is not None:
        env["PYTHONPATH"] = path
    command = argv[2:]
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main(sys.argv[1:])
