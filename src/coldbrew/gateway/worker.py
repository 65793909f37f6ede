"""One gateway worker of ``coldbrew serve --workers N`` (cluster/supervisor.py starts it).

It serves the listening socket it inherited (``COLDBREW_WORKER_FD``), shared with the other
workers, and a Unix socket of its own (``COLDBREW_WORKER_SOCKET``) on which the supervisor
checks its health and through which one worker can be reached alone. It dies with its
supervisor (``PR_SET_PDEATHSIG``), so a supervisor killed with SIGKILL leaves no gateway behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
from pathlib import Path

from coldbrew.gateway.server import build_server
from coldbrew.settings import Settings

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's shutdown still stops us
        return
    if os.getppid() == 1:  # the supervisor died before prctl
        sys.exit(0)


def _own_socket(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)  # the gateway's own user only: it bypasses no auth, but stays private
    sock.listen(128)
    return sock


def main() -> None:
    _die_with_parent()
    shared = socket.socket(fileno=int(os.environ["COLDBREW_WORKER_FD"]))
    own = _own_socket(Path(os.environ["COLDBREW_WORKER_SOCKET"]))
    server = build_server(Settings())
    server.run(sockets=[shared, own])
    if not server.started:
        sys.exit(1)


if __name__ == "__main__":
    main()
