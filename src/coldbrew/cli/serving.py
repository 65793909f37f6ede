"""Running the gateway from the CLI: settings from flags, and a port bound before anything else.

The CLI binds the listening socket itself and hands it to uvicorn. A taken port is then found
in milliseconds, before the server pre-imports ML libraries or quickstart trains models, and
reported in one line instead of uvicorn's log-and-``sys.exit``.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from coldbrew.settings import Settings


class PortInUse(OSError):
    """Another process already listens on the address the server should bind."""


def settings_with(
    host: str | None = None, port: int | None = None, home: Path | None = None, **overrides: object
) -> Settings:
    """``Settings()`` (environment) with the flags the user gave on top."""
    given = {"host": host, "port": port, "home": home, **overrides}
    return Settings(**{key: value for key, value in given.items() if value is not None})


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; raises PortInUse when it is taken.

    SO_REUSEADDR (as uvicorn sets it) lets a restart reuse a port whose old connections are in
    TIME_WAIT, yet still fails while another process is listening."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is already in use: stop the other "
                f"server or pick another port with --port"
            ) from None
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def public_url(host: str, port: int) -> str:
    """The URL a user on this machine should paste: a wildcard bind is reached via loopback."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
