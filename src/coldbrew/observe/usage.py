"""One invocation as every observer sees it: the outcome, billed, with a wall-clock time.

Built once per outcome by :class:`coldbrew.observe.hub.Observability` and handed to the metrics,
the sliding window (alerts, dashboard), the access log and the meter writer, so all of them
count the same thing and agree to the cent.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Protocol

from coldbrew.core.pricing import PriceTable, billed_ms, charge

UNBILLED = frozenset({"THROTTLED", "NOT_FOUND", "VALIDATION_ERROR", "PAYLOAD_TOO_LARGE"})
"""Platform failures where the handler never ran: free, as a throttled Lambda request is."""


class OutcomeLike(Protocol):
    """The fields of ``coldbrew.core.outcome.Outcome`` read here."""

    request_id: str
    function_name: str
    version: int
    cold_start: bool
    error: Any
    duration_ms: float
    init_ms: float | None
    memory_mb: int
    qualifier: str | None
    platform_error: str | None
    wall_ms: float
    caller: str | None
    protocol: str


class Usage(NamedTuple):
    """A named tuple, not a dataclass: the sliding window keeps up to 200,000 of them, and a
    tuple of plain values drops out of the garbage collector's tracking, where dataclass
    instances would make every full collection walk them all (pauses of ~100 ms at load)."""

    request_id: str
    function: str
    version: int
    qualifier: str | None
    started_at: float
    """Unix time the invocation was placed (end minus gateway wall time)."""
    duration_ms: float
    wall_ms: float
    billed_ms: int
    memory_mb: int
    gb_seconds: float
    cost_usd: float
    cold_start: bool
    init_ms: float | None
    status: str
    """``OK``, ``FUNCTION_ERROR`` or the platform error code (``THROTTLED``, ``TIMEOUT``...)."""
    caller: str | None = None
    protocol: str = "native"
    """The entry point (``Outcome.protocol``): ``shadow`` marks a shadow's copies, which a
    rollout does not judge the candidate by."""

    @property
    def ok(self) -> bool:
        return self.status == "OK"


def usage_of(outcome: OutcomeLike, prices: PriceTable, now: float | None = None) -> Usage:
    now = time.time() if now is None else now
    if outcome.platform_error:
        status = outcome.platform_error
    elif outcome.error is not None:
        status = str(getattr(outcome.error, "code", "FUNCTION_ERROR"))
    else:
        status = "OK"
    billed = None if status in UNBILLED else billed_ms(outcome.duration_ms)
    if getattr(outcome, "cache", None) == "hit":
        billed = 0  # the prediction cache answered: the request is charged, no duration
    bill = charge(prices, outcome.memory_mb, billed)
    return Usage(
        request_id=outcome.request_id,
        function=outcome.function_name,
        version=outcome.version,
        qualifier=outcome.qualifier,
        started_at=now - outcome.wall_ms / 1000,
        duration_ms=outcome.duration_ms,
        wall_ms=outcome.wall_ms,
        billed_ms=bill.billed_ms,
        memory_mb=outcome.memory_mb,
        gb_seconds=bill.gb_seconds,
        cost_usd=bill.cost_usd,
        cold_start=outcome.cold_start,
        init_ms=outcome.init_ms,
        status=status,
        caller=outcome.caller,
        protocol=outcome.protocol,
    )
