"""Tables of asynchronous invocations: the durable queue, dead letters, destination results,
per-function event-invoke configs and schedules (``coldbrew.jobs`` reads and writes them).

Created by migration ``0007_async_queue``, which imports this module so that the schema test's
``Base.metadata`` includes these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from coldbrew.registry.models import Base, UTCDateTime, utcnow


class AsyncEventRow(Base):
    """One accepted async invocation. A worker leases it by moving ``visible_at`` into the
    future (the visibility timeout); a lease that expires (its gateway died) makes the row
    visible again, so every accepted event runs at least once."""

    __tablename__ = "async_events"
    __table_args__ = (
        UniqueConstraint("function_name", "idempotency_key"),
        Index(None, "state", "visible_at"),
        Index(None, "function_name", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), unique=True)
    function_name: Mapped[str] = mapped_column(String(64))
    qualifier: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version: Mapped[int] = mapped_column(Integer)
    """The version it was admitted on; it runs on what the qualifier resolves to when it runs."""
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    client_context: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    caller_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    caller_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    protocol: Mapped[str] = mapped_column(String(16), default="native")
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    """``queued`` (waiting or leased), ``succeeded``, ``failed`` (dead-lettered)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """Times a worker leased it (Lambda's ``approximateInvokeCount``)."""
    failures: Mapped[int] = mapped_column(Integer, default=0)
    """Function errors so far; ``max_retry_attempts`` bounds these, not ``attempts`` (a lease
    lost to a gateway crash is not the function's fault)."""
    max_retry_attempts: Mapped[int] = mapped_column(Integer, default=2)
    max_event_age_s: Mapped[int] = mapped_column(Integer, default=21600)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    visible_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    executed_version: Mapped[int | None] = mapped_column(Integer, nullable=True)


class DeadLetterRow(Base):
    """An event that exhausted its retries or outlived its maximum age, with its last error."""

    __tablename__ = "dead_letters"
    __table_args__ = (Index(None, "function_name", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), unique=True)
    function_name: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    """``RetriesExhausted``, ``EventAgeExceeded`` or ``NotRunnable``."""
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    """When the event was accepted."""
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AsyncResultRow(Base):
    """A destination record kept in the ``results`` destination, for callers to read."""

    __tablename__ = "async_results"
    __table_args__ = (Index(None, "function_name", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    function_name: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(128))
    condition: Mapped[str] = mapped_column(String(32))
    record: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EventInvokeConfigRow(Base):
    """Lambda's FunctionEventInvokeConfig of one function."""

    __tablename__ = "event_invoke_configs"

    function_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    max_retry_attempts: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_event_age_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    on_success: Mapped[str | None] = mapped_column(String(350), nullable=True)
    on_failure: Mapped[str | None] = mapped_column(String(350), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScheduleRow(Base):
    """A schedule that invokes a function asynchronously at each tick of its expression.

    ``last_tick`` is advanced by a conditional UPDATE in the same transaction that queues the
    tick's event, so a tick fires once however many gateways run and however often they
    restart."""

    __tablename__ = "schedules"
    __table_args__ = (UniqueConstraint("function_name", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    function_name: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    expression: Mapped[str] = mapped_column(String(256))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    input: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The event as JSON text; None sends EventBridge's scheduled-event shape."""
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(16), default="cli")
    """``cli`` (``coldbrew schedule add``) or ``config`` (a ``[[schedule]]`` of the bundle)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_tick: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
