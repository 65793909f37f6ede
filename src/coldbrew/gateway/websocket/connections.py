"""The open WebSocket connections of this gateway process, by connection id.

A connection lives in the process whose socket holds it, so this table is in memory: it is
what the ``@connections`` endpoint looks ids up in. With several gateways sharing Redis a push
may arrive at a gateway that does not hold the socket; ``ownership.py`` records each
connection's gateway and forwards such a push to it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.websockets import WebSocket

log = logging.getLogger("coldbrew.websocket")


def new_connection_id() -> str:
    # 12 URL-safe characters like API Gateway's ids, so they need no escaping in @connections URLs.
    return secrets.token_urlsafe(9)


def iso8601(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@dataclass
class Connection:
    """One client socket and what API Gateway would remember about it."""

    id: str
    function: str
    """The target as the client named it (``name`` or ``name:qualifier``)."""
    websocket: WebSocket
    source_ip: str
    user_agent: str
    domain_name: str
    callback_url: str
    connected_at: float = field(default_factory=time.time)
    last_active_at: float = field(default_factory=time.time)
    closed: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def touch(self) -> None:
        self.last_active_at = time.time()

    async def send(self, data: str | bytes) -> bool:
        """Send one frame (text for str, binary for bytes); False when the socket is gone.

        Sends are serialised: route responses and @connections pushes come from different
        tasks, and a WebSocket frame must not be interleaved with another."""
        if self.closed:
            return False
        async with self._lock:
            try:
                if isinstance(data, str):
                    await self.websocket.send_text(data)
                else:
                    await self.websocket.send_bytes(data)
            except Exception:  # closed under us: starlette, uvicorn and websockets differ in how
                self.closed = True
                return False
        self.touch()
        return True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        async with self._lock:
            try:
                await self.websocket.close(code, reason)
            except Exception:
                log.debug("closing connection %s failed; it was already gone", self.id)

    def describe(self) -> dict[str, object]:
        """The GetConnection answer, as botocore parses it (camelCase on the wire)."""
        return {
            "connectedAt": iso8601(self.connected_at),
            "identity": {"sourceIp": self.source_ip, "userAgent": self.user_agent},
            "lastActiveAt": iso8601(self.last_active_at),
        }


class ConnectionTable:
    """Connection id → open connection."""

    def __init__(self) -> None:
        self._by_id: dict[str, Connection] = {}
        self.owner: Any = None
        """Records which gateway holds each connection (websocket/ownership.py), when several
        gateways share Redis; None for one gateway."""

    def add(self, connection: Connection) -> None:
        self._by_id[connection.id] = connection
        if self.owner is not None:
            self.owner.claim(connection)

    def remove(self, connection_id: str) -> None:
        if self._by_id.pop(connection_id, None) is not None and self.owner is not None:
            self.owner.release(connection_id)

    def get(self, connection_id: str) -> Connection | None:
        connection = self._by_id.get(connection_id)
        return None if connection is None or connection.closed else connection

    def __len__(self) -> int:
        return len(self._by_id)


def connections_for(app: Starlette) -> ConnectionTable:
    """The app's table, made on first use; the WebSocket route and @connections share it."""
    table: ConnectionTable | None = getattr(app.state, "websocket_connections", None)
    if table is None:
        table = app.state.websocket_connections = ConnectionTable()
    return table
