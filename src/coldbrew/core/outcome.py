"""What happened to one invocation, as the scheduler reports it and every edge renders it.

Defined here, below ``scaling`` and ``observe``, so that producers (the scheduler, stream
sessions) and consumers (protocol adapters, metrics, the meter) share one typed shape without
importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["sync", "async", "stream", "batch"]
"""How the caller waits: for the answer (sync), not at all (async), for a session (stream), or
for a file of records (batch)."""


@dataclass(frozen=True, slots=True)
class ColdStart:
    """Where a cold start's time went (milliseconds)."""

    source: str
    """``version-template``, ``spare``, ``runtime-template``..."""
    fork_ms: float
    init_ms: float
    start_ms: float

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> ColdStart | None:
        """From the instance's ``start`` record (``Instance.start``), when it has one."""
        if not raw:
            return None
        return cls(
            source=str(raw.get("source", "")),
            fork_ms=float(raw.get("fork_ms", 0.0)),
            init_ms=float(raw.get("init_ms", 0.0)),
            start_ms=float(raw.get("start_ms", 0.0)),
        )


@dataclass(slots=True)
class Outcome:
    """One invocation's result: everything an edge needs to answer it and the meter to bill it."""

    request_id: str
    function_name: str
    version: int
    cold_start: bool
    body: bytes
    error: Any
    """The handler's error (``runtime.messages.ErrorInfo``) when it raised, else None."""
    duration_ms: float
    init_ms: float | None
    memory_mb: int
    logs: str | None = None
    """The invocation's captured output, when asked for (``want_logs``)."""
    qualifier: str | None = None
    platform_error: str | None = None
    """Code of the platform failure (THROTTLED, TIMEOUT, OUT_OF_MEMORY, ...) if the invocation
    did not complete; ``error`` is then None and ``body`` empty."""
    queue_ms: float = 0.0
    """Time from placement until an instance slot was this invocation's (a cold start's
    fork and load included)."""
    start: ColdStart | None = None
    """For a cold start, where its time went."""
    batch_size: int = 1
    """How many invocations shared the handler call that answered this one."""
    wall_ms: float = 0.0
    """Gateway-side time from placement to answer, queueing and cold start included."""
    caller: str | None = None
    """Who invoked (``Principal.caller``), for the meter's ``caller`` column."""
    protocol: str = "native"
    """The entry point it came through (native, lambda, oip, apigateway, websocket, stream,
    async, ...)."""
    kind: Kind = "sync"
    limits: Any = None
    """The rate-limit decision that admitted it (``security.limits.Decision``), for the
    ``RateLimit-*`` headers; None when no limit applied."""
    features: Any = None
    """The instance's feature lookups for it (``runtime.messages.FeatureStat`` list), if any."""
    cache: str | None = None
    """``hit``: answered by the prediction cache, no instance ran (no duration is billed)."""

    @property
    def billed_duration_ms(self) -> int:
        # Lambda bills in 1 ms steps, rounded up, with a 1 ms minimum.
        return max(1, math.ceil(self.duration_ms))
