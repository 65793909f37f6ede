"""Stream sessions: ``ws://host/stream/{name}``, one session is one invocation holding one
instance slot for its whole life (``session``)."""

from __future__ import annotations

from coldbrew.gateway.policy import WEBSOCKET, Endpoint, function
from coldbrew.gateway.stream import session


def endpoints() -> list[Endpoint]:
    return [Endpoint("/stream/{name}", session.stream_endpoint, WEBSOCKET, function("invoke"))]


__all__ = ["endpoints"]
