"""Which gateway holds a WebSocket connection, so ``@connections`` works from any gateway.

A socket lives in one process. With several gateways (``--workers N``, or many behind a load
balancer) sharing ``COLDBREW_REDIS_URL``, each gateway records the connections it accepts in
Redis (``<namespace>:ws:<connection id>`` -> its gateway id and the connection's function) and
listens on a pub/sub channel of its own. A POST, GET or DELETE for a connection this gateway
does not hold is looked up there: the caller's permission is checked against the recorded
function (a connection outside its scope is Gone, as in one gateway), the request is published
to the owner's channel, and the owner does it and publishes the answer (ok, Gone, or the
description) to the asker's channel. No owner, an owner that no longer listens (PUBLISH reaches
nobody: it was killed) or no answer within ``timeout_s`` is Gone.

Without Redis there is one gateway and nothing to forward: ``LocalOwnership``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from coldbrew.gateway.websocket.connections import Connection, ConnectionTable

log = logging.getLogger("coldbrew.websocket")
RECORD_TTL_S = 86_400
"""How long an ownership record outlives a gateway killed before it could remove it (the
PUBLISH to a dead gateway's channel reaches no one, so a stale record is only untidy)."""


@dataclass(frozen=True)
class Answer:
    """The owner's answer: ``status`` 200/204 done, 410 Gone; ``body`` for GET."""

    status: int
    body: bytes = b""


GONE = Answer(410)


class LocalOwnership:
    """One gateway: a connection not in its table does not exist."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def claim(self, connection: Connection) -> None:
        return None

    def release(self, connection_id: str) -> None:
        return None

    async def function_of(self, connection_id: str) -> str | None:
        return None

    async def forward(self, connection_id: str, op: str, data: bytes = b"") -> Answer:
        return GONE


class RedisOwnership(LocalOwnership):
    def __init__(
        self,
        url: str,
        namespace: str,
        gateway_id: str,
        table: ConnectionTable,
        timeout_s: float = 5.0,
    ) -> None:
        import redis.asyncio as aioredis

        self.redis: Any = aioredis.from_url(url)
        self.namespace = namespace
        self.gateway_id = gateway_id
        self.table = table
        self.timeout_s = timeout_s
        self.inbox = self._channel(gateway_id)
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[Answer]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def _channel(self, gateway_id: str) -> str:
        return f"{self.namespace}:ws-gateway:{gateway_id}"

    def _record(self, connection_id: str) -> str:
        return f"{self.namespace}:ws:{connection_id}"

    # --- life -------------------------------------------------------------------------------
    async def start(self) -> None:
        self._pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.inbox)
        self._listener = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._listener:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self.redis.aclose()

    # --- the connections this gateway holds ------------------------------------------------
    def claim(self, connection: Connection) -> None:
        record = orjson.dumps({"gateway": self.gateway_id, "function": connection.function})
        self._background(self.redis.set(self._record(connection.id), record, ex=RECORD_TTL_S))

    def release(self, connection_id: str) -> None:
        self._background(self._release(connection_id))

    async def _release(self, connection_id: str) -> None:
        # Only our own record: a client that reconnected elsewhere under a new id has its own.
        key = self._record(connection_id)
        raw = await self.redis.get(key)
        if raw is not None and orjson.loads(raw).get("gateway") == self.gateway_id:
            await self.redis.delete(key)

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(self._quietly(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quietly(coro: Any) -> None:
        try:
            await coro
        except Exception:
            log.warning("WebSocket ownership record not updated in Redis", exc_info=True)

    # --- asking the owner -------------------------------------------------------------------
    async def _owner(self, connection_id: str) -> dict[str, str] | None:
        raw = await self.redis.get(self._record(connection_id))
        return None if raw is None else orjson.loads(raw)

    async def function_of(self, connection_id: str) -> str | None:
        owner = await self._owner(connection_id)
        return None if owner is None else owner["function"]

    async def forward(self, connection_id: str, op: str, data: bytes = b"") -> Answer:
        owner = await self._owner(connection_id)
        if owner is None or owner["gateway"] == self.gateway_id:
            return GONE  # nobody holds it, or we did and it is closed now
        request_id = secrets.token_hex(8)
        header = {"kind": "request", "id": request_id, "reply": self.inbox, "op": op}
        header["connection"] = connection_id
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            reached = await self.redis.publish(
                self._channel(owner["gateway"]), _frame(header, data)
            )
            if not reached:
                return GONE  # its gateway is gone (killed before it could forget the record)
            return await asyncio.wait_for(answer, self.timeout_s)
        except TimeoutError:
            return GONE
        finally:
            self._pending.pop(request_id, None)

    # --- answering, and receiving answers -------------------------------------------------------
    async def _listen(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("WebSocket ownership channel failed; resubscribing", exc_info=True)
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    await self._pubsub.subscribe(self.inbox)
                continue
            if message is None or message.get("type") != "message":
                continue
            header, data = _unframe(message["data"])
            if header.get("kind") == "answer":
                waiting = self._pending.get(header.get("id", ""))
                if waiting is not None and not waiting.done():
                    waiting.set_result(Answer(int(header["status"]), data))
            elif header.get("kind") == "request":
                task = asyncio.create_task(self._answer(header, data))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _answer(self, header: dict[str, Any], data: bytes) -> None:
        answer = await self.perform(header.get("connection", ""), header.get("op", ""), data)
        reply = {"kind": "answer", "id": header.get("id"), "status": answer.status}
        with contextlib.suppress(Exception):
            await self.redis.publish(header["reply"], _frame(reply, answer.body))

    async def perform(self, connection_id: str, op: str, data: bytes) -> Answer:
        """Do ``op`` on a connection this gateway holds (the caller was checked by the asker)."""
        connection = self.table.get(connection_id)
        if connection is None:
            return GONE
        if op == "post":
            frame: str | bytes
            try:
                frame = data.decode()
            except UnicodeDecodeError:
                frame = data
            return Answer(200) if await connection.send(frame) else GONE
        if op == "get":
            return Answer(200, orjson.dumps(connection.describe()))
        if op == "delete":
            await connection.close(1000, "Connection closed by the server")
            return Answer(204)
        return GONE


def _frame(header: dict[str, Any], data: bytes) -> bytes:
    return orjson.dumps(header) + b"\n" + data


def _unframe(raw: bytes) -> tuple[dict[str, Any], bytes]:
    head, _, data = raw.partition(b"\n")
    try:
        return orjson.loads(head), data
    except orjson.JSONDecodeError:
        return {}, b""


def ownership_for(app: Any) -> LocalOwnership:
    """The app's ownership (set at start-up when Redis is configured), else the local one."""
    return getattr(app.state, "websocket_ownership", None) or _LOCAL


_LOCAL = LocalOwnership()


def shared(app: Any) -> bool:
    """Whether connections may be held by other gateways (ownership is in Redis)."""
    return getattr(app.state, "websocket_ownership", None) is not None


async def start_ownership(app: Any) -> None:
    """At start-up: share connection ownership through Redis when the platform has it."""
    from coldbrew.gateway.websocket.connections import connections_for

    platform = app.state.platform
    cluster = platform.cluster
    if not platform.settings.redis_url or cluster is None:
        return
    table = connections_for(app)
    ownership = RedisOwnership(
        platform.settings.redis_url, cluster.namespace, cluster.identity.id, table
    )
    await ownership.start()
    table.owner = ownership
    app.state.websocket_ownership = ownership


async def stop_ownership(app: Any) -> None:
    ownership = getattr(app.state, "websocket_ownership", None)
    if ownership is not None:
        await ownership.stop()
