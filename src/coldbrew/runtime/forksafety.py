"""What a version template may not own when it forks, and the hooks that run after a fork.

A version template imports a version's handler and loads its model once, then forks every
instance from that state. Some state does not survive a fork: a socket (a database connection,
an HTTP keep-alive pool) would be shared by every instance, so their replies cross; a thread
exists only in the parent, so a lock it held stays locked forever in each child; a file's offset
is shared; a child process belongs to the template. ``snapshot`` is taken before user code runs
and ``inspect`` after it, and whatever the user code added is described in plain words
("socket to 127.0.0.1:5432"). A version whose import left any of it behind gets per-instance
init: its instances fork from the runtime template and import the handler themselves.

A handler that reopens what it needs in each instance says so with a module-level
``on_instance_start()`` or the ``coldbrew.after_fork`` decorator; its sockets, files and child
processes are then only logged, and it keeps the fast path. Threads are never excused: no hook
in a child can release a lock that a thread of the template held at the fork.

The lifecycle (docs/RUNTIME.md): once per version (the version template: imports, model load,
warm-up), once per instance (after the fork: ``on_instance_start``, ``coldbrew.after_fork``
hooks, ``os.register_at_fork`` handlers), once per invocation (the handler).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from coldbrew import errors

HOOK_NAME = "on_instance_start"
_AFTER_FORK: list[Callable[[], Any]] = []
"""Hooks registered with ``coldbrew.after_fork`` by the user code this process imported."""

# Modules that start threads when imported or first used. A runtime template must not import
# them just because a library it preloads imports them opportunistically (skops.io imports
# torch when torch is installed): only when they are asked for by name.
THREAD_STARTERS = ("torch", "tensorflow", "jax", "jaxlib")


class ForkUnsafe(errors.ColdbrewError):
    """A version template found state its forks would share; its version uses per-instance
    init instead (not a failure: the reason is shown, and instances start correctly)."""

    code = "FORK_UNSAFE"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def after_fork(hook: Callable[[], Any]) -> Callable[[], Any]:
    """Decorator: run ``hook()`` once in each instance, after the fork and before its first
    invocation (open a database connection there, not at import)."""
    _AFTER_FORK.append(hook)
    return hook


# --- what a process holds ---------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """The threads, descriptors and child processes of this process at one moment."""

    threads: frozenset[int]
    fds: dict[int, str]
    """fd -> what ``/proc/self/fd/<fd>`` links to (``socket:[123]``, a path, ``pipe:[9]``)."""
    children: frozenset[int]
    python_threads: frozenset[int] = field(default_factory=frozenset)


def snapshot() -> Snapshot:
    return Snapshot(
        threads=frozenset(_task_ids()),
        fds=_open_fds(),
        children=frozenset(_child_pids()),
        python_threads=frozenset(t.ident or 0 for t in threading.enumerate()),
    )


def _task_ids() -> list[int]:
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [threading.get_native_id()]


def _open_fds() -> dict[int, str]:
    found: dict[int, str] = {}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for name in names:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the descriptor listdir itself used, already closed
        found[int(name)] = target
    return found


def _child_pids() -> list[int]:
    pids: list[int] = []
    for tid in _task_ids():
        try:
            with open(f"/proc/self/task/{tid}/children") as children:
                pids.extend(int(pid) for pid in children.read().split())
        except OSError:
            continue
    return pids


def inspect(baseline: Snapshot, own_fds: Iterable[int] = ()) -> list[str]:
    """What user code left behind since ``baseline``, one phrase per finding (empty: safe).

    ``own_fds`` are descriptors the template itself opened since (its control socket)."""
    now = snapshot()
    findings = _thread_findings(baseline, now)
    own = set(own_fds) | {0, 1, 2}
    new_fds = {
        fd: target
        for fd, target in now.fds.items()
        if fd not in own and baseline.fds.get(fd) != target and not _ignored(target)
    }
    sockets = _socket_table() if any(t.startswith("socket:") for t in new_fds.values()) else {}
    for _fd, target in sorted(new_fds.items()):
        findings.append(describe_fd(target, sockets) + " opened")
    for pid in sorted(now.children - baseline.children):
        findings.append(f"child process {pid} ({_process_name(pid)}) started")
    return findings


def verdict(findings: list[str], init: str, has_hooks: bool, when: str) -> tuple[str | None, str]:
    """(the reason for per-instance init, or None to keep the version template; a log line).

    ``init`` is the config's choice; ``has_hooks`` whether the user code declared per-instance
    hooks (then only threads still force per-instance init); ``when`` ends the phrase
    ("at import")."""
    if init == "per-instance":
        return 'init = "per-instance" in coldbrew.toml', "per-instance init, as configured"
    if init == "shared" or not findings:
        return None, "version template: nothing found that a fork would share"
    threads = [f for f in findings if f.startswith(("thread", "native thread"))]
    if has_hooks and not threads:
        said = summarise(findings, when)
        return None, (
            f"version template kept: {said}, but the handler defines an after-fork hook "
            f"({HOOK_NAME} or coldbrew.after_fork) that must reopen it in each instance"
        )
    reason = summarise(threads if has_hooks else findings, when)
    return reason, f"per-instance init: {reason}"


def summarise(findings: list[str], when: str, most: int = 3) -> str:
    shown = findings[:most]
    more = len(findings) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "") + f" {when}"


def _thread_findings(baseline: Snapshot, now: Snapshot) -> list[str]:
    started = now.threads - baseline.threads
    if not started:
        return []
    names = [
        t.name
        for t in threading.enumerate()
        if t.ident not in baseline.python_threads and t is not threading.main_thread()
    ]
    native = len(started) - len(names)
    words = [f"thread '{name}' started" for name in names]
    if native > 0:
        plural = "s" if native > 1 else ""
        words.append(f"{native} native thread{plural} (OpenMP, BLAS, torch...) started")
    return words


HARMLESS_FILES = frozenset({"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"})
"""Devices without an offset or a peer: sharing them between forks changes nothing."""


def _ignored(target: str) -> bool:
    # The directory descriptor os.listdir("/proc/self/fd") holds while it reads, and devices
    # that are the same in every fork.
    return (target.startswith("/proc/") and target.endswith("/fd")) or target in HARMLESS_FILES


def describe_fd(target: str, sockets: dict[str, str]) -> str:
    if target.startswith("socket:["):
        inode = target[len("socket:[") : -1]
        return sockets.get(inode, "socket")
    if target.startswith("pipe:"):
        return "pipe"
    if target.startswith("anon_inode:"):
        return f"{target.removeprefix('anon_inode:').strip('[]')} descriptor"
    return f"file {target}"


def _process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return "?"


# --- sockets: inode -> "socket to 127.0.0.1:5432" --------------------------------------------

_TCP_LISTEN = "0A"


def _socket_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        table.update(_inet_sockets(f"/proc/self/net/{name}", family, "socket"))
    for name, family in (("udp", socket.AF_INET), ("udp6", socket.AF_INET6)):
        table.update(_inet_sockets(f"/proc/self/net/{name}", family, "UDP socket"))
    table.update(_unix_sockets("/proc/self/net/unix"))
    return table


def _inet_sockets(path: str, family: int, kind: str) -> dict[str, str]:
    found: dict[str, str] = {}
    with contextlib.suppress(OSError), open(path) as table:
        next(table, None)
        for line in table:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == _TCP_LISTEN and kind == "socket":
                found[inode] = f"listening socket on {_address(local, family)}"
            elif _port(remote) != 0:
                found[inode] = f"{kind} to {_address(remote, family)}"
            else:
                found[inode] = f"{kind} on {_address(local, family)}"
    return found


def _port(hex_address: str) -> int:
    return int(hex_address.rpartition(":")[2], 16)


def _address(hex_address: str, family: int) -> str:
    """``0100007F:1538`` -> ``127.0.0.1:5432`` (the kernel prints each 32-bit word in host
    order)."""
    host_hex, _, port_hex = hex_address.partition(":")
    raw = bytes.fromhex(host_hex)
    host_bytes = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    host = socket.inet_ntop(family, host_bytes)
    port = int(port_hex, 16)
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def _unix_sockets(path: str) -> dict[str, str]:
    found: dict[str, str] = {}
    with contextlib.suppress(OSError), open(path) as table:
        next(table, None)
        for line in table:
            fields = line.split()
            if len(fields) < 7:
                continue
            bound = fields[7] if len(fields) > 7 else ""
            found[fields[6]] = f"unix socket {bound}".strip()
    return found


# --- after the fork ---------------------------------------------------------------------------


def handler_modules(config: Any) -> list[str]:
    """The modules a ``FunctionConfig`` names (handler, batch and stream handlers)."""
    targets = (config.handler, config.batch_handler, config.stream_handler)
    return [t.partition(":")[0] for t in targets if t]


def module_hooks(module_names: Iterable[str]) -> list[Callable[[], Any]]:
    """The ``on_instance_start`` functions of the (imported) handler modules, once each."""
    hooks: list[Callable[[], Any]] = []
    for name in dict.fromkeys(module_names):
        hook = getattr(sys.modules.get(name), HOOK_NAME, None)
        if callable(hook) and hook not in hooks:
            hooks.append(hook)
    return hooks


def instance_hooks(module_names: Iterable[str]) -> list[Callable[[], Any]]:
    """Every hook to run once per instance: the modules' own, then the decorated ones."""
    hooks = module_hooks(module_names)
    return hooks + [h for h in _AFTER_FORK if h not in hooks]


def run_instance_hooks(module_names: Iterable[str]) -> None:
    """Run the per-instance hooks; an exception propagates (the instance fails to load)."""
    for hook in instance_hooks(module_names):
        hook()


# --- the runtime template's preload -----------------------------------------------------------


class _Refuse(importlib.abc.MetaPathFinder):
    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(
                f"coldbrew: {fullname} is not imported into the runtime template unless "
                "preload_modules names it",
                name=fullname,
            )
        return None


@contextlib.contextmanager
def only_asked_imports(asked: Iterable[str]) -> Iterator[None]:
    """While preloading, refuse the thread-starting libraries nobody asked for by name."""
    asked_roots = {name.partition(".")[0] for name in asked}
    refused = frozenset(n for n in THREAD_STARTERS if n not in asked_roots)
    finder = _Refuse(refused)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
