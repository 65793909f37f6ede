"""``ws://host/ws/{name}``: one client connection, from $connect to $disconnect.

1. $connect: the function is invoked before the handshake completes; a proxy response with a
   non-2xx ``statusCode`` (or a handler error) refuses the connection with that HTTP status.
2. Messages: each one is an invocation, run concurrently (up to ``MAX_IN_FLIGHT`` per
   connection, as API Gateway does not serialise them either). What the handler returns is the
   route response, sent back on the socket (see ``route_response``). A failed invocation sends
   API Gateway's error frame and keeps the socket open.
3. $disconnect: invoked once the client is gone, whether it closed cleanly, dropped, or was
   closed through ``DELETE @connections/{id}``.

Events resolve ``name[:qualifier]`` each time, so a deploy reaches open connections on their
next message, as an alias-bound integration would.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Any

import orjson
from starlette.responses import Response
from starlette.websockets import WebSocket

from coldbrew import errors
from coldbrew.core.outcome import Outcome
from coldbrew.dataplane import InvocationRequest
from coldbrew.gateway.auth import principal_of_scope
from coldbrew.gateway.targets import split_qualifier
from coldbrew.gateway.websocket.connections import Connection, connections_for, new_connection_id
from coldbrew.gateway.websocket.events import (
    STAGE,
    RouteSelector,
    connect_event,
    disconnect_event,
    message_event,
)
from coldbrew.ids import new_request_id
from coldbrew.platform import Platform

log = logging.getLogger("coldbrew.websocket")
MAX_IN_FLIGHT = 16


class Session:
    """The state of one connection's handler: the platform, its target and its selector."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.platform: Platform = websocket.app.state.platform
        self.target = websocket.path_params["name"]
        self.name, self.qualifier = split_qualifier(self.target)
        host = websocket.headers.get("host") or f"{self.platform.settings.host}"
        scheme = "https" if websocket.url.scheme == "wss" else "http"
        self.connection = Connection(
            id=new_connection_id(),
            function=self.target,
            websocket=websocket,
            source_ip=websocket.client.host if websocket.client else "",
            user_agent=websocket.headers.get("user-agent", ""),
            domain_name=host,
            callback_url=f"{scheme}://{host}/{STAGE}",
        )
        self.selector = RouteSelector()
        self._tasks: set[asyncio.Task[None]] = set()

    async def invoke(self, event: dict[str, Any], request_id: str, limited: bool = True) -> Outcome:
        """One invocation through the data plane: every message counts against the caller's
        and the function's limits, as each is a Lambda invocation on API Gateway."""
        return await self.platform.dataplane.invoke(
            InvocationRequest(
                self.name,
                orjson.dumps(event),
                request_id,
                self.qualifier,
                principal_of_scope(self.websocket.scope),
                protocol="websocket",
                event=event,
                check_schema=False,  # API Gateway's envelope (docs/WEBSOCKET.md)
                limited=limited,
            )
        )

    # --- $connect -------------------------------------------------------------------------------
    async def open(self) -> bool:
        """Run $connect; accept the socket or refuse it. True when the session is open."""
        request_id = new_request_id()
        try:
            version = await self.platform.scheduler.resolve(self.name, self.qualifier)
            self.selector = RouteSelector.for_config(version.config)
            event = connect_event(
                self.connection, request_id, self.websocket.headers, self.websocket.query_params
            )
            outcome = await self.invoke(event, request_id)
        except errors.ColdbrewError as exc:
            await self.refuse(exc.status, exc.to_dict())
            return False
        if outcome.error is not None:
            message = {"code": outcome.error.code, "message": "the $connect handler failed"}
            await self.refuse(500, message)
            return False
        result = orjson.loads(outcome.body)
        status = result.get("statusCode") if isinstance(result, dict) else None
        if isinstance(status, int) and not 200 <= status < 300:
            await self.refuse(status, result.get("body"))
            return False
        await self.websocket.accept(subprotocol=_subprotocol(result))
        connections_for(self.websocket.app).add(self.connection)
        return True

    async def refuse(self, status: int, body: Any) -> None:
        if "websocket.http.response" not in self.websocket.scope.get("extensions", {}):
            await self.websocket.close(1008)  # the server cannot send a status: plain 403
            return
        if isinstance(body, dict) and "code" in body:
            body = {"error": body}
        raw = body.encode() if isinstance(body, str) else orjson.dumps(body or {})
        response = Response(raw, status, media_type="application/json")
        await self.websocket.send_denial_response(response)

    # --- messages -------------------------------------------------------------------------------
    async def serve(self) -> tuple[int, str]:
        """Receive until the client goes; (close code, reason)."""
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        while True:
            try:
                message = await self.websocket.receive()
            except RuntimeError:  # closed by DELETE @connections: no more frames to read
                return 1000, "Connection closed by the server"
            if message["type"] == "websocket.disconnect":
                return int(message.get("code") or 1005), str(message.get("reason") or "")
            self.connection.touch()
            await slots.acquire()
            task = asyncio.create_task(self.on_message(message.get("text"), message.get("bytes")))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _: slots.release())

    async def on_message(self, text: str | None, data: bytes | None) -> None:
        request_id = new_request_id()
        size = len(text.encode()) if text is not None else len(data or b"")
        if size > self.platform.settings.max_payload_bytes:
            await self.send_error("Message too long", request_id)
            return
        route_key = self.selector.select(text)
        event = message_event(self.connection, request_id, route_key, text, data)
        try:
            outcome = await self.invoke(event, request_id)
        except errors.ColdbrewError as exc:
            log.info("websocket message %s failed: %s", request_id, exc.message)
            text = "Too Many Requests" if isinstance(exc, errors.Throttled) else None
            await self.send_error(text or "Internal server error", request_id)
            return
        if outcome.error is not None:
            await self.send_error("Internal server error", request_id)
            return
        reply = route_response(orjson.loads(outcome.body))
        if reply is not None:
            await self.connection.send(reply)

    async def send_error(self, message: str, request_id: str) -> None:
        frame = {"message": message, "connectionId": self.connection.id, "requestId": request_id}
        await self.connection.send(orjson.dumps(frame).decode())

    # --- $disconnect ----------------------------------------------------------------------------
    async def close(self, code: int, reason: str) -> None:
        connections_for(self.websocket.app).remove(self.connection.id)
        self.connection.closed = True
        request_id = new_request_id()
        event = disconnect_event(self.connection, request_id, self.websocket.headers, code, reason)
        try:
            await self.invoke(event, request_id, limited=False)  # the client is gone already
        except Exception:  # best effort, as on API Gateway; the platform may be stopping
            log.warning("$disconnect of %s failed", self.connection.id, exc_info=True)


def route_response(result: Any) -> str | bytes | None:
    """What a MESSAGE handler's return value sends back to the client.

    A proxy-shaped value (``statusCode`` or ``body`` keys) sends its ``body`` (base64-decoded
    when ``isBase64Encoded``; nothing when it is absent or empty); ``None`` sends nothing; a
    string is sent as it is; any other value is sent as JSON text."""
    if result is None:
        return None
    if isinstance(result, str):
        return result
    if isinstance(result, dict) and ("statusCode" in result or "body" in result):
        body = result.get("body")
        if body is None or body == "":
            return None
        if not isinstance(body, str):
            return orjson.dumps(body).decode()
        if result.get("isBase64Encoded"):
            try:
                return base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                return body
        return body
    return orjson.dumps(result).decode()


def _subprotocol(result: Any) -> str | None:
    """A $connect response may pick the subprotocol, as on API Gateway."""
    headers = result.get("headers") if isinstance(result, dict) else None
    if not isinstance(headers, dict):
        return None
    for key, value in headers.items():
        if str(key).lower() == "sec-websocket-protocol" and isinstance(value, str):
            return value
    return None


async def endpoint(websocket: WebSocket) -> None:
    session = Session(websocket)
    if not await session.open():
        return
    code, reason = 1006, "Going away"
    try:
        code, reason = await session.serve()
    finally:
        await session.close(code, reason)
