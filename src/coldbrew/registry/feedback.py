"""Feedback: the true label (or value) of a logged prediction, for accuracy in production.

One row per (function, request id): a second feedback for the same request replaces the
first. ``predicted`` is copied from the prediction log when the feedback arrives, so quality
reports read one table. Created by migration ``0011_feedback``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Index, Integer, String, Text, delete, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from coldbrew.registry.engine import CoreStore
from coldbrew.registry.models import Base, UTCDateTime


class FeedbackRow(Base):
    __tablename__ = "feedback"
    __table_args__ = (
        Index(None, "function_name", "request_id", unique=True),
        Index(None, "function_name", "predicted_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    function_name: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    predicted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """When the prediction was made: quality is reported by this day."""
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    label: Mapped[str] = mapped_column(Text)
    """The truth, as JSON."""
    predicted: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The prediction found in the logged output, as JSON."""
    correct: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    """Classification: predicted == label."""
    abs_error: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Regression: |predicted - label|."""


COLUMNS = [c.name for c in FeedbackRow.__table__.columns if c.name != "id"]


class FeedbackStore(CoreStore):
    def put(self, function: str, rows: list[dict[str, Any]]) -> None:
        """Insert, replacing earlier feedback for the same request ids, in one transaction."""
        if not rows:
            return
        t = FeedbackRow
        ids = [row["request_id"] for row in rows]
        with self._write.begin() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                conn.execute(delete(t).where(t.function_name == function, t.request_id.in_(chunk)))
            conn.execute(insert(t), [{"function_name": function, **row} for row in rows])

    def rows(self, function: str, since: datetime | None = None) -> list[dict[str, Any]]:
        t = FeedbackRow
        query = select(t).where(t.function_name == function)
        if since is not None:
            query = query.where(t.predicted_at >= since)
        with self.engine.connect() as conn:
            return [{k: r[k] for k in COLUMNS} for r in conn.execute(query).mappings()]
