"""Asynchronous (``Event``) invocations: accepted at once, run in the background.

An in-process asyncio queue with a bounded size and a few workers. An invocation whose
*platform* failed (THROTTLED, INSTANCE_CRASHED, TIMEOUT) is retried with exponential backoff,
as Lambda retries async events; a handler error is final (it ran, and is billed, once).
Queued events live in memory only: a gateway that stops drops what it has not started. A
durable queue (registry-backed, dead letters) replaces this behind the same ``submit`` call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from coldbrew import errors
from coldbrew.scaling.pool import VersionInfo
from coldbrew.scaling.scheduler import Scheduler

log = logging.getLogger("coldbrew.events")
RETRYABLE = frozenset({"THROTTLED", "INSTANCE_CRASHED", "TIMEOUT"})


@dataclass(frozen=True)
class Event:
    """One accepted async invocation."""

    version: VersionInfo
    payload: bytes
    request_id: str
    qualifier: str | None = None
    client_context: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None


class EventRunner:
    """Runs queued events on the scheduler with ``workers`` concurrent tasks."""

    def __init__(
        self,
        scheduler: Scheduler,
        max_queue: int = 1000,
        workers: int = 4,
        retries: int = 2,
        backoff_s: float = 1.0,
        drain_s: float = 5.0,
    ) -> None:
        self.scheduler = scheduler
        self.max_queue = max_queue
        self.workers = workers
        self.retries = retries
        self.backoff_s = backoff_s
        self.drain_s = drain_s
        self.counts: Counter[str] = Counter()
        """``accepted``, ``succeeded``, ``function_error``, ``failed``, ``retried``."""
        self._queue: asyncio.Queue[Event] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        # The queue is made here, on the serving loop, not in __init__ (no loop yet).
        self._queue = asyncio.Queue(self.max_queue)
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        """Give queued events ``drain_s`` to finish, then cancel the workers."""
        if self._queue is not None and not self._queue.empty():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), self.drain_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        dropped = self._queue.qsize() if self._queue else 0
        if dropped:
            log.warning("dropped %d queued async invocations at shutdown", dropped)

    def submit(self, event: Event) -> None:
        """Queue an event; THROTTLED when the queue is full (or the runner is not running)."""
        if self._queue is None or not self._tasks:
            raise errors.Throttled("async invocations are not being accepted right now")
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            raise errors.Throttled(
                f"the async invocation queue is full ({self.max_queue} events)", retry_after_s=1
            ) from None
        self.counts["accepted"] += 1

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            event = await self._queue.get()
            try:
                await self._run(event)
            except Exception:
                log.exception("async invocation %s failed unexpectedly", event.request_id)
                self.counts["failed"] += 1
            finally:
                self._queue.task_done()

    async def _run(self, event: Event) -> None:
        for attempt in range(self.retries + 1):
            try:
                outcome = await self.scheduler.invoke(
                    event.version,
                    event.payload,
                    event.request_id,
                    qualifier=event.qualifier,
                    client_context=event.client_context,
                    identity=event.identity,
                )
            except errors.ColdbrewError as exc:
                if exc.code in RETRYABLE and attempt < self.retries:
                    self.counts["retried"] += 1
                    await asyncio.sleep(self.backoff_s * 2**attempt)
                    continue
                log.warning("async invocation %s failed: %s", event.request_id, exc.code)
                self.counts["failed"] += 1
                return
            self.counts["function_error" if outcome.error else "succeeded"] += 1
            return
