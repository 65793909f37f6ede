"""``kind = "redis"``: a Redis stream read through a consumer group, in batches, as Lambda's
event source mappings read an SQS queue.

Why Redis Streams (and not RabbitMQ or NATS JetStream): coldbrew already depends on Redis (the
cluster, rate limits, caches), and a stream with a consumer group has exactly the semantics a
Lambda queue mapping needs: entries are handed to one consumer of the group (several gateways
split the work), stay *pending* until acknowledged (``XACK``), and a pending entry whose
consumer went quiet is taken over by another (``XAUTOCLAIM``), with a per-entry delivery count.

The loop, per source and gateway:

1. Take over entries pending longer than ``visibility_timeout_s`` (a failed batch, or a gateway
   that died mid-batch), then read new ones (``XREADGROUP``), waiting up to
   ``batching_window_s`` for ``batch_size`` of them.
2. Invoke the function once with ``{"Records": [...]}`` (SQS's record shape), synchronously on
   the data plane, as Lambda's mappings do: the stream itself is the durable queue, so the batch
   is not copied into coldbrew's async queue (that would double every write and hide which
   entries of a batch failed). The invocation is metered and logged like any other.
3. Success: ``XACK`` every entry, except those the function names in a partial batch response
   ``{"batchItemFailures": [{"itemIdentifier": "<messageId>"}]}``. An error fails them all.
4. A failed entry stays pending and is delivered again after ``visibility_timeout_s``. Once it
   has failed ``max_retry_attempts + 1`` deliveries (or with an error no retry can fix), it goes
   to the function's dead letters (``coldbrew dlq ls``, as a one-record event that ``coldbrew
   dlq redrive`` runs as an async invocation) and its on-failure destination, and is acked.

At least once: an entry is acked only after the function succeeded with it (or it was
dead-lettered); a gateway that dies mid-batch leaves it pending, and it is taken over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from coldbrew import errors
from coldbrew.dataplane import InvocationRequest
from coldbrew.ids import new_request_id
from coldbrew.jobs import policy
from coldbrew.jobs.destinations import record as destination_record
from coldbrew.jobs.sources.state import SourceState
from coldbrew.registry.asyncq import DeadLetterRow

log = logging.getLogger("coldbrew.sources")
IDLE_BLOCK_MS = 1000
"""An idle source waits this long for new entries, then looks for entries to take over."""


@dataclass(frozen=True)
class Entry:
    id: str
    fields: dict[str, str]
    deliveries: int
    """Including this one (Redis's delivery counter)."""

    def sent_ms(self) -> int:
        return int(self.id.split("-", 1)[0])


class RedisStreamSource:
    def __init__(self, function: str, config: Any, events: Any) -> None:
        self.function = function
        self.config = config
        self.events = events
        self.group = config.group or f"coldbrew-{function}"
        self.consumer = f"{socket.gethostname()[:40]}-{os.getpid()}"
        self.state = SourceState(function, "redis", f"{_safe_url(config.url)} {config.stream}")
        self._redis: Any = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(self.config.url, decode_responses=True)
        self._task = asyncio.create_task(self._loop(), name="coldbrew-source-redis")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()

    async def lag(self) -> dict[str, int] | None:
        """``lag``: entries not yet read by the group; ``pending``: read, not acknowledged."""
        try:
            groups = await self._redis.xinfo_groups(self.config.stream)
        except Exception:
            return None
        for group in groups:
            if group.get("name") == self.group:
                return {"lag": int(group.get("lag") or 0), "pending": int(group["pending"])}
        return None

    async def _loop(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self._ensure_group()
                while True:
                    batch = await self.next_batch()
                    if batch:
                        await self.process(batch)
                    backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down, stream deleted: said, and tried again
                self.state.error(f"{type(exc).__name__}: {exc}")
                log.warning("redis source %s: %s; retrying", self.function, exc)
                await asyncio.sleep(backoff)
                backoff = min(30.0, backoff * 2)

    async def _ensure_group(self) -> None:
        start = "0" if self.config.starting_position == "TRIM_HORIZON" else "$"
        try:
            await self._redis.xgroup_create(self.config.stream, self.group, id=start, mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):  # it exists: the usual case
                raise

    # -- reading -----------------------------------------------------------------------------

    async def next_batch(self) -> list[Entry]:
        size = self.config.batch_size
        batch = await self._take_over(size)
        window = self.config.batching_window_s
        deadline = None
        while len(batch) < size:
            if not batch:
                block: int | None = IDLE_BLOCK_MS
            else:
                deadline = deadline or time.monotonic() + window
                left = deadline - time.monotonic()
                block = int(left * 1000) if left > 0.001 else None
            read = await self._redis.xreadgroup(
                self.group,
                self.consumer,
                {self.config.stream: ">"},
                count=size - len(batch),
                block=block,
            )
            entries = [Entry(i, f or {}, 1) for _, items in read or [] for i, f in items]
            batch.extend(entries)
            if not entries and (not batch or block is None or time.monotonic() >= deadline):
                break  # idle (look for take-overs again) or the window is over
        if batch:
            self.state.event(sum(1 for e in batch if e.deliveries == 1))
        return batch

    async def _take_over(self, count: int) -> list[Entry]:
        """Entries pending longer than the visibility timeout, with their delivery counts."""
        idle_ms = int(self.config.visibility_timeout_s * 1000)
        reply = await self._redis.xautoclaim(
            self.config.stream, self.group, self.consumer, idle_ms, "0-0", count=count
        )
        claimed, deleted = reply[1], (reply[2] if len(reply) > 2 else [])
        if deleted:  # trimmed away while pending: nothing left to deliver
            await self._redis.xack(self.config.stream, self.group, *deleted)
        claimed = [(i, f) for i, f in claimed if f is not None]
        if not claimed:
            return []
        pending = await self._redis.xpending_range(
            self.config.stream,
            self.group,
            min=claimed[0][0],
            max=claimed[-1][0],
            count=len(claimed) * 2 + 10,
            consumername=self.consumer,
        )
        counts = {p["message_id"]: int(p["times_delivered"]) for p in pending}
        return [Entry(i, f, counts.get(i, 2)) for i, f in claimed]

    # -- one batch ---------------------------------------------------------------------------

    def record(self, entry: Entry) -> dict[str, Any]:
        """SQS's record shape: ``body`` is the entry's ``body`` field (else its fields as
        JSON); any other fields are ``messageAttributes``."""
        fields = entry.fields
        body = fields["body"] if "body" in fields else orjson.dumps(fields).decode()
        attributes = {
            k: {"stringValue": v, "dataType": "String"} for k, v in fields.items() if k != "body"
        }
        return {
            "messageId": entry.id,
            "receiptHandle": entry.id,
            "body": body,
            "attributes": {
                "ApproximateReceiveCount": str(entry.deliveries),
                "SentTimestamp": str(entry.sent_ms()),
                "ApproximateFirstReceiveTimestamp": str(int(time.time() * 1000)),
            },
            "messageAttributes": attributes,
            "eventSource": "coldbrew:redis",
            "eventSourceARN": f"{_safe_url(self.config.url)}#{self.config.stream}",
        }

    async def process(self, batch: list[Entry]) -> None:
        payload = orjson.dumps({"Records": [self.record(e) for e in batch]})
        request = InvocationRequest(
            self.function,
            payload,
            new_request_id(),
            qualifier=self.config.qualifier,
            protocol="redis",
            kind="async",
            limited=False,
        )
        heartbeat = asyncio.create_task(self._keep_pending([e.id for e in batch]))
        try:
            failed, error = await self._invoke(request, batch)
        finally:
            heartbeat.cancel()
        ok = [e.id for e in batch if e.id not in failed]
        if ok:
            await self._redis.xack(self.config.stream, self.group, *ok)
            self.state.delivered += len(ok)
        if not failed:
            return
        assert error is not None
        self.state.error(f"{error['code']}: {error['message']}")
        # No retry fixes a batch the function refuses; an alias missing for a moment might be
        # back at the next delivery, so NOT_FOUND is retried (each delivery still counts).
        fatal = policy.failure_kind(error["code"]) == "fatal" and error["code"] != "NOT_FOUND"
        for entry in batch:
            if entry.id not in failed:
                continue
            if fatal or entry.deliveries > self.config.max_retry_attempts:
                await self._dead_letter(
                    entry, error, "NotRunnable" if fatal else "RetriesExhausted"
                )
            else:
                self.state.retried += 1
                self.events.metrics.count(self.function, "retried")
        log.info(
            "redis source %s: batch %s: %d acked, %d failed (%s)",
            self.function,
            request.request_id,
            len(ok),
            len(failed),
            error["code"],
            extra={"request_id": request.request_id, "function": self.function},
        )

    async def _invoke(
        self, request: InvocationRequest, batch: list[Entry]
    ) -> tuple[set[str], dict[str, Any] | None]:
        """The ids that failed, and why."""
        every = {e.id for e in batch}
        try:
            admitted = await self.events.dataplane.admit(request)
            outcome = await self.events.dataplane.run(request, admitted)
        except errors.ColdbrewError as exc:
            return every, {"code": exc.code, "message": exc.message}
        if outcome.error is not None:
            return every, {
                "code": outcome.error.code,
                "type": outcome.error.type,
                "message": outcome.error.message,
            }
        failures = _batch_item_failures(outcome.body, every)
        if failures is None:
            return every, {
                "code": "FUNCTION_ERROR",
                "message": "batchItemFailures names an itemIdentifier not in the batch",
            }
        return failures, {"code": "FUNCTION_ERROR", "message": "reported in batchItemFailures"}

    async def _keep_pending(self, ids: list[str]) -> None:
        """While the function runs, reset the entries' idle time (``XCLAIM ... JUSTID`` does
        not count a delivery), so that no other gateway takes over a batch still running."""
        interval = self.config.visibility_timeout_s / 3
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self._redis.xclaim(
                    self.config.stream, self.group, self.consumer, 0, ids, justid=True
                )

    async def _dead_letter(self, entry: Entry, error: dict[str, Any], reason: str) -> None:
        """Into the function's dead letters and on-failure destination; then acked."""
        request_id = new_request_id()
        payload = orjson.dumps({"Records": [self.record(entry)]})
        sent = datetime.fromtimestamp(entry.sent_ms() / 1000, UTC)
        queue = self.events.queue

        def store() -> None:
            with queue.write() as session:
                session.add(
                    DeadLetterRow(
                        request_id=request_id,
                        function_name=self.function,
                        reason=reason,
                        error={**error, "source": self.state.target, "messageId": entry.id},
                        attempts=entry.deliveries,
                        payload=payload,
                        created_at=sent,
                    )
                )

        await asyncio.to_thread(store)
        config = await asyncio.to_thread(self.events.configs.effective, self.function)
        destination = config.on_failure or await self._toml_on_failure()
        if destination:
            body = destination_record(
                request_id=request_id,
                function=self.function,
                qualifier=self.config.qualifier,
                condition=reason,
                attempts=entry.deliveries,
                payload=payload,
                function_error=error if reason == "RetriesExhausted" else None,
            )
            if not await self.events.deliverer.deliver(destination, self.function, body):
                self.events.metrics.count(self.function, "destination_failed")
        await self._redis.xack(self.config.stream, self.group, entry.id)
        self.state.dead_lettered += 1
        self.events.metrics.count(self.function, "dead_lettered")
        log.warning(
            "redis source %s: entry %s dead-lettered as %s after %d deliveries: %s",
            self.function,
            entry.id,
            request_id,
            entry.deliveries,
            error["code"],
            extra={"request_id": request_id, "function": self.function},
        )

    async def _toml_on_failure(self) -> str | None:
        request = InvocationRequest(
            self.function, b"", new_request_id(), self.config.qualifier, limited=False
        )
        try:
            admitted = await self.events.dataplane.admit(request)
        except errors.ColdbrewError:
            return None
        destinations = getattr(admitted.version.config, "destinations", None)
        return getattr(destinations, "on_failure", None)


def _batch_item_failures(body: bytes, ids: set[str]) -> set[str] | None:
    """The ids of a partial batch response; an empty set when the answer is not one; None
    when it names an id of no entry (Lambda then fails the whole batch)."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return set()
    if not isinstance(answer, dict) or not isinstance(answer.get("batchItemFailures"), list):
        return set()
    out: set[str] = set()
    for item in answer["batchItemFailures"]:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(ident, str) or ident not in ids:
            return None
        out.add(ident)
    return out


def _safe_url(url: str) -> str:
    """The URL without its password (it is shown in ``coldbrew source ls`` and events)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
