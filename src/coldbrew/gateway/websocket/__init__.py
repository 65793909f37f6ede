"""API Gateway-style WebSocket APIs: a function serves ``ws://host/ws/{name}`` and pushes to
any connection through ``/ws/@connections/{id}``.

``connections`` is the in-process table of open sockets, ``events`` the event shapes and route
selection, ``session`` one connection's life, ``management`` the @connections API.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route, WebSocketRoute

from coldbrew.gateway.websocket import management, session


def routes() -> list[BaseRoute]:
    connection = "/ws/@connections/{connection_id}"
    return [
        WebSocketRoute("/ws/{name}", session.endpoint),
        Route(connection, management.post_to_connection, methods=["POST"]),
        Route(connection, management.get_connection, methods=["GET"]),
        Route(connection, management.delete_connection, methods=["DELETE"]),
    ]


__all__ = ["routes"]
