"""Template servers: processes that are forked, never started, to make instances.

The **runtime template** is started by the gateway as
``python -m coldbrew.runtime.template <control-fd>``: it imports the heavy libraries once and
then forks on request. A **version template** is a fork of the runtime template that has also
loaded one version's model and handler; its forks serve at once, and copy-on-write keeps N
instances of one model close to one model's memory.

Both speak the same protocol on a SOCK_SEQPACKET control socket: a ``Spawn`` packet carries the
instance's channel socket as an SCM_RIGHTS file descriptor and is answered by ``Spawned``; the
runtime template also accepts ``SpawnTemplate``, whose descriptor is the new version template's
own control socket.

Fork safety: a template must never own a thread (OpenMP, BLAS, ONNX Runtime, torch intra-op
pools), because a forked child inherits the locks of threads that do not exist in it. The gateway
starts the runtime template with ``OMP_NUM_THREADS=1`` and friends, templates only *import* and
*load* (loaders hold OpenMP to one thread), and they freeze the garbage collector so children
share the imported objects' pages instead of copying them when the collector touches them.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import signal
import socket
import sys
import time
import traceback
from typing import TYPE_CHECKING

from coldbrew.runtime import cgroups, spares
from coldbrew.runtime import messages as m

if TYPE_CHECKING:
    from coldbrew.runtime.instance import LoadedVersion

MAX_PACKET = 4 * 1024 * 1024


def preload(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional library must not stop the platform
            print(f"coldbrew template: could not preload {name}: {exc}", file=sys.stderr)


def _become_child(control: socket.socket) -> None:
    control.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _exit_child(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def fork_instance(
    control: socket.socket, spawn: m.Spawn, channel_fd: int, preloaded: LoadedVersion | None
) -> int:
    pid = os.fork()
    if pid:
        os.close(channel_fd)
        return pid
    code = 0
    try:
        _become_child(control)  # inherited objects stay frozen: see spares.run_spare
        from coldbrew.runtime.instance import prepare_process, run_instance

        prepare_process(spawn)
        run_instance(spawn, socket.socket(fileno=channel_fd), preloaded)
    except BaseException:
        traceback.print_exc()
        code = 1
    _exit_child(code)
    return 0  # unreachable


def fork_version_template(control: socket.socket, request: m.SpawnTemplate, control_fd: int) -> int:
    pid = os.fork()
    if pid:
        os.close(control_fd)
        return pid
    code = 0
    try:
        _become_child(control)
        own_control = socket.socket(fileno=control_fd)
        run_version_template(own_control, request.version)
    except BaseException:
        traceback.print_exc()
        code = 1
    _exit_child(code)
    return 0  # unreachable


def run_version_template(control: socket.socket, version: m.Spawn) -> None:
    """Load one version, then fork its instances until the gateway closes the control socket."""
    from coldbrew.runtime.instance import (
        REQUEST_IDS,
        LoadError,
        enter_environment,
        install_lambda_logging,
        redirect_output,
    )
    from coldbrew.runtime.instance import LoadedVersion as Loaded

    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    redirect_output(version.log_path)
    enter_environment(version)
    install_lambda_logging(REQUEST_IDS)
    started = time.perf_counter()
    try:
        loaded = Loaded(version)
    except LoadError as exc:
        control.send(
            m.encode_packet(
                m.SpawnFailed(instance_id=version.instance_id, message=exc.info.message)
            )
        )
        return
    threads_before = _native_threads()
    loaded.warm_up()
    if _native_threads() > threads_before:
        # Forking now could hand children locks of threads that do not exist in them.
        message = "the warm-up prediction started threads; not safe to fork from"
        control.send(
            m.encode_packet(m.SpawnFailed(instance_id=version.instance_id, message=message))
        )
        return
    gc.collect()
    gc.freeze()
    ready = m.TemplateReady(pid=os.getpid(), preload_ms=(time.perf_counter() - started) * 1000)
    control.send(m.encode_packet(ready))
    serve(control, loaded)


def _native_threads() -> int:
    """OS threads of this process (Python's threading module cannot see OpenMP's)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def serve(control: socket.socket, preloaded: LoadedVersion | None = None) -> None:
    spare = _spare(control, preloaded)
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(control, MAX_PACKET, 1)
        except OSError:
            return
        if not data:
            return  # the gateway closed its end: we go too (instances keep their channels)
        message = m.decode_control(data)
        if len(fds) != 1 or not isinstance(message, m.Spawn | m.SpawnTemplate):
            for fd in fds:
                os.close(fd)
            continue
        reply: m.ControlMessage
        try:
            if isinstance(message, m.SpawnTemplate):
                pid = fork_version_template(control, message, fds[0])
                reply = m.Spawned(instance_id=message.template_id, pid=pid)
            elif spare is not None and spares.hand_over(spare, message, fds[0]):
                os.close(fds[0])
                group = str(spare.group) if spare.group else None
                reply = m.Spawned(
                    instance_id=message.instance_id, pid=spare.pid, cgroup=group, spare=True
                )
                spare = None
            else:
                pid = fork_instance(control, message, fds[0], preloaded)
                root = cgroups.cgroup_root()
                group = str(root / message.instance_id) if root else None
                reply = m.Spawned(instance_id=message.instance_id, pid=pid, cgroup=group)
        except OSError as exc:
            reply = m.SpawnFailed(instance_id=getattr(message, "instance_id", ""), message=str(exc))
        control.send(m.encode_packet(reply))
        if spare is None:
            spare = _spare(control, preloaded)  # after the reply: off the caller's clock


def _spare(control: socket.socket, preloaded: LoadedVersion | None) -> spares.Spare | None:
    if os.environ.get("COLDBREW_SPARES", "1") == "0":
        return None
    return spares.fork_spare(control, _become_child, preloaded)


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    cgroups.remember_root()
    started = time.perf_counter()
    # The instance code itself is imported here too: pydantic builds its models at import time,
    # which would otherwise cost every cold start tens of milliseconds.
    preload(["coldbrew.runtime.instance", *json.loads(os.environ.get("COLDBREW_PRELOAD", "[]"))])
    # Children are reaped by the kernel; the gateway learns of deaths from their channels.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.collect()
    gc.freeze()
    ready = m.TemplateReady(pid=os.getpid(), preload_ms=(time.perf_counter() - started) * 1000)
    control.send(m.encode_packet(ready))
    serve(control)


if __name__ == "__main__":
    main()
