"""Tables of batch jobs: one row per job, one row per committed chunk of it
(``coldbrew.jobs.batch_store`` reads and writes them; docs/ASYNC.md "Batch jobs").

A chunk row exists only once that chunk's results are on disk (its chunk file was renamed into
place first), and it is inserted in the same transaction that adds its counts to the job, so
after a crash the set of chunk rows says exactly which rows are done: the rest run again.

Created by migration ``0013_batch_jobs`` (the upload columns by ``0014_batch_uploads``), which
imports this module so that the schema test's ``Base.metadata`` includes these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from coldbrew.registry.models import Base, UTCDateTime, utcnow


class BatchJobRow(Base):
    """A file of records run through one function, chunk by chunk."""

    __tablename__ = "batch_jobs"
    __table_args__ = (
        Index(None, "state", "lease_until"),
        Index(None, "function_name", "id"),
        Index(None, "source_id", "uploaded_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    function_name: Mapped[str] = mapped_column(String(64))
    qualifier: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    """``queued``, ``running``, ``completed``, ``failed`` (the job, not a row) or ``cancelled``."""
    home: Mapped[str] = mapped_column(String(512))
    """The gateway home holding the job's files: only gateways sharing it run the job."""
    folder: Mapped[str] = mapped_column(Text)
    input_path: Mapped[str] = mapped_column(Text)
    input_format: Mapped[str] = mapped_column(String(16))
    output_path: Mapped[str] = mapped_column(Text)
    errors_path: Mapped[str] = mapped_column(Text)
    output_format: Mapped[str] = mapped_column(String(16))
    event_shape: Mapped[str] = mapped_column(String(16))
    """``instances`` (a row becomes ``{"instances": [row]}``: the built-in model handler) or
    ``record`` (a row is the event as it is)."""
    total_rows: Mapped[int] = mapped_column(Integer)
    chunk_size: Mapped[int] = mapped_column(Integer)
    parallelism: Mapped[int] = mapped_column(Integer)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    rows_succeeded: Mapped[int] = mapped_column(Integer, default=0)
    rows_failed: Mapped[int] = mapped_column(Integer, default=0)
    caller_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    caller_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    """Times a gateway started (or resumed) the job."""
    run_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    run_rows_at_start: Mapped[int] = mapped_column(Integer, default=0)
    """Rows done when the current run began: the run's throughput excludes earlier runs."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    source_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The event source that created the job (``sources.source_id``); None: a submitted file."""
    output_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Where the results file is uploaded once the job completes (``s3://bucket/key``; an S3
    source's job), None when the results stay where ``output_path`` says."""
    errors_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When both files were uploaded; None while an ``output_uri`` job's upload is pending."""
    upload_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why the last upload attempt failed (it is retried); None once it succeeds."""


class BatchChunkRow(Base):
    """One committed chunk: rows ``[chunk * chunk_size, ...)`` of its job are in its file."""

    __tablename__ = "batch_chunks"

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True)
    rows: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
