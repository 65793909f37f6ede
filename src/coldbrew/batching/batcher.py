"""Adaptive batching: concurrent invocations of one version merged into one handler call.

One dispatcher at a time waits for a free instance slot. While every slot is busy, invocations
pile up in the batcher's queue; the moment a slot frees, the dispatcher takes up to
``max_batch_size`` of them as one batch. So in ``auto`` mode a lone request goes out at once (a
batch of one) and batches grow by themselves with the arrival rate, with no timer to tune. In
``fixed`` mode the dispatcher also waits up to ``max_wait_ms`` for a batch to fill.

Each caller keeps its own request id, result, error and meter: a batch's duration is shared
equally between its items.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from coldbrew import errors
from coldbrew.runtime import messages as m
from coldbrew.runtime.config import BatchingConfig, FunctionConfig


class BatchInstance(Protocol):
    """What the batcher needs of an instance (``scaling.instance.Instance``)."""

    init_ms: float | None
    start: dict[str, Any]

    async def invoke_batch(self, items: list[m.BatchItem], timeout_s: float) -> m.BatchResult: ...


class Slots(Protocol):
    """What the batcher needs of the pool it batches for (``scaling.pool.Pool``): instance
    slots to acquire and release, the function's config, and its way of refusing."""

    config: FunctionConfig

    @property
    def function_name(self) -> str: ...

    async def acquire(self) -> tuple[BatchInstance, bool]: ...

    def release(self, instance: Any) -> None: ...

    def throttled(self, why: str) -> errors.Throttled: ...


@dataclass(frozen=True)
class ItemOutcome:
    """What one caller gets back from a batch."""

    result: m.ItemResult
    duration_ms: float
    cold_start: bool
    init_ms: float | None
    batch_size: int
    queue_ms: float = 0.0
    start: dict[str, object] | None = None
    first_in_batch: bool = True


@dataclass
class _Waiting:
    item: m.BatchItem
    future: asyncio.Future[ItemOutcome]
    enqueued: float


class Batcher:
    def __init__(
        self,
        pool: Slots,
        config: BatchingConfig,
        on_batch: Callable[[str, int], None] | None = None,
    ) -> None:
        self.on_batch = on_batch
        """Told (function name, size) of every batch sent, e.g. for a batch-size histogram."""
        self.pool = pool
        self.config = config
        self.queue: deque[_Waiting] = deque()
        self._dispatcher: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    @property
    def max_queue(self) -> int:
        # Each queued batch holds up to max_batch_size callers.
        return max(1, self.pool.config.max_queue) * self.config.max_batch_size

    async def submit(self, item: m.BatchItem) -> ItemOutcome:
        if len(self.queue) >= self.max_queue:
            raise self.pool.throttled("the batch queue is full")
        future: asyncio.Future[ItemOutcome] = asyncio.get_running_loop().create_future()
        self.queue.append(_Waiting(item, future, time.monotonic()))
        self._arrived.set()
        self._kick()
        return await future

    def _kick(self) -> None:
        if self.queue and self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch())

    async def _dispatch(self) -> None:
        try:
            if self.config.mode == "fixed":
                await self._wait_to_fill()
            try:
                instance, cold = await self.pool.acquire()
            except errors.ColdbrewError as exc:
                self._fail_queued(exc)
                return
        finally:
            self._dispatcher = None
        batch = self._take_batch()
        self._kick()  # the rest of the queue gets the next free slot
        if not batch:
            self.pool.release(instance)
            return
        task = asyncio.create_task(self._run(instance, cold, batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _wait_to_fill(self) -> None:
        deadline = self.queue[0].enqueued + self.config.max_wait_ms / 1000 if self.queue else 0
        while len(self.queue) < self.config.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        while self.queue and len(batch) < self.config.max_batch_size:
            waiting = self.queue.popleft()
            if not waiting.future.done():  # the caller may have gone
                batch.append(waiting)
        return batch

    def _fail_queued(self, exc: errors.ColdbrewError) -> None:
        while self.queue:
            waiting = self.queue.popleft()
            if not waiting.future.done():
                waiting.future.set_exception(exc)

    async def _run(self, instance: BatchInstance, cold: bool, batch: list[_Waiting]) -> None:
        dispatched = time.monotonic()
        self.batches += 1
        self.items += len(batch)
        if self.on_batch is not None:
            self.on_batch(self.pool.function_name, len(batch))
        try:
            result = await instance.invoke_batch(
                [w.item for w in batch], self.pool.config.timeout_s
            )
        except errors.ColdbrewError as exc:
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            return
        finally:
            self.pool.release(instance)
        share = result.duration_ms / len(batch)
        init_ms = instance.init_ms if cold else None
        start = instance.start if cold else None
        for waiting, item_result in zip(batch, result.results, strict=True):
            if not waiting.future.done():
                queue_ms = (dispatched - waiting.enqueued) * 1000
                waiting.future.set_result(
                    ItemOutcome(
                        item_result,
                        share,
                        cold,
                        init_ms,
                        len(batch),
                        queue_ms,
                        start,
                        first_in_batch=waiting is batch[0],
                    )
                )
