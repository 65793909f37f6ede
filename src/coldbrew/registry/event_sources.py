"""The seen-set of polled event sources (``coldbrew.jobs.sources``): which objects of an S3
prefix or a watched folder were already turned into events, so that a restarted gateway
neither loses nor replays any. Created by migration ``0012_event_sources``, which imports this
module so that the schema test's ``Base.metadata`` includes the model.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from coldbrew.registry.models import Base, UTCDateTime, utcnow


class SourceObjectRow(Base):
    """One object a source delivered. ``digest`` hashes the object's key with what changes
    when it is written again (S3: ETag and LastModified; a folder: size and mtime), so an
    overwritten object is a new one, as S3's ``ObjectCreated`` notifications have it."""

    __tablename__ = "event_source_objects"

    source_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    object_key: Mapped[str] = mapped_column(Text)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
