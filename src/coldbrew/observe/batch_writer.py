"""Rows written to the database off the hot path, in batches (the meter, the prediction log).

Observers only append to an in-memory list; a background task flushes it every ``interval_s``
on a worker thread. If the database is down the batch is kept (up to ``max_pending`` rows, then
the oldest are dropped and counted) and retried, so an invocation never waits for, or fails
because of, a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("coldbrew.observe")


class BatchWriter:
    what = "rows"
    """Named in the warning when a write fails."""

    def __init__(self, interval_s: float, max_pending: int) -> None:
        self.interval_s = interval_s
        self.max_pending = max_pending
        self.pending: list[Any] = []
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None

    def _append(self, item: Any) -> None:
        self.pending.append(item)
        overflow = len(self.pending) - self.max_pending
        if overflow > 0:
            del self.pending[:overflow]
            self.dropped += overflow

    def _write(self, batch: list[Any]) -> None:
        """Write one batch (on a worker thread); raise to have it kept and retried."""
        raise NotImplementedError

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
            await asyncio.to_thread(self._write, batch)
        except Exception as exc:
            log.warning("write of %d %s failed, will retry: %s", len(batch), self.what, exc)
            self.pending[:0] = batch
