"""Writes usage records to the meter off the hot path.

The observer only appends to an in-memory list; a background task flushes it every
``interval_s`` in one multi-row insert on a worker thread. If the database is down the batch is
kept (up to ``max_pending`` records, then the oldest are dropped and counted) and retried, so
the invocation path never waits for, or fails because of, the meter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from coldbrew.observe.usage import Usage
from coldbrew.registry.meter import MeterStore

log = logging.getLogger("coldbrew.meter")


def row_of(usage: Usage) -> dict[str, Any]:
    return {
        "request_id": usage.request_id,
        "function_name": usage.function,
        "version": usage.version,
        "qualifier": usage.qualifier,
        "caller": usage.caller,
        "started_at": datetime.fromtimestamp(usage.started_at, UTC),
        "duration_ms": usage.duration_ms,
        "billed_ms": usage.billed_ms,
        "memory_mb": usage.memory_mb,
        "gb_seconds": usage.gb_seconds,
        "cost_usd": usage.cost_usd,
        "cold_start": usage.cold_start,
        "init_ms": usage.init_ms,
        "status": usage.status,
    }


class MeterWriter:
    def __init__(
        self, store: MeterStore, interval_s: float = 0.5, max_pending: int = 100_000
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.max_pending = max_pending
        self.pending: list[dict[str, Any]] = []
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def add(self, usage: Usage) -> None:
        self.pending.append(row_of(usage))
        overflow = len(self.pending) - self.max_pending
        if overflow > 0:
            del self.pending[:overflow]
            self.dropped += overflow

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            await asyncio.to_thread(self.store.insert, batch)
        except Exception as exc:
            log.warning("meter write of %d records failed, will retry: %s", len(batch), exc)
            self.pending[:0] = batch
