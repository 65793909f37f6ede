"""``coldbrew serve --workers N``: N gateway processes sharing one listening socket.

A plain loop with explicit health checks, as uvicorn's ``supervisors/multiprocess.py``: the
supervisor binds the port, starts the workers (each a whole gateway with its own template
server and instances, ``python -m coldbrew.gateway.worker``) with the socket inherited, and
then every ``interval_s``:

- a worker whose process ended is started again (after a backoff that grows while it keeps
  dying young, so a gateway that cannot start does not spin the CPU);
- a worker that does not answer ``GET /healthz`` on its own Unix socket for
  ``health_failures`` checks in a row is killed, and so started again.

The kernel hands each new connection on the shared socket to one worker, so a worker that dies
loses only the requests it was serving; the others keep accepting. What must happen once
(migrating the registry, making the bootstrap key) is done by the caller before ``run``, so
the workers start together: a gateway's start is mostly importing and preloading its runtime
template (~10-30 s on a busy 2-core machine), and one after the other that doubled. If the
first worker cannot start, ``run`` stops them all and returns 1. SIGINT or SIGTERM stops every
worker (SIGTERM, then SIGKILL after ``stop_timeout_s``).
"""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("coldbrew.supervisor")


@dataclass
class Worker:
    """One gateway process: the small handle a supervisor needs (pid, alive, ping, stop)."""

    index: int
    health_socket: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restarts: int = 0
    ready: bool = False
    next_start: float = 0.0
    """Monotonic time before which a dead worker is not started again (backoff)."""
    backoff_s: float = field(default=0.5)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    tls: bool = False
    """The gateway speaks TLS (COLDBREW_TLS_CERT): on its own socket too."""

    def ping(self, timeout: float = 2.0) -> bool:
        return healthy(self.health_socket, timeout, self.tls)

    def terminate(self) -> None:
        if self.is_alive():
            self.process.terminate()  # type: ignore[union-attr]

    def kill(self) -> None:
        if self.is_alive():
            self.process.kill()  # type: ignore[union-attr]


def healthy(path: Path, timeout: float = 2.0, tls: bool = False) -> bool:
    """Whether the gateway on Unix socket ``path`` answers ``GET /healthz`` with 200."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(timeout)
            raw.connect(str(path))
            sock = _unverified_tls().wrap_socket(raw) if tls else raw  # our own child's cert
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n")
            status = sock.recv(64)
    except OSError:  # ssl.SSLError included
        return False
    return status.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))


def _unverified_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Supervisor:
    def __init__(
        self,
        workers: int,
        listener: socket.socket,
        sockets_dir: Path,
        environment: dict[str, str],
        interval_s: float = 0.5,
        health_interval_s: float = 5.0,
        health_failures: int = 3,
        startup_timeout_s: float = 180.0,
        stop_timeout_s: float = 20.0,
        command: list[str] | None = None,
        tls: bool = False,
    ) -> None:
        self.listener = listener
        self.sockets_dir = sockets_dir
        self.environment = environment
        self.interval_s = interval_s
        self.health_interval_s = health_interval_s
        self.health_failures = health_failures
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.command = command or [sys.executable, "-m", "coldbrew.gateway.worker"]
        self.workers = [
            Worker(i, sockets_dir / f"gateway-{i}.sock", tls=tls) for i in range(workers)
        ]
        self.should_exit = threading.Event()
        self.on_restart: Callable[[Worker], None] | None = None

    # --- starting -----------------------------------------------------------------------------
    def start(self, worker: Worker) -> None:
        worker.health_socket.unlink(missing_ok=True)
        env = {
            **self.environment,
            "COLDBREW_WORKER_FD": str(self.listener.fileno()),
            "COLDBREW_WORKER_INDEX": str(worker.index),
            "COLDBREW_WORKER_SOCKET": str(worker.health_socket),
        }
        worker.process = subprocess.Popen(self.command, env=env, pass_fds=[self.listener.fileno()])
        worker.started_at = time.monotonic()
        worker.ready, worker.failures = False, 0
        log.info("started gateway worker %d (pid %d)", worker.index, worker.pid)

    def wait_ready(self, worker: Worker) -> bool:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline and not self.should_exit.is_set():
            if not worker.is_alive():
                return False
            if worker.ping():
                worker.ready = True
                return True
            self.should_exit.wait(0.1)
        return False

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> int:
        """Start the workers and keep them up until SIGINT/SIGTERM; the exit code."""
        self._install_signals()
        self.sockets_dir.mkdir(parents=True, exist_ok=True)
        for worker in self.workers:
            self.start(worker)
        if not self.wait_ready(self.workers[0]):  # a gateway that cannot start: say so, stop
            code = 0 if self.should_exit.is_set() else 1
            if code:
                log.error("the first gateway worker did not start; see its log above")
            self.shutdown()
            return code
        last_health = time.monotonic()
        while not self.should_exit.wait(self.interval_s):
            now = time.monotonic()
            for worker in self.workers:
                self._keep_alive(worker, now)
            if now - last_health >= self.health_interval_s:
                last_health = now
                for worker in self.workers:
                    self._check_health(worker, now)
        self.shutdown()
        return 0

    def _keep_alive(self, worker: Worker, now: float) -> None:
        if worker.is_alive():
            if not worker.ready and worker.ping(timeout=0.5):
                worker.ready = True
                worker.backoff_s = 0.5  # it came up: a later death starts the backoff afresh
            return
        if worker.process is not None and worker.next_start == 0.0:
            code = worker.process.returncode
            lived = now - worker.started_at
            log.warning(
                "gateway worker %d (pid %d) exited with %s after %.1f s; restarting it",
                worker.index,
                worker.pid,
                code,
                lived,
            )
            worker.backoff_s = 0.5 if lived > 60 else min(worker.backoff_s * 2, 30.0)
            worker.next_start = now + (0.0 if lived > 60 else worker.backoff_s)
        if now >= worker.next_start:
            worker.next_start = 0.0
            worker.restarts += 1
            self.start(worker)
            if self.on_restart:
                self.on_restart(worker)

    def _check_health(self, worker: Worker, now: float) -> None:
        if not worker.is_alive():
            return
        if not worker.ready:  # _keep_alive pings it until it is up, for startup_timeout_s
            if now - worker.started_at > self.startup_timeout_s:
                log.error("gateway worker %d did not start in time; killing it", worker.index)
                worker.kill()
            return
        if worker.ping():
            worker.failures = 0
            return
        worker.failures += 1
        if worker.failures >= self.health_failures:
            log.error(
                "gateway worker %d (pid %d) failed %d health checks; killing it",
                worker.index,
                worker.pid,
                worker.failures,
            )
            worker.kill()

    # --- stopping -------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        def stop(signum: int, frame: object) -> None:
            self.should_exit.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)

    def shutdown(self) -> None:
        for worker in self.workers:
            worker.terminate()
        deadline = time.monotonic() + self.stop_timeout_s
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("gateway worker %d did not stop in time; killing it", worker.index)
                worker.kill()
                worker.process.wait()
            worker.health_socket.unlink(missing_ok=True)
        self.listener.close()
