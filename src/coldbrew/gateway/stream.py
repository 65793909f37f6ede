"""``ws://host/stream/{name}``: stream sessions, one WebSocket held by one instance for its life.

The function declares ``stream_handler = "module:fn"``: a generator over the session's frames
that yields what to send back. The session holds one instance slot until the handler returns,
the client leaves, or ``stream_max_duration_s`` passes; it always ends with a JSON text frame
``{"type": "end", "reason": ...}`` and a normal close, so clients can tell why it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from coldbrew import errors
from coldbrew.gateway.invoke import split_qualifier
from coldbrew.ids import new_request_id
from coldbrew.platform import Platform
from coldbrew.runtime import messages as m
from coldbrew.runtime.context import function_arn
from coldbrew.scaling.instance import Instance
from coldbrew.scaling.pool import VersionInfo
from coldbrew.scaling.scheduler import Outcome

GRACE_S = 5.0
"""How long a handler may take to finish after its frames end before its instance is killed."""


async def stream_endpoint(websocket: WebSocket) -> None:
    platform: Platform = websocket.app.state.platform
    request_id = new_request_id()
    await websocket.accept()
    try:
        name, qualifier = split_qualifier(websocket.path_params["name"])
        version = await platform.scheduler.resolve(name, qualifier)
        if version.config.stream_handler is None:
            raise errors.ValidationError(
                f"function '{name}' has no stream_handler; declare one in coldbrew.toml"
            )
        reason, error = await StreamSession(platform, version, websocket, request_id).run()
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
    def __init__(
        self, platform: Platform, version: VersionInfo, websocket: WebSocket, request_id: str
    ) -> None:
        self.platform = platform
        self.version = version
        self.websocket = websocket
        self.request_id = request_id
        self.limit = platform.settings.max_payload_bytes

    async def run(self) -> tuple[str, dict[str, Any] | None]:
        scheduler = self.platform.scheduler
        pool = scheduler.pool_for(self.version)
        instance, cold = await pool.acquire()
        started = time.perf_counter()
        max_s = self.version.config.stream_max_duration_s
        try:
            stream_id, outputs = instance.open_stream(
                {
                    "request_id": self.request_id,
                    "deadline_ms": int(time.time() * 1000 + max_s * 1000),
                    "invoked_function_arn": function_arn(self.version.function_name),
                }
            )
            reason, error = await self._pump(instance, stream_id, outputs, max_s)
        finally:
            pool.release(instance)
            scheduler.record(self._outcome(cold, (time.perf_counter() - started) * 1000, instance))
        return reason, error

    async def _pump(
        self, instance: Instance, stream_id: int, outputs: asyncio.Queue[Any], max_s: float
    ) -> tuple[str, dict[str, Any] | None]:
        inbound = asyncio.create_task(self._pump_in(instance, stream_id))
        outbound = asyncio.create_task(self._pump_out(outputs))
        done, _ = await asyncio.wait(
            {inbound, outbound}, timeout=max_s, return_when=asyncio.FIRST_COMPLETED
        )
        if outbound in done:
            inbound.cancel()
            return outbound.result()
        reason = "client_closed" if inbound in done else "max_duration"
        inbound.cancel()
        instance.stream_close(stream_id)  # the handler's frame iterator ends
        try:
            _, error = await asyncio.wait_for(outbound, GRACE_S)
        except TimeoutError:
            instance.kill(errors.InvocationTimeout("the stream handler did not stop"))
            error = None
        return reason, error

    async def _pump_in(self, instance: Instance, stream_id: int) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text, data = message.get("text"), message.get("bytes")
            payload = text.encode() if text is not None else (data or b"")
            if len(payload) > self.limit:
                continue  # dropped, as API Gateway drops frames over its limit
            instance.stream_send(stream_id, payload, text is not None)

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

    def _outcome(self, cold: bool, duration_ms: float, instance: Instance) -> Outcome:
        return Outcome(
            request_id=self.request_id,
            function_name=self.version.function_name,
            version=self.version.number,
            cold_start=cold,
            body=b"",
            error=None,
            duration_ms=duration_ms,
            init_ms=instance.init_ms if cold else None,
            memory_mb=self.version.config.memory_mb,
            wall_ms=duration_ms,
        )
