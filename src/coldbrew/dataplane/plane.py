"""The data plane: the one path every invocation takes, whatever protocol brought it.

    resolve name[:qualifier] -> version (a weighted alias: one drawn per invocation,
                                          by the sticky key when there is one)
    -> rate limits and quotas (per key, per function)
    -> event schema
    -> scheduler: batcher or pool (warm instance, cold start, bounded queue)
    -> typed Outcome, reported to the observers (metrics, meter, logs) by the scheduler

Adapters translate wire formats into an :class:`InvocationRequest` and an ``Outcome`` back
into their wire format; they decide nothing else. Producers of work that is not a request
(async events, schedules, batch jobs) call :meth:`DataPlane.admit` when they accept the work and
:meth:`DataPlane.run` when they run it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from coldbrew import errors
from coldbrew.core.outcome import Outcome
from coldbrew.dataplane import limits, split
from coldbrew.dataplane.prediction_cache import PredictionCache
from coldbrew.dataplane.request import InvocationRequest
from coldbrew.dataplane.schema import check_schema, parse_event
from coldbrew.scaling.pool import VersionInfo
from coldbrew.scaling.scheduler import Scheduler, TrafficSplit
from coldbrew.scaling.streams import StreamLease
from coldbrew.security.limiter import Limiter
from coldbrew.security.limits import Decision

log = logging.getLogger("coldbrew.dataplane")


class Admitted(NamedTuple):
    """An invocation that passed every check: the version it runs on and its limit decision
    (a tuple: built once per invocation, on the hot path)."""

    version: VersionInfo
    limits: Decision | None


class DataPlane:
    def __init__(self, scheduler: Scheduler, limiter: Limiter) -> None:
        self.scheduler = scheduler
        self.limiter = limiter
        self.shadows: dict[tuple[str, str | None], Callable[[InvocationRequest, Outcome], None]]
        self.shadows = {}
        """``(function, qualifier)`` -> what copies its finished invocations to a candidate
        (``coldbrew.delivery.shadow``); empty, it costs one truth test per invocation."""
        self.composite: Callable[[InvocationRequest, Admitted], Awaitable[Outcome]] | None = None
        """Runs versions whose ``kind`` is ``ensemble`` or ``router`` (their members come back
        here as invocations of their own: ``coldbrew.delivery.ensemble``)."""
        self.recorders: list[Callable[[InvocationRequest, VersionInfo, Outcome], None]] = []
        self.prediction_cache: PredictionCache | None = None
        """Answers identical events of functions that opt in (``[prediction_cache]``)."""
        """Told of every completed invocation with its request (the prediction log,
        ``observe/predictions.py``); each only appends to memory."""

    async def invoke(self, request: InvocationRequest) -> Outcome:
        """Admit and run one invocation. Platform failures and refusals raise ColdbrewError (the
        observers still see them); a handler that raised is ``Outcome.error``."""
        route = self.scheduler.fresh_split(request.function, request.qualifier)
        if route is None:
            return await self.run(request, await self.admit(request))
        # The hot path: a cached route, and no coroutine to admit unless a limit applies.
        version = _version_of(route, request)
        if request.limited and limits.applies(request.principal, version.config.rate_limit):
            return await self.run(request, await self._admit_to(request, version))
        _validate(request, version)
        return await self.run(request, Admitted(version, None))

    async def admit(self, request: InvocationRequest) -> Admitted:
        """Resolve, limit and validate, without running: what accepting an invocation means."""
        try:
            route = await self.scheduler.resolve_split(request.function, request.qualifier)
        except errors.NotFound as missing:
            if request.limited:  # probing for functions spends the key's budget too
                p = request.principal
                missing.decision = await limits.admit(self.limiter, p, request.function, None, None)  # type: ignore[attr-defined]
            raise
        return await self._admit_to(request, _version_of(route, request))

    async def _admit_to(self, request: InvocationRequest, version: VersionInfo) -> Admitted:
        """The limits, then the schema, of an invocation of ``version``."""
        decision = None
        config = version.config
        if request.limited:
            decision = await limits.admit(
                self.limiter, request.principal, request.function, config.rate_limit, config.burst
            )
        _validate(request, version)
        return Admitted(version, decision)

    async def run(self, request: InvocationRequest, admitted: Admitted) -> Outcome:
        if admitted.version.config.kind != "function" and self.composite is not None:
            outcome = await self.composite(request, admitted)
            outcome.limits = admitted.limits
            self.scheduler.report(outcome)  # metered like any invocation (members on their own)
            return outcome
        cache = self.prediction_cache
        cached = cache is not None and cache.wanted(admitted.version, request)
        if cached:  # the prediction cache (dataplane/prediction_cache.py): before any instance
            assert cache is not None
            hit = await cache.lookup(admitted.version, request)
            if hit is not None:
                hit.limits = admitted.limits
                self.scheduler.report(hit)  # metered (no duration) and counted like any other
                self._record(request, admitted, hit)
                return hit
        outcome = await self.scheduler.invoke(
            admitted.version,
            request.payload,
            request.request_id,
            qualifier=request.qualifier,
            client_context=request.client_context,
            identity=request.identity,
            want_logs=request.want_logs,
            caller=request.principal.caller,
            protocol=request.protocol,
            kind=request.kind,
        )
        outcome.limits = admitted.limits
        if self.shadows:
            mirror = self.shadows.get((request.function, request.qualifier))
            if mirror is not None:
                mirror(request, outcome)  # starts a task; the caller's answer does not wait
        if cached:
            assert cache is not None
            await cache.store(admitted.version, request, outcome)
        if self.recorders:
            self._record(request, admitted, outcome)
        return outcome

    def _record(self, request: InvocationRequest, admitted: Admitted, outcome: Outcome) -> None:
        for record in self.recorders:
            try:
                record(request, admitted.version, outcome)
            except Exception:  # a recorder's bug must not fail the invocation it records
                log.exception("recording invocation %s failed", request.request_id)

    async def open_stream(self, request: InvocationRequest) -> tuple[StreamLease, Admitted]:
        """Admit a stream session (one invocation, as Lambda counts a response stream) and
        lease it an instance slot for its whole life."""
        admitted = await self.admit(request)
        if admitted.version.config.stream_handler is None:
            raise errors.ValidationError(
                f"function '{request.function}' has no stream_handler; declare one in coldbrew.toml"
            )
        lease = await self.scheduler.open_stream(
            admitted.version,
            request.request_id,
            qualifier=request.qualifier,
            caller=request.principal.caller,
            protocol=request.protocol,
        )
        return lease, admitted


def _version_of(route: TrafficSplit, request: InvocationRequest) -> VersionInfo:
    """The version this invocation runs on: a weighted alias's is drawn here, once."""
    if not route.weighted:
        return route.main
    key = request.sticky_key or None  # an empty header is no key
    if key is None and route.sticky is not None:
        key = split.sticky_key(None, route.sticky, request.event, request.payload)
    return split.choose(route.main, route.weighted, route.salt, key)


def _validate(request: InvocationRequest, version: VersionInfo) -> None:
    """The event schema, when the version has one; else only a body that is not JSON at all."""
    if not request.check_schema:
        return
    if version.config.event_schema is not None:
        event = request.event if request.event is not None else parse_event(request.payload)
        check_schema(version, event)
    elif request.event is None:
        _reject_garbage(request.payload)


def _reject_garbage(payload: bytes) -> None:
    """Refuse a body that is not JSON here, before it costs an instance. The common case (an
    object or array) is left for the handler's own parse: one byte test, not a second parse."""
    if payload[:1] not in (b"{", b"[") and payload.strip():
        parse_event(payload)
