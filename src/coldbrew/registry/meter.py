"""The meter: one usage record per invocation, in the registry's database.

Written in batches by ``coldbrew.observe.meter_writer`` off the hot path; read by
``/v1/usage`` and ``/v1/cost``. Aggregation happens in SQL (``GROUP BY``), so a cost report over
millions of invocations does not load them. The table is created by migration ``0003_meter``;
that migration imports this module so that the schema test's ``Base.metadata`` includes it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    Index,
    Integer,
    String,
    case,
    func,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from coldbrew.registry.bulk import BulkInsert
from coldbrew.registry.engine import CoreStore
from coldbrew.registry.models import Base, UTCDateTime


class InvocationRow(Base):
    __tablename__ = "invocations"
    __table_args__ = (Index(None, "function_name", "started_at"), Index(None, "started_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Not indexed: nothing looks invocations up by request id, and random uuid keys made the
    # index the costly part of every insert (migration 0005).
    request_id: Mapped[str] = mapped_column(String(128))
    function_name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    qualifier: Mapped[str | None] = mapped_column(String(64), nullable=True)
    caller: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """API key id of the caller, once keys exist; None for anonymous calls."""
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[float] = mapped_column(Float)
    billed_ms: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    gb_seconds: Mapped[float] = mapped_column(Float)
    cost_usd: Mapped[float] = mapped_column(Float)
    cold_start: Mapped[bool] = mapped_column(Boolean)
    init_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(32))
    """``OK``, ``FUNCTION_ERROR`` or a platform error code."""


COLUMNS = [c.name for c in InvocationRow.__table__.columns if c.name != "id"]


_INSERT = BulkInsert(InvocationRow)


class MeterStore(CoreStore):
    """Insert and aggregate usage records; its own engine on the registry's URL."""

    def insert(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with self._write.begin() as conn:
            _INSERT(conn, rows)  # a record per invocation: registry/bulk.py's fast path

    def _filters(
        self, function: str | None, since: datetime | None, until: datetime | None
    ) -> list[ColumnElement[bool]]:
        t = InvocationRow
        where: list[ColumnElement[bool]] = []
        if function:
            where.append(t.function_name == function)
        if since:
            where.append(t.started_at >= since)
        if until:
            where.append(t.started_at < until)
        return where

    def records(
        self,
        function: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        t = InvocationRow
        query = (
            select(t)
            .where(*self._filters(function, since, until))
            .order_by(t.started_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [{k: row[k] for k in ("id", *COLUMNS)} for row in rows]

    def totals(
        self,
        by: str,
        function: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Sums grouped by ``function_name`` or ``caller``."""
        t = InvocationRow
        key = {"function": t.function_name, "caller": t.caller}[by]
        query = (
            select(
                key.label("key"),
                func.count().label("invocations"),
                func.sum(t.billed_ms).label("billed_ms"),
                func.sum(t.gb_seconds).label("gb_seconds"),
                func.sum(t.cost_usd).label("cost_usd"),
                func.sum(case((t.cold_start, 1), else_=0)).label("cold_starts"),
                func.sum(case((t.status != "OK", 1), else_=0)).label("errors"),
                func.sum(case((t.billed_ms > 0, 1), else_=0)).label("billed_requests"),
                func.min(t.started_at).label("first"),
                func.max(t.started_at).label("last"),
            )
            .where(*self._filters(function, since, until))
            .group_by(key)
            .order_by(func.sum(t.cost_usd).desc())
        )
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings().all()]
