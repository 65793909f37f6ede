"""Event sources: ``[[event_source]]`` tables turn messages and new objects into invocations.

One manager for every kind. Each function's tables are read from its latest version every few
seconds (``COLDBREW_EVENT_SOURCE_SYNC_S``, as ``[[schedule]]`` tables are): a deploy adds,
changes or removes sources, deleting the function removes them. Each table gets a runner:

- ``mqtt`` (``mqtt.py``): each message on a topic is an async invocation;
- ``s3`` (``s3.py``) and ``folder`` (``folder.py``): each new object is an async invocation
  with Lambda's S3 event shape, polled, with a seen-set in the registry (``objects.py``);
- ``redis`` (``redis_streams.py``): batches of a stream's entries invoke the function as
  Lambda's SQS event source mappings do.

A runner has ``start()``, ``stop()``, ``lag()`` and a ``state`` (``state.py``), which
``GET /v1/functions/{name}/sources`` and ``coldbrew source ls NAME`` show.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from typing import Any, Protocol

from coldbrew import errors
from coldbrew.jobs.sources.folder import FolderSource
from coldbrew.jobs.sources.mqtt import MqttSource, Subscription
from coldbrew.jobs.sources.objects import SeenStore
from coldbrew.jobs.sources.redis_streams import RedisStreamSource
from coldbrew.jobs.sources.s3 import S3Source
from coldbrew.jobs.sources.state import SourceState

log = logging.getLogger("coldbrew.sources")
SYNC_S = float(os.environ.get("COLDBREW_EVENT_SOURCE_SYNC_S", "5"))
"""How often each function's ``[[event_source]]`` tables are re-read (seconds)."""


class Runner(Protocol):
    state: SourceState

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def lag(self) -> dict[str, int] | None: ...


def source_id(function: str, config: Any) -> str:
    """A stable name of one table of one function: its seen-set's key. Fields that do not
    change what is read (poll interval, qualifier...) are left out, so tuning them keeps it."""
    where = [config.kind, function]
    if config.kind == "s3":
        where += [config.endpoint_url or "", config.bucket, config.prefix, config.suffix]
    elif config.kind == "folder":
        where += [config.path, config.prefix, config.suffix]
    return hashlib.sha256("\0".join(where).encode()).hexdigest()[:32]


class EventSources:
    def __init__(
        self,
        events: Any,
        list_functions: Any,
        resolve: Any,
        *,
        auth_enabled: bool = False,
        batch: Any = None,
    ) -> None:
        self.events = events
        self.batch = batch
        """``BatchJobs``: where ``batch_job = true`` object sources create their jobs."""
        self._list_functions = list_functions
        self._resolve = resolve
        self.auth_enabled = auth_enabled
        self.seen = SeenStore(events.engine)
        self.runners: dict[tuple[str, str], Runner] = {}
        """(function, the table as JSON) -> its runner."""
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_app(cls, platform: Any, events: Any, batch: Any = None) -> EventSources:
        return cls(
            events,
            platform.registry.list_functions,
            platform.dataplane.scheduler.resolve,
            auth_enabled=platform.settings.auth_enabled(),
            batch=batch,
        )

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="coldbrew-event-sources")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for runner in self.runners.values():
            with contextlib.suppress(Exception):
                await runner.stop()
        self.runners.clear()

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception:
                log.exception("event source sync failed; trying again")
            await asyncio.sleep(SYNC_S)

    async def wanted(self) -> dict[tuple[str, str], tuple[str, Any]]:
        out: dict[tuple[str, str], tuple[str, Any]] = {}
        for function in await asyncio.to_thread(self._list_functions):
            try:
                version = await self._resolve(function.name, None)
            except errors.ColdbrewError:
                continue  # deleted meanwhile, or no version yet
            for source in getattr(version.config, "event_sources", []):
                if source.enabled:
                    out[(function.name, source.model_dump_json())] = (function.name, source)
        return out

    async def sync(self) -> None:
        wanted = await self.wanted()
        for key in set(self.runners) - set(wanted):
            runner = self.runners.pop(key)
            await runner.stop()
            log.info("%s source %s: stopped", runner.state.kind, runner.state.function)
        for key in set(wanted) - set(self.runners):
            function, config = wanted[key]
            try:
                runner = self._runner(function, config)
                await runner.start()
            except ImportError as exc:
                log.error(
                    "function %s has a %s event source but %s is not installed",
                    function,
                    config.kind,
                    exc.name,
                )
                continue
            except Exception:  # one source that cannot start must not hold up the others
                log.exception("%s source %s: could not start; trying again", config.kind, function)
                continue
            self.runners[key] = runner
            log.info("%s source %s: started on %s", config.kind, function, runner.state.target)

    def _runner(self, function: str, config: Any) -> Runner:
        if config.kind == "mqtt":
            import paho.mqtt.client  # noqa: F401  (the mqtt extra; said at once if missing)

            sub = Subscription(
                function, config.url, config.topic, config.qos, config.shared, config.qualifier
            )
            return MqttSource(sub, self.events)
        if config.kind == "s3":
            import boto3  # noqa: F401  (the s3 extra)

            s3 = S3Source(function, config, self.events, self.seen, source_id(function, config))
            s3.auth_enabled = self.auth_enabled  # tenants' buckets and endpoints: access.py
            s3.batch = self.batch
            return s3
        if config.kind == "folder":
            runner = FolderSource(
                function, config, self.events, self.seen, source_id(function, config)
            )
            runner.auth_enabled = self.auth_enabled
            runner.batch = self.batch
            return runner
        if config.kind == "redis":
            return RedisStreamSource(function, config, self.events)
        raise errors.ValidationError(f"unknown event source kind {config.kind!r}")

    async def describe(self, function: str) -> list[dict[str, Any]]:
        """Every running source of ``function`` with its state and lag (this gateway's view)."""
        out = []
        for (name, _), runner in sorted(self.runners.items(), key=lambda item: item[0]):
            if name != function:
                continue
            try:
                lag = await asyncio.wait_for(runner.lag(), 2)
            except Exception:
                lag = None
            out.append({**runner.state.as_dict(), "lag": lag})
        return out
