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

from coldbrew.runtime import cgroups, forksafety, isolation, spares
from coldbrew.runtime import messages as m
from coldbrew.runtime.config import BUILTIN_MODEL_HANDLER

if TYPE_CHECKING:
    from coldbrew.runtime.instance import LoadedVersion

MAX_PACKET = 4 * 1024 * 1024


def preload(modules: list[str]) -> None:
    """Import what was asked, and nothing that starts threads unless it was asked by name: a
    library that imports torch opportunistically (skops.io does) would otherwise put torch's
    threads into the template every instance forks from."""
    with forksafety.only_asked_imports(modules):
        for name in modules:
            before = len(forksafety.snapshot().threads)
            try:
                importlib.import_module(name)
            except Exception as exc:  # a missing optional library must not stop the platform
                print(f"coldbrew template: could not preload {name}: {exc}", file=sys.stderr)
            started = len(forksafety.snapshot().threads) - before
            if started > 0:
                # onnxruntime's import starts one idle housekeeping thread: known, and forks
                # have been fine with it; anything else deserves a look.
                print(
                    f"coldbrew template: importing {name} started {started} thread(s), which "
                    "forked instances do not inherit",
                    file=sys.stderr,
                )


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
    if not isolation.dropped(version.isolation):  # else: a layer's own runtime template's log
        redirect_output(version.log_path)
    enter_environment(version)
    install_lambda_logging(REQUEST_IDS)
    if version.isolation is not None:
        cgroups.stash(version.isolation.cgroups)
    isolation.drop_privileges(version.isolation)  # before any user code (import, model load)
    started = time.perf_counter()
    baseline = forksafety.snapshot()  # before any user code: what the template itself holds
    try:
        loaded = Loaded(version)
    except LoadError as exc:
        control.send(
            m.encode_packet(
                m.SpawnFailed(instance_id=version.instance_id, message=exc.info.message)
            )
        )
        return
    loaded.warm_up()
    reason = _fork_check(loaded, baseline, control)
    if reason is not None:
        control.send(m.encode_packet(m.PerInstanceInit(reason=reason)))
        return
    gc.collect()
    gc.freeze()
    ready = m.TemplateReady(pid=os.getpid(), preload_ms=(time.perf_counter() - started) * 1000)
    control.send(m.encode_packet(ready))
    serve(control, loaded)


def _fork_check(
    loaded: LoadedVersion, baseline: forksafety.Snapshot, control: socket.socket
) -> str | None:
    """Why this version's instances must not fork from here (None: they may).

    Forking now could hand every instance the same database connection, or locks of threads
    that do not exist in them; the verdict also goes to the function's log."""
    config = loaded.config
    findings = [] if config.init == "shared" else forksafety.inspect(baseline, [control.fileno()])
    hooks = forksafety.instance_hooks(forksafety.handler_modules(config))
    builtin = config.handler == BUILTIN_MODEL_HANDLER and not config.batch_handler
    when = "when the model loaded" if builtin else "at import"
    reason, line = forksafety.verdict(findings, config.init, bool(hooks), when)
    if findings or config.init != "auto":
        print(f"coldbrew: version {loaded.spawn.version}: {line}", file=sys.stderr, flush=True)
    return reason


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
        if isinstance(message, m.Spawn) and message.isolation is not None:
            cgroups.stash(message.isolation.cgroups)
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
                group = _child_group(message.instance_id)
                pid = fork_instance(control, message, fds[0], preloaded)
                reply = m.Spawned(instance_id=message.instance_id, pid=pid, cgroup=group)
        except OSError as exc:
            reply = m.SpawnFailed(instance_id=getattr(message, "instance_id", ""), message=str(exc))
        control.send(m.encode_packet(reply))
        if spare is None:
            spare = _spare(control, preloaded)  # after the reply: off the caller's clock


def _child_group(instance_id: str) -> str | None:
    """The group a directly forked instance will be in: one it makes itself (as root), or one
    the gateway made, reserved for it before the fork (as the function's uid)."""
    root = cgroups.cgroup_root()
    if root is None:
        return None
    if cgroups.privileged():
        return str(root / instance_id)
    reserved = cgroups.reserve()
    return str(reserved) if reserved else None


def _spare(control: socket.socket, preloaded: LoadedVersion | None) -> spares.Spare | None:
    if os.environ.get("COLDBREW_SPARES", "1") == "0":
        return None
    return spares.fork_spare(control, _become_child, preloaded)


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    cgroups.remember_root()
    # A layer's own runtime template runs as its function's uid (backends/local.py): the gateway
    # made the memory cgroup of its first spare, as it does for a version template's forks.
    cgroups.stash(json.loads(os.environ.pop("COLDBREW_TEMPLATE_CGROUPS", "[]")))
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
    # The gateway's private /tmp mounts: unmounted here when the gateway has gone (even killed
    # with SIGKILL), so none is left in the machine's mount table (runtime/isolation.py).
    tmp_root = os.environ.pop(isolation.TMP_ROOT, None)
    try:
        serve(control)
    finally:
        if tmp_root and os.geteuid() == 0:
            isolation.unmount_under(tmp_root)


if __name__ == "__main__":
    main()
