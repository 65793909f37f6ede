"""Async invocations, composed: accept (admit + commit), the worker, schedules, housekeeping.

``accept`` is what every protocol's ``Event`` branch calls: the data plane admits the request
(unknown function: 404 at once; rate limits charged here, once; schema checked), then the
event is committed to the durable queue, and only then does the caller get 202 and the
request id. The worker runs it later on the data plane with ``limited=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from coldbrew import errors
from coldbrew.dataplane import DataPlane, InvocationRequest
from coldbrew.ids import new_request_id
from coldbrew.jobs.configs import ConfigStore
from coldbrew.jobs.delivery import Deliverer
from coldbrew.jobs.metrics import AsyncMetrics
from coldbrew.jobs.queue import EventQueue, NewEvent
from coldbrew.jobs.schedules import Due, ScheduleStore, scheduled_event
from coldbrew.jobs.worker import Worker
from coldbrew.registry.engine import build_engine
from coldbrew.settings import Settings

log = logging.getLogger("coldbrew.async")
IDEMPOTENCY_KEY_MAX = 128
HOUSEKEEPING_S = 5.0
CONFIG_SYNC_POLLS = 5
"""``[[schedule]]`` tables are re-read from each function's latest version every this many
schedule polls (5 s by default)."""


class AsyncInvocations:
    def __init__(
        self,
        settings: Settings,
        dataplane: DataPlane,
        metrics: AsyncMetrics | None = None,
        list_functions: Any = None,
    ) -> None:
        self.settings = settings
        self.dataplane = dataplane
        self.engine = build_engine(settings.registry_url())
        self.queue = EventQueue(self.engine)
        self.configs = ConfigStore(self.engine)
        self.schedules = ScheduleStore(self.engine, self.queue)
        self.metrics = metrics or AsyncMetrics()
        self.deliverer = Deliverer(self.queue, self._submit_internal)
        self.worker = Worker(
            self.queue,
            self.configs,
            dataplane,
            self.deliverer,
            self.metrics,
            concurrency=settings.async_concurrency,
            poll_s=settings.async_poll_s,
            visibility_s=settings.async_visibility_s,
            retry_delay_s=settings.async_retry_delay_s,
        )
        self._list_functions = list_functions
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_platform(cls, platform: Any) -> AsyncInvocations:
        metrics = None
        if platform.observe is not None:
            observed = platform.observe.metrics
            metrics = AsyncMetrics(observed.registry, observed.limit.function)
        return cls(platform.settings, platform.dataplane, metrics, platform.registry.list_functions)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.worker.start()
        self._tasks = [
            asyncio.create_task(self._schedule_loop(), name="coldbrew-schedules"),
            asyncio.create_task(self._housekeeping_loop(), name="coldbrew-async-housekeeping"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.worker.stop()
        await self.deliverer.close()
        self.engine.dispose()

    # -- accepting ---------------------------------------------------------------------------

    async def accept(
        self, request: InvocationRequest, idempotency_key: str | None = None
    ) -> tuple[str, bool]:
        """Admit and commit one event; ``(request_id, created)``. A key the function has seen
        returns the first event's request id with ``created=False``, queueing nothing."""
        key = idempotency_key or _key_from_context(request.client_context)
        if key is not None and not 0 < len(key) <= IDEMPOTENCY_KEY_MAX:
            raise errors.ValidationError(
                f"an idempotency key has 1 to {IDEMPOTENCY_KEY_MAX} characters"
            )
        if key is not None:  # a retried submit is a no-op: not even its limits are charged
            first = await asyncio.to_thread(self.queue.first_for_key, request.function, key)
            if first is not None:
                self.metrics.count(request.function, "duplicate")
                return first, False
        admitted = await self.dataplane.admit(request)
        config = await asyncio.to_thread(self.configs.effective, request.function)
        principal = request.principal
        event = NewEvent(
            request_id=request.request_id,
            function_name=request.function,
            version=admitted.version.number,
            payload=request.payload,
            qualifier=request.qualifier,
            client_context=request.client_context,
            caller_kind=principal.kind if principal.id else None,
            caller_id=principal.id,
            protocol=request.protocol,
            idempotency_key=key,
            max_retry_attempts=config.retries,
            max_event_age_s=config.max_age_s,
        )
        request_id, created = await asyncio.to_thread(self.queue.enqueue, event)
        self.metrics.count(request.function, "accepted" if created else "duplicate")
        if created:
            self.worker.wake.set()
        return request_id, created

    async def _submit_internal(self, function: str, payload: bytes, key: str) -> None:
        """A destination that is a function: an async invocation of it (no caller limits)."""
        request = InvocationRequest(
            function,
            payload,
            new_request_id(),
            protocol="destination",
            kind="async",
            limited=False,
            check_schema=False,
        )
        await self.accept(request, key)

    # -- schedules ---------------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        polls = 0
        while True:
            try:
                if polls % CONFIG_SYNC_POLLS == 0:
                    await self.sync_config_schedules()
                polls += 1
                await self.fire_due()
            except Exception:
                log.exception("schedule check failed; trying again")
            await asyncio.sleep(self.settings.schedule_poll_s)

    async def sync_config_schedules(self) -> None:
        """Keep ``config`` schedules in step with each function's latest version."""
        if self._list_functions is None:
            return
        for function in await asyncio.to_thread(self._list_functions):
            try:
                version = await self.dataplane.scheduler.resolve(function.name, None)
            except errors.ColdbrewError:
                continue
            specs = list(getattr(version.config, "schedules", []))
            await asyncio.to_thread(self.schedules.sync_config, function.name, specs)

    async def fire_due(self) -> int:
        fired = 0
        for due in await asyncio.to_thread(self.schedules.due):
            if await self._fire(due):
                fired += 1
        return fired

    async def _fire(self, due: Due) -> bool:
        payload = (
            due.input.encode()
            if due.input is not None
            else orjson.dumps(scheduled_event(due.name, due.tick))
        )
        request = InvocationRequest(
            due.function,
            payload,
            new_request_id(),
            protocol="schedule",
            kind="async",
            limited=False,
        )
        try:
            admitted = await self.dataplane.admit(request)
        except errors.ColdbrewError as exc:
            log.warning(
                "schedule %s/%s: tick %s skipped: %s %s",
                due.function,
                due.name,
                due.tick.isoformat(),
                exc.code,
                exc.message,
            )
            await asyncio.to_thread(self.schedules.skip, due)
            return False
        config = await asyncio.to_thread(self.configs.effective, due.function)
        event = NewEvent(
            request_id=request.request_id,
            function_name=due.function,
            version=admitted.version.number,
            payload=payload,
            protocol="schedule",
            idempotency_key=f"schedule:{due.name}:{due.tick.isoformat()}",
            max_retry_attempts=config.retries,
            max_event_age_s=config.max_age_s,
        )
        fired = await asyncio.to_thread(self.schedules.fire, due, event)
        if fired:
            self.metrics.count(due.function, "accepted")
            self.worker.wake.set()
            log.info(
                "schedule %s/%s fired tick %s as %s",
                due.function,
                due.name,
                due.tick.isoformat(),
                request.request_id,
                extra={"request_id": request.request_id, "function": due.function},
            )
        return fired

    # -- housekeeping ------------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        pruned_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(Exception):
                self.metrics.sample(await asyncio.to_thread(self.queue.depth))
                if loop.time() - pruned_at > 600:
                    await asyncio.to_thread(self.queue.prune, self.settings.async_retention_s)
                    pruned_at = loop.time()
            await asyncio.sleep(HOUSEKEEPING_S)


def _key_from_context(context: dict[str, Any] | None) -> str | None:
    """Lambda callers pass the key in the client context: ``{"custom": {"idempotency_key":
    "..."}}`` (``ClientContext`` is base64 JSON on boto3's invoke)."""
    if not context:
        return None
    custom = context.get("custom")
    if isinstance(custom, dict):
        value = custom.get("idempotency_key")
        if isinstance(value, str):
            return value
        if value is not None:
            raise errors.ValidationError("custom.idempotency_key must be a string")
    return None
