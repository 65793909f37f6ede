"""``ws://host/stream/{name}``: stream sessions, one WebSocket held by one instance for its life.

The function declares ``stream_handler = "module:fn"``: a generator over the session's frames
that yields what to send back. The session holds one instance slot until the handler returns,
the client leaves, or ``stream_max_duration_s`` passes; it always ends with a JSON text frame
``{"type": "end", "reason": ...}`` and a normal close, so clients can tell why it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from coldbrew import errors
from coldbrew.dataplane import InvocationRequest
from coldbrew.gateway.auth import principal_of_scope
from coldbrew.gateway.targets import split_qualifier
from coldbrew.ids import new_request_id
from coldbrew.platform import Platform
from coldbrew.runtime import messages as m
from coldbrew.scaling.pool import VersionInfo
from coldbrew.scaling.streams import StreamLease
from coldbrew.settings import Settings

GRACE_S = 5.0
"""How long a handler may take to finish after its frames end before its instance is killed."""


async def stream_endpoint(websocket: WebSocket) -> None:
    platform: Platform = websocket.app.state.platform
    request_id = new_request_id()
    await websocket.accept()
    try:
        name, qualifier = split_qualifier(websocket.path_params["name"])
        request = InvocationRequest(
            name,
            b"",
            request_id,
            qualifier,
            principal_of_scope(websocket.scope),
            protocol="stream",
            kind="stream",
            check_schema=False,  # frames are the handler's own format, not events
        )
        lease, admitted = await platform.dataplane.open_stream(request)
        session = StreamSession(lease, admitted.version, websocket, platform.settings)
        reason, error = await session.run()
    except errors.ColdbrewError as exc:
        reason, error = "error", {"code": exc.code, "message": exc.message}
    await _finish(websocket, request_id, reason, error)


async def _finish(
    websocket: WebSocket, request_id: str, reason: str, error: dict[str, Any] | None
) -> None:
    if websocket.client_state is not WebSocketState.CONNECTED:
        return
    end: dict[str, Any] = {"type": "end", "reason": reason, "requestId": request_id}
    if error:
        end["error"] = error
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.send_json(end)
        await websocket.close(code=1000 if error is None else 1011, reason=reason)


class StreamSession:
    """Pumps one WebSocket's frames to a leased instance and the instance's frames back."""

    def __init__(
        self, lease: StreamLease, version: VersionInfo, websocket: WebSocket, settings: Settings
    ) -> None:
        self.lease = lease
        self.version = version
        self.websocket = websocket
        self.limit = settings.max_payload_bytes

    async def run(self) -> tuple[str, dict[str, Any] | None]:
        max_s = self.version.config.stream_max_duration_s
        reason, error = "error", None
        try:
            reason, error = await self._pump(max_s)
        finally:
            if error is not None:  # an errored session is metered as an error
                self.lease.error_code = str(error.get("code") or "FUNCTION_ERROR")
            self.lease.close()
        return reason, error

    async def _pump(self, max_s: float) -> tuple[str, dict[str, Any] | None]:
        inbound = asyncio.create_task(self._pump_in())
        outbound = asyncio.create_task(self._pump_out(self.lease.outputs))
        done, _ = await asyncio.wait(
            {inbound, outbound}, timeout=max_s, return_when=asyncio.FIRST_COMPLETED
        )
        if outbound in done:
            inbound.cancel()
            return outbound.result()
        reason = "client_closed" if inbound in done else "max_duration"
        inbound.cancel()
        self.lease.end_input()  # the handler's frame iterator ends
        try:
            _, error = await asyncio.wait_for(outbound, GRACE_S)
        except TimeoutError:
            self.lease.kill(errors.InvocationTimeout("the stream handler did not stop"))
            error = None
        return reason, error

    async def _pump_in(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text, data = message.get("text"), message.get("bytes")
            payload = text.encode() if text is not None else (data or b"")
            if len(payload) > self.limit:
                continue  # dropped, as API Gateway drops frames over its limit
            self.lease.send(payload, text is not None)

    async def _pump_out(self, outputs: asyncio.Queue[Any]) -> tuple[str, dict[str, Any] | None]:
        while True:
            item = await outputs.get()
            if isinstance(item, m.StreamFrame):
                with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                    if item.text:
                        await self.websocket.send_text(item.data.decode())
                    else:
                        await self.websocket.send_bytes(item.data)
                continue
            if isinstance(item, m.StreamFeatures):  # a frame's lookups, counted now
                self.lease.count_features(item.features)
                continue
            if isinstance(item, m.StreamEnded):
                if item.error is None:
                    return "handler_finished", None
                return "error", {
                    "code": item.error.code,
                    "errorType": item.error.type,
                    "message": item.error.message,
                }
            assert isinstance(item, errors.ColdbrewError)
            return "error", {"code": item.code, "message": item.message}
