"""Writes usage records to the meter off the hot path.

One multi-row insert per flush; batching, retries and the bound on what is kept are
``observe.batch_writer``'s.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from coldbrew.observe.batch_writer import BatchWriter
from coldbrew.observe.usage import Usage
from coldbrew.registry.meter import MeterStore


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


class MeterWriter(BatchWriter):
    what = "meter records"

    def __init__(
        self, store: MeterStore, interval_s: float = 0.5, max_pending: int = 100_000
    ) -> None:
        super().__init__(interval_s, max_pending)
        self.store = store

    def add(self, usage: Usage) -> None:
        self._append(row_of(usage))

    def _write(self, batch: list[dict[str, Any]]) -> None:
        self.store.insert(batch)
