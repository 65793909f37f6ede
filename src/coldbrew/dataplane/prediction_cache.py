"""The prediction cache: identical inputs to one version get the stored answer (docs/DATA.md).

Opt-in per function (``[prediction_cache] backend = "local" | "redis"``, ``ttl_s``). The key is
the version (its number and content hash) and the sha256 of the event's bytes as received, so a
new version never serves an old one's answers, and two events equal as JSON but written
differently are two entries. Only successful answers up to ``MAX_BODY`` are stored; a request
that wants its logs (``LogType=Tail``) or carries a client context or identity (input the key
does not hold) is never served from the cache. A hit costs no instance:
the data plane builds its ``Outcome`` here (``cache = "hit"``, duration 0, so the meter bills
no duration, only the request) and the observers see it like any other invocation.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from coldbrew.cache import Cache, LocalCache
from coldbrew.cache.base import CacheUnavailable
from coldbrew.core.outcome import Outcome
from coldbrew.dataplane.request import InvocationRequest
from coldbrew.scaling.pool import VersionInfo

log = logging.getLogger("coldbrew.dataplane")

MAX_BODY = 1024 * 1024


class PredictionCache:
    def __init__(
        self,
        local: LocalCache,
        shared: Cache | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.local = local
        self.shared = shared
        self._warned = False
        self.lookups = Counter(
            "coldbrew_prediction_cache",
            "Prediction cache lookups by result (hit: answered without an instance)",
            ["function", "result"],
            registry=registry,
        )

    @staticmethod
    def wanted(version: VersionInfo, request: InvocationRequest) -> bool:
        settings = version.config.prediction_cache
        if settings.backend == "off" or request.want_logs or request.kind == "stream":
            return False
        # A Lambda ClientContext or identity is input the key does not hold: one caller's answer
        # must never be another's.
        return request.client_context is None and request.identity is None

    def _backend(self, version: VersionInfo) -> Cache:
        if version.config.prediction_cache.backend == "redis":
            if self.shared is not None:
                return self.shared
            if not self._warned:
                log.warning("prediction_cache backend 'redis' without COLDBREW_REDIS_URL: local")
                self._warned = True
        return self.local

    @staticmethod
    def key(version: VersionInfo, payload: bytes) -> str:
        digest = hashlib.sha256(payload).hexdigest()
        return f"coldbrew:pc:{version.key}:{version.content_sha256[:16]}:{digest}"

    async def _call(self, cache: Cache, method: str, *args: Any) -> Any:
        try:
            if cache.shared:  # a network round trip: off the event loop
                return await asyncio.to_thread(getattr(cache, method), *args)
            return getattr(cache, method)(*args)
        except CacheUnavailable as exc:
            log.warning("prediction cache unavailable: %s", exc)
            return None

    async def lookup(self, version: VersionInfo, request: InvocationRequest) -> Outcome | None:
        started = time.perf_counter()
        body = await self._call(self._backend(version), "get", self.key(version, request.payload))
        if body is None:
            self.lookups.labels(version.function_name, "miss").inc()
            return None
        self.lookups.labels(version.function_name, "hit").inc()
        return Outcome(
            request_id=request.request_id,
            function_name=version.function_name,
            version=version.number,
            cold_start=False,
            body=body,
            error=None,
            duration_ms=0.0,
            init_ms=None,
            memory_mb=version.config.memory_mb,
            qualifier=request.qualifier,
            wall_ms=(time.perf_counter() - started) * 1000,
            caller=request.principal.caller,
            protocol=request.protocol,
            kind=request.kind,
            cache="hit",
        )

    async def store(
        self, version: VersionInfo, request: InvocationRequest, outcome: Outcome
    ) -> None:
        if outcome.error is not None or outcome.platform_error or len(outcome.body) > MAX_BODY:
            return
        ttl = version.config.prediction_cache.ttl_s
        cache = self._backend(version)
        await self._call(cache, "set", self.key(version, request.payload), outcome.body, ttl)
