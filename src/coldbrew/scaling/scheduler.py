"""Places invocations: resolve a function's alias to a version, find its pool, run, meter.

The scheduler owns one pool per version that has live instances or queued work, and a reaper
loop that scales idle pools down (to zero) and keeps provisioned ones warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from coldbrew import errors
from coldbrew.backends.base import Backend
from coldbrew.batching.batcher import Batcher
from coldbrew.core.outcome import ColdStart, Kind, Outcome
from coldbrew.ids import new_request_ids
from coldbrew.runtime import messages as m
from coldbrew.runtime.config import FunctionConfig
from coldbrew.runtime.context import function_arn
from coldbrew.scaling.instance import Instance
from coldbrew.scaling.leases import LOCAL, SlotLeases
from coldbrew.scaling.pool import Pool, TemplatePolicy, VersionInfo
from coldbrew.scaling.provisioned import provisioned_instances
from coldbrew.scaling.streams import StreamLease, stream_fields

log = logging.getLogger("coldbrew.scheduler")
RESOLVE_TTL_S = 1.0
WARMUP_EVENT = b'{"source": "coldbrew.warmup"}'
"""What a warm-up ping delivers, like the serverless-plugin-warmup event Lambda users know."""


class VersionRecordLike(Protocol):
    function_name: str
    number: int
    content_sha256: str
    config: dict[str, Any]
    manifest: dict[str, str]


class VersionSource(Protocol):
    """Where versions come from (the registry). A source that also has ``resolve_split``
    (returning ``main``, ``weighted`` pairs, ``sticky``, ``alias``) serves weighted aliases."""

    def resolve(self, name: str, qualifier: str | None = None) -> VersionRecordLike: ...


@dataclass(frozen=True, slots=True)
class TrafficSplit:
    """What ``name[:qualifier]`` resolves to: one version, or a weighted split of versions from
    which the data plane draws each invocation's (``coldbrew.dataplane.split``)."""

    main: VersionInfo
    weighted: tuple[tuple[float, VersionInfo], ...] = ()
    """(fraction, version) of the alias's other versions; ``main`` gets the remainder."""
    sticky: str | None = None
    """JSON path of the event field whose value keeps a caller on one version."""
    salt: str = ""
    """``function:alias``: two aliases of one function split independently."""


class BundleSource(Protocol):
    """Turns a version's manifest into a folder on local disk (the artifact store)."""

    def materialize(self, manifest: dict[str, str], dest: Path) -> Path: ...


class Scheduler:
    def __init__(
        self,
        versions: VersionSource,
        bundles: BundleSource,
        backend: Backend,
        bundles_dir: Path,
        reap_interval_s: float = 0.5,
        template_policy: TemplatePolicy | None = None,
    ) -> None:
        self.template_policy = template_policy or TemplatePolicy()
        self.versions = versions
        self.bundles = bundles
        self.backend = backend
        self.bundles_dir = bundles_dir
        self.reap_interval_s = reap_interval_s
        self.pools: dict[str, Pool] = {}
        self.leases: SlotLeases = LOCAL
        """Instance slots shared with other gateways (scaling/leases.py); set by the platform."""
        self._resolved: dict[tuple[str, str | None], tuple[float, TrafficSplit]] = {}
        self._materializing: dict[str, asyncio.Future[VersionInfo]] = {}
        self._lookups: dict[tuple[str, str | None], asyncio.Future[TrafficSplit]] = {}
        self._generations: dict[str, int] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.observers: list[Callable[[Outcome], None]] = []
        self.batch_observers: list[Callable[[str, int], None]] = []
        self.feature_observers: list[Callable[[str, list[m.FeatureStat]], None]] = []
        """Called with (function, lookups) for each frame's feature lookups of a stream session
        (an invocation's come in its outcome). Quick, on the event loop, as the others."""
        self._pings: set[asyncio.Task[None]] = set()
        """Called with (function, size) for every batch sent to an instance."""
        """Called with every invocation's outcome, failures included (metering, metrics, logs).
        They run on the event loop: they must be quick and must not raise."""

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever())

    async def stop(self) -> None:
        if self._reaper:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*(p.close() for p in self.pools.values()), return_exceptions=True)
        self.pools.clear()

    # --- resolving ------------------------------------------------------------------------------
    async def resolve(self, name: str, qualifier: str | None) -> VersionInfo:
        """The (main) version ``name[:qualifier]`` points at; see :meth:`resolve_split`."""
        return (await self.resolve_split(name, qualifier)).main

    def fresh_split(self, name: str, qualifier: str | None) -> TrafficSplit | None:
        """``resolve_split``'s answer when the cache holds a fresh one, else None: the hot
        path's lookup without a coroutine."""
        cached = self._resolved.get((name, qualifier))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return None

    async def resolve_split(self, name: str, qualifier: str | None) -> TrafficSplit:
        """The version(s) ``name[:qualifier]`` points at, from a cache refreshed every second.

        On the hot path this is a dict lookup: an expired entry is still served while one
        background refresh runs (so other gateways' deploys show within ~1 s), and concurrent
        misses share one registry query instead of each making their own."""
        fresh = self.fresh_split(name, qualifier)
        if fresh is not None:
            return fresh
        key = (name, qualifier)
        cached = self._resolved.get(key)
        if cached is not None:
            self._lookup(key)  # expired: refresh in the background, serve the known answer now
            return cached[1]
        return await asyncio.shield(self._lookup(key))

    def _lookup(self, key: tuple[str, str | None]) -> asyncio.Future[TrafficSplit]:
        pending = self._lookups.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(key))
            self._lookups[key] = pending
            pending.add_done_callback(
                lambda done: (
                    self._lookups.pop(key, None) if self._lookups.get(key) is done else None
                )
            )
            # A background refresh may fail (function deleted): the next call sees it.
            pending.add_done_callback(lambda f: f.cancelled() or f.exception())
        return pending

    async def _fetch(self, key: tuple[str, str | None]) -> TrafficSplit:
        generation = self._generations.get(key[0], 0)
        resolve_split = getattr(self.versions, "resolve_split", None)
        try:
            if resolve_split is None:
                found: Any = await asyncio.to_thread(self.versions.resolve, *key)
            else:
                found = await asyncio.to_thread(resolve_split, *key)
        except errors.NotFound:
            self._resolved.pop(key, None)
            raise
        if resolve_split is None:
            info = TrafficSplit(await self._version_info(found))
        else:
            weighted = tuple(
                [(fraction, await self._version_info(r)) for fraction, r in found.weighted]
            )
            info = TrafficSplit(
                await self._version_info(found.main),
                weighted,
                found.sticky,
                f"{key[0]}:{found.alias}",
            )
        if self._generations.get(key[0], 0) == generation:  # not overtaken by a deploy
            self._resolved[key] = (time.monotonic() + RESOLVE_TTL_S, info)
        return info

    async def _version_info(self, record: VersionRecordLike) -> VersionInfo:
        key = f"{record.function_name}:{record.number}:{record.content_sha256}"
        pending = self._materializing.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._materialize(record))
            self._materializing[key] = pending
            pending.add_done_callback(
                lambda f: self._materializing.pop(key, None) if f.exception() else None
            )
        return await asyncio.shield(pending)

    async def _materialize(self, record: VersionRecordLike) -> VersionInfo:
        dest = self.bundles_dir / record.content_sha256
        await asyncio.to_thread(self.bundles.materialize, record.manifest, dest)
        return VersionInfo(
            function_name=record.function_name,
            number=record.number,
            content_sha256=record.content_sha256,
            config=FunctionConfig.model_validate(record.config),
            bundle_dir=str(dest),
        )

    def forget(self, name: str) -> None:
        """Drop cached resolutions of a function after a deploy, alias change or delete."""
        self._generations[name] = self._generations.get(name, 0) + 1
        for key in [k for k in self._resolved if k[0] == name]:
            del self._resolved[key]
        for key in [k for k in self._lookups if k[0] == name]:
            del self._lookups[key]  # in-flight lookups may predate the change

    def pool_for(self, version: VersionInfo) -> Pool:
        pool = self.pools.get(version.key)
        if pool is None or pool.closed:
            pool = Pool(version, self.backend, self.template_policy, leases=self.leases)
            self.pools[version.key] = pool
        return pool

    # --- invoking -------------------------------------------------------------------------------
    async def invoke(
        self,
        version: VersionInfo,
        payload: bytes,
        request_id: str,
        *,
        qualifier: str | None = None,
        client_context: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
        want_logs: bool = False,
        caller: str | None = None,
        protocol: str = "native",
        kind: Kind = "sync",
    ) -> Outcome:
        """Run one invocation on ``version``. Platform failures raise ColdbrewError; a handler
        that raised comes back as ``Outcome.error`` (it still ran, and is still billed).
        Observers see every invocation, failed ones included."""
        started = time.perf_counter()
        fields = {
            "request_id": request_id,
            "payload": payload,
            "invoked_function_arn": function_arn(version.function_name, qualifier),
            "client_context": client_context,
            "identity": identity,
            "want_logs": want_logs,
        }
        try:
            outcome = await self._invoke(version, fields, qualifier)
        except errors.ColdbrewError as exc:
            failed = _empty_outcome(version, request_id, qualifier, caller, protocol, kind)
            failed.platform_error = exc.code
            failed.wall_ms = (time.perf_counter() - started) * 1000
            self._notify(failed)
            raise
        outcome.wall_ms = (time.perf_counter() - started) * 1000
        outcome.caller, outcome.protocol, outcome.kind = caller, protocol, kind
        self._notify(outcome)
        return outcome

    def _on_batch(self, function: str, size: int) -> None:
        for observer in self.batch_observers:
            try:
                observer(function, size)
            except Exception:
                log.exception("batch observer failed")

    def _on_features(self, function: str, stats: list[m.FeatureStat]) -> None:
        for observer in self.feature_observers:
            try:
                observer(function, stats)
            except Exception:
                log.exception("feature lookup observer failed")

    def report(self, outcome: Outcome) -> None:
        """Hand an outcome produced outside the pools (an ensemble's) to the observers."""
        self._notify(outcome)

    def _notify(self, outcome: Outcome) -> None:
        for observer in self.observers:
            try:
                observer(outcome)
            except Exception:
                log.exception("invocation observer failed")

    async def _invoke(
        self, version: VersionInfo, fields: dict[str, Any], qualifier: str | None
    ) -> Outcome:
        pool = self.pool_for(version)
        # Until this call is done the reaper must not forget the pool: a batched call waits in
        # the batcher's queue, where the pool has no instance or waiter to show for it yet.
        pool.callers += 1
        try:
            config = version.config
            if config.batches() and not fields["want_logs"]:
                return await self._invoke_batched(pool, fields, qualifier)
            return await self._invoke_alone(pool, version, fields, qualifier)
        finally:
            pool.callers -= 1

    async def _invoke_alone(
        self, pool: Pool, version: VersionInfo, fields: dict[str, Any], qualifier: str | None
    ) -> Outcome:
        config = version.config
        placed = time.perf_counter()
        instance, cold = await pool.acquire()
        queue_ms = (time.perf_counter() - placed) * 1000
        try:
            fields["deadline_ms"] = int(time.time() * 1000 + config.timeout_s * 1000)
            result = await instance.invoke(fields, config.timeout_s)
        finally:
            pool.release(instance)
        if result.error is not None and result.error.code == "OUT_OF_MEMORY":
            raise errors.OutOfMemory(
                f"the handler ran out of memory (memory_mb={config.memory_mb}): "
                f"{result.error.message}"
            )
        return Outcome(
            request_id=fields["request_id"],
            function_name=version.function_name,
            version=version.number,
            cold_start=cold,
            body=result.body,
            error=result.error,
            duration_ms=result.duration_ms,
            init_ms=instance.init_ms if cold else None,
            memory_mb=config.memory_mb,
            logs=result.logs,
            qualifier=qualifier,
            queue_ms=queue_ms,
            features=result.features,
            start=self._cold_start(
                pool, cold, fields["request_id"], queue_ms, instance.start, result.duration_ms
            ),
        )

    @staticmethod
    def _cold_start(
        pool: Pool,
        cold: bool,
        request_id: str,
        queue_ms: float,
        start: dict[str, Any],
        first_ms: float,
        record: bool = True,
    ) -> ColdStart | None:
        if not cold or not start:
            return None
        if record:  # once per cold start, not once per caller of its first batch
            pool.record_cold_start(request_id, queue_ms, start, first_ms)
        return ColdStart.from_dict(start)

    async def _invoke_batched(
        self, pool: Pool, fields: dict[str, Any], qualifier: str | None
    ) -> Outcome:
        version, config = pool.version, pool.config
        if pool.batcher is None:
            pool.batcher = Batcher(pool, config.batching, self._on_batch)
        item = m.BatchItem(
            request_id=fields["request_id"],
            payload=fields["payload"],
            deadline_ms=int(time.time() * 1000 + config.timeout_s * 1000),
            invoked_function_arn=fields["invoked_function_arn"],
        )
        done = await pool.batcher.submit(item)
        return Outcome(
            request_id=item.request_id,
            function_name=version.function_name,
            version=version.number,
            cold_start=done.cold_start,
            body=done.result.body,
            error=done.result.error,
            features=done.result.features,
            duration_ms=done.duration_ms,
            init_ms=done.init_ms,
            memory_mb=config.memory_mb,
            qualifier=qualifier,
            batch_size=done.batch_size,
            queue_ms=done.queue_ms,
            start=self._cold_start(
                pool,
                done.cold_start,
                item.request_id,
                done.queue_ms,
                done.start or {},
                done.duration_ms,
                done.first_in_batch,
            ),
        )

    async def invoke_burst(
        self, version: VersionInfo, payloads: list[bytes], *, protocol: str, caller: str | None
    ) -> list[m.ItemResult]:
        """Run ``payloads`` as one call of ``version``'s batch handler on one instance slot,
        past its batcher's queue: for work that comes already gathered and is not waited on
        (a shadow's burst of copies). The call is reported as one invocation (``batch_size``
        payloads, the call's whole duration: what it cost; an error only if every payload
        failed); each payload's result is returned in order. Platform failures raise
        ColdbrewError (and are reported too)."""
        config = version.config
        pool = self.pool_for(version)
        request_ids = new_request_ids(len(payloads) + 1)
        burst_id = request_ids.pop()
        arn = function_arn(version.function_name, str(version.number))
        started = time.perf_counter()
        outcome = _empty_outcome(version, burst_id, str(version.number), caller, protocol)
        outcome.batch_size = len(payloads)
        pool.callers += 1  # the reaper keeps the pool while the burst waits for a slot
        try:
            instance, cold = await pool.acquire()
            outcome.queue_ms = (time.perf_counter() - started) * 1000
            deadline_ms = int(time.time() * 1000 + config.timeout_s * 1000)
            items = [
                m.BatchItem(request_id, payload, deadline_ms, arn)
                for request_id, payload in zip(request_ids, payloads, strict=True)
            ]
            try:
                result = await instance.invoke_batch(items, config.timeout_s)
            finally:
                pool.release(instance)
        except errors.ColdbrewError as exc:
            outcome.platform_error = exc.code
            outcome.wall_ms = (time.perf_counter() - started) * 1000
            self._notify(outcome)
            raise
        finally:
            pool.callers -= 1
        self._on_batch(version.function_name, len(payloads))
        outcome.cold_start, outcome.duration_ms = cold, result.duration_ms
        outcome.init_ms = instance.init_ms if cold else None
        outcome.start = self._cold_start(
            pool, cold, burst_id, outcome.queue_ms, instance.start, result.duration_ms
        )
        if all(r.error is not None for r in result.results):  # the call failed as a whole
            outcome.error = result.results[0].error
        outcome.wall_ms = (time.perf_counter() - started) * 1000
        self._notify(outcome)
        return result.results

    async def open_stream(
        self,
        version: VersionInfo,
        request_id: str,
        *,
        qualifier: str | None = None,
        caller: str | None = None,
        protocol: str = "stream",
    ) -> StreamLease:
        """Lease one instance slot of ``version`` to a stream session until the lease closes."""
        pool = self.pool_for(version)
        pool.callers += 1  # the reaper keeps the pool while the session lives
        try:
            instance, cold = await pool.acquire()
        except BaseException:
            pool.callers -= 1
            raise
        config = version.config
        arn = function_arn(version.function_name, qualifier)
        try:
            stream_id, outputs = instance.open_stream(
                stream_fields(request_id, arn, config.stream_max_duration_s)
            )
        except BaseException:
            pool.release(instance)
            pool.callers -= 1
            raise
        outcome = _empty_outcome(version, request_id, qualifier, caller, protocol, "stream")
        outcome.cold_start = cold
        return StreamLease(
            pool, instance, cold, stream_id, outputs, outcome, self._notify, self._on_features
        )

    async def warm(self, name: str) -> None:
        """Provisioned concurrency for the version `latest` points at; others may scale to zero."""
        try:
            version = await self.resolve(name, None)
        except errors.NotFound:
            return
        for pool in self.pools.values():
            if pool.version.function_name == name and pool.version.key != version.key:
                pool.provisioned_active = False
                pool.keep_warm = 0
        config = version.config
        if config.min_instances or config.provisioned or config.keep_alive != "fixed":
            # Pools that hold provisioned instances or a keep-alive history live from deploy on.
            pool = self.pool_for(version)
            pool.provisioned_active = True
            pool.keep_warm = provisioned_instances(
                config.min_instances, config.provisioned, datetime.now(UTC)
            )
            pool.ensure_min_instances()

    async def drop_function(self, name: str) -> None:
        self.forget(name)
        # Its bundle folders may now be garbage-collected (store/gc.py): a function created
        # again under this name must materialize its bundle again, not trust a cached path.
        for key in [k for k in self._materializing if k.startswith(f"{name}:")]:
            del self._materializing[key]
        doomed = [k for k, p in self.pools.items() if p.version.function_name == name]
        pools = [self.pools.pop(k) for k in doomed]
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)

    # --- scaling down ---------------------------------------------------------------------------
    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval_s)
            try:
                self.reap()
            except Exception:
                log.exception("reaper failed")

    def reap(self) -> None:
        now = time.monotonic()
        wall = datetime.now(UTC)
        for key, pool in list(self.pools.items()):
            config = pool.config
            pool.keep_warm = (
                provisioned_instances(config.min_instances, config.provisioned, wall)
                if pool.provisioned_active
                else 0
            )
            pool.reap(now)
            pool.ensure_min_instances()
            pool.release_template_if_idle(now)
            self._ping(pool, now)
            if pool.forgettable():
                del self.pools[key]

    def _ping(self, pool: Pool, now: float) -> None:
        """Warm-up pings for provisioned instances (not metered, not counted as invocations)."""
        for instance in pool.due_for_warmup(now):
            task = asyncio.create_task(self._send_ping(pool, instance))
            self._pings.add(task)
            task.add_done_callback(self._pings.discard)

    async def _send_ping(self, pool: Pool, instance: Instance) -> None:
        fields = {
            "request_id": f"warmup-{uuid.uuid4()}",
            "payload": WARMUP_EVENT,
            "deadline_ms": int(time.time() * 1000 + pool.config.timeout_s * 1000),
            "invoked_function_arn": function_arn(pool.version.function_name),
        }
        try:
            await instance.invoke(fields, pool.config.timeout_s)
        except errors.ColdbrewError as exc:
            log.warning("warm-up ping of %s failed: %s", pool.version.key, exc.message)
        finally:
            instance.inflight -= 1
            instance.last_used = time.monotonic()

    def instances_of(self, name: str) -> list[dict[str, Any]]:
        return [
            {**pool.describe()}
            for pool in self.pools.values()
            if pool.version.function_name == name
        ]


def _empty_outcome(
    version: VersionInfo,
    request_id: str,
    qualifier: str | None,
    caller: str | None,
    protocol: str,
    kind: Kind = "sync",
) -> Outcome:
    """An invocation of ``version`` with nothing run yet: filled in as it runs, or reported as
    a platform failure."""
    return Outcome(
        request_id=request_id,
        function_name=version.function_name,
        version=version.number,
        cold_start=False,
        body=b"",
        error=None,
        duration_ms=0.0,
        init_ms=None,
        memory_mb=version.config.memory_mb,
        qualifier=qualifier,
        caller=caller,
        protocol=protocol,
        kind=kind,
    )
