"""API Gateway-style WebSocket APIs: a function serves ``ws://host/ws/{name}`` and pushes to
any connection through ``/ws/@connections/{id}``.

``connections`` is the in-process table of open sockets, ``events`` the event shapes and route
selection, ``session`` one connection's life, ``management`` the @connections API.
"""

from __future__ import annotations

from coldbrew.gateway.policy import WEBSOCKET, Endpoint, anyone, function
from coldbrew.gateway.websocket import management, session
from coldbrew.gateway.websocket.ownership import start_ownership, stop_ownership


def endpoints() -> list[Endpoint]:
    connection = "/ws/@connections/{connection_id}"
    # @connections: the handler checks the function that owns the connection.
    return [
        Endpoint("/ws/{name}", session.endpoint, WEBSOCKET, function("invoke")),
        Endpoint(connection, management.post_to_connection, "POST", anyone("invoke")),
        Endpoint(connection, management.get_connection, "GET", anyone("invoke")),
        Endpoint(connection, management.delete_connection, "DELETE", anyone("invoke")),
    ]


__all__ = ["endpoints", "start_ownership", "stop_ownership"]
