"""The prediction log: sampled invocations with their input (or its hash) and output.

Written in batches by ``observe/predictions.py`` off the hot path, read by
``GET /v1/functions/{name}/predictions`` (``coldbrew predictions``) and by feedback, which
joins labels to predictions by request id. Old rows, and old meter rows, are deleted by
``observe/retention.py``. The table is created by migration ``0010_predictions``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Float, Index, Integer, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from coldbrew.registry.bulk import BulkInsert
from coldbrew.registry.engine import CoreStore
from coldbrew.registry.meter import InvocationRow
from coldbrew.registry.models import Base, UTCDateTime


class PredictionRow(Base):
    __tablename__ = "predictions"
    __table_args__ = (
        Index(None, "function_name", "at"),
        Index(None, "function_name", "request_id"),
        Index(None, "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128))
    function_name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    caller: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    latency_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(32))
    input: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The event as JSON, its redacted fields replaced; None when only the hash is kept."""
    input_sha256: Mapped[str] = mapped_column(String(64))
    """Of the event's bytes as received (before redaction): equal inputs, equal hashes."""
    output: Mapped[str | None] = mapped_column(Text, nullable=True)


EXPORTED = [
    "request_id",
    "function_name",
    "version",
    "caller",
    "at",
    "latency_ms",
    "status",
    "input",
    "input_sha256",
    "output",
]


_INSERT = BulkInsert(PredictionRow)


class PredictionStore(CoreStore):
    """Its own engine on the registry's URL (as the meter and keys have)."""

    def insert(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with self._write.begin() as conn:
            _INSERT(conn, rows)  # registry/bulk.py: the meter's fast path on SQLite

    def rows(
        self,
        function: str,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        batch: int = 1000,
    ) -> Iterator[dict[str, Any]]:
        """Oldest first, fetched in pages by id so a long export holds no transaction open."""
        t = PredictionRow
        last_id, sent = 0, 0
        while limit is None or sent < limit:
            query = select(t).where(t.function_name == function, t.id > last_id)
            if since is not None:
                query = query.where(t.at >= since)
            if until is not None:
                query = query.where(t.at < until)
            size = batch if limit is None else min(batch, limit - sent)
            with self.engine.connect() as conn:
                page = conn.execute(query.order_by(t.id).limit(size)).mappings().all()
            if not page:
                return
            for row in page:
                yield {k: row[k] for k in EXPORTED}
            last_id, sent = page[-1]["id"], sent + len(page)

    def by_request_ids(self, function: str, request_ids: list[str]) -> dict[str, dict[str, Any]]:
        t = PredictionRow
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(request_ids), 500):
            chunk = request_ids[start : start + 500]
            query = select(t).where(t.function_name == function, t.request_id.in_(chunk))
            with self.engine.connect() as conn:
                for row in conn.execute(query).mappings():
                    found[row["request_id"]] = {k: row[k] for k in EXPORTED}
        return found

    def delete_before(self, cutoff: datetime) -> int:
        with self._write.begin() as conn:
            return int(
                conn.execute(delete(PredictionRow).where(PredictionRow.at < cutoff)).rowcount
            )

    def delete_meter_before(self, cutoff: datetime) -> int:
        """The meter's old rows (its table lives in registry/meter.py; retention is here)."""
        t = InvocationRow
        with self._write.begin() as conn:
            return int(conn.execute(delete(t).where(t.started_at < cutoff)).rowcount)
