"""Spare instances: a template keeps one child forked ahead of demand.

Forking a process that has imported scikit-learn, ONNX Runtime and XGBoost costs ~8 ms here
(page tables of a few hundred MB), and moving a process into a memory cgroup can wait ~15 ms
for an RCU grace period. Both are paid by the spare *before* it is needed: when a ``Spawn``
arrives the template hands the channel to its spare, which only sets its memory limit and its
environment before serving, and a new spare is forked behind it. (Android's zygote keeps
unspecialised app processes for the same reason.)
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from coldbrew.runtime import cgroups
from coldbrew.runtime import messages as m

MAX_PACKET = 4 * 1024 * 1024


class Spare:
    def __init__(self, pid: int, link: socket.socket, group: Path | None) -> None:
        self.pid = pid
        self.link = link
        self.group = group


def fork_spare(
    control: socket.socket, become_child: Callable[[socket.socket], None], preloaded: object | None
) -> Spare | None:
    """Fork a spare that waits for one (Spawn, channel fd); None if forking failed."""
    root = cgroups.cgroup_root()
    if root is None:
        group = None
    else:  # a version template runs as its function's uid: its groups come from the gateway
        group = cgroups.new_group(root) if cgroups.privileged() else cgroups.reserve()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    if pid:
        theirs.close()
        return Spare(pid, ours, group)
    code = 0
    try:
        ours.close()
        become_child(control)
        run_spare(theirs, group, preloaded)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_spare(link: socket.socket, group: Path | None, preloaded: object | None) -> None:
    # No gc.unfreeze(): objects inherited from the template stay out of the collector's reach,
    # so collections in the child never write to (and so copy) the template's pages.
    if group is not None:
        try:
            cgroups.join(group)  # the slow part, done before anyone waits for us
        except OSError as exc:
            print(f"coldbrew: spare could not join {group}: {exc}", file=sys.stderr)
    if preloaded is not None:
        # While nobody waits for us: one invocation, so the pages the first real call would
        # copy-on-write (and its first-call set-up) are paid now, not on a caller's clock.
        preloaded.warm_up(model_only=True)  # type: ignore[attr-defined]
    else:
        warm_libraries()
    _give_back_memory()
    data, fds, _flags, _addr = socket.recv_fds(link, MAX_PACKET, 1)
    if not data or len(fds) != 1:
        return  # the template went away: so do we
    spawn = m.decode_control(data)
    assert isinstance(spawn, m.Spawn)
    link.close()
    from coldbrew.runtime.instance import prepare_process, run_instance

    channel = socket.socket(fileno=fds[0])
    if group is not None and cgroups.privileged():  # else the gateway set it when making it
        try:
            cgroups.set_limit(group, int(spawn.config.get("memory_mb", 512)))
        except OSError as exc:
            error = m.ErrorInfo("OUT_OF_MEMORY", "MemoryError", f"memory_mb is too small: {exc}")
            channel.sendall(m.encode(m.LoadFailed(pid=os.getpid(), error=error)))
            return
    prepare_process(spawn, join_cgroup=False)  # drops to the function's uid, last
    run_instance(spawn, channel, preloaded)  # type: ignore[arg-type]


def warm_libraries() -> None:
    """A runtime-template spare does not know its model yet, but the first prediction of any
    scikit-learn forest pays for the same lazy set-up: pay it with a tiny forest now. Safe
    here, unlike in a template: a spare never forks, so threads cannot hurt it."""
    try:
        import numpy as np
        from sklearn.ensemble import RandomForestClassifier

        rows = np.arange(32, dtype=np.float64).reshape(8, 4)
        forest = RandomForestClassifier(n_estimators=2, n_jobs=1, random_state=0)
        forest.fit(rows, [0, 1] * 4).predict_proba(rows[:1])
    except Exception:  # a template without scikit-learn: nothing to warm
        pass


def _give_back_memory() -> None:
    """Return the warm-up's freed heap to the kernel (glibc keeps it otherwise), so an idle
    spare or instance holds only what it still uses: N warm instances stay close to one."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def hand_over(spare: Spare, spawn: m.Spawn, channel_fd: int) -> bool:
    """Give the spare its instance; False if the spare is gone (then fork directly)."""
    try:
        socket.send_fds(spare.link, [m.encode_packet(spawn)], [channel_fd])
    except OSError:
        return False
    finally:
        spare.link.close()
    return True
