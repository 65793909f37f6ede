"""The runtime template server: import the heavy libraries once, then fork instances on request.

Started by the gateway as ``python -m coldbrew.runtime.template <control-fd>``. The control
channel is a SOCK_SEQPACKET socket: each ``Spawn`` arrives as one packet carrying the instance's
channel socket as an SCM_RIGHTS file descriptor, and each fork is answered by ``Spawned``.

Fork safety: this process must never start a thread (OpenMP, BLAS, ONNX Runtime, torch intra-op
pools) because a forked child inherits locks held by threads that do not exist in it. The gateway
starts it with ``OMP_NUM_THREADS=1`` and friends, it only *imports* libraries, and it freezes the
garbage collector so that children share the imported objects' pages copy-on-write.
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

from coldbrew.runtime import messages as m

MAX_PACKET = 4 * 1024 * 1024


def preload(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional library must not stop the platform
            print(f"coldbrew template: could not preload {name}: {exc}", file=sys.stderr)


def fork_instance(control: socket.socket, spawn: m.Spawn, channel_fd: int) -> int:
    pid = os.fork()
    if pid:
        os.close(channel_fd)
        return pid
    # --- child -------------------------------------------------------------------------------
    code = 0
    try:
        control.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        gc.unfreeze()
        from coldbrew.runtime.instance import prepare_process, run_instance

        prepare_process(spawn)
        run_instance(spawn, socket.socket(fileno=channel_fd))
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(control: socket.socket) -> None:
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(control, MAX_PACKET, 1)
        except (ConnectionError, OSError):
            return
        if not data:
            return  # the gateway closed its end: we go too
        message = m.decode_control(data)
        if not isinstance(message, m.Spawn) or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        try:
            pid = fork_instance(control, message, fds[0])
            reply: m.ControlMessage = m.Spawned(instance_id=message.instance_id, pid=pid)
        except OSError as exc:
            reply = m.SpawnFailed(instance_id=message.instance_id, message=str(exc))
        control.send(m.encode_packet(reply))


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
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
