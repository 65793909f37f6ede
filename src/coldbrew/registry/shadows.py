"""Shadows in the registry: one row per shadowed alias of a function (its candidate version and
how copies are compared).

The configuration lives here, not in a gateway's memory, so a shadow survives a gateway
restart and every gateway sharing the registry applies the same set
(``coldbrew.delivery.shadow.ShadowMirror`` re-reads these rows every few seconds). Only the
configuration: the counts of mirrored, dropped and agreeing copies stay in each gateway.

The rows reference their function and candidate version with ``ON DELETE CASCADE``, like
aliases: deleting the function (or a version) deletes its shadows in the same transaction, on
SQLite and PostgreSQL alike. Created by migration ``0015_shadows``, which imports this module
so that the schema test's ``Base.metadata`` includes the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    String,
    UniqueConstraint,
    delete,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column

from coldbrew.registry.engine import UrlStore
from coldbrew.registry.models import Base, FunctionRow, UTCDateTime, utcnow
from coldbrew.registry.registry import _function as function_row
from coldbrew.registry.registry import _version as version_row


class ShadowRow(Base):
    __tablename__ = "shadows"
    __table_args__ = (
        UniqueConstraint("function_id", "alias"),
        # The candidate must be a version of the same function; its removal removes the shadow.
        ForeignKeyConstraint(
            ["function_id", "version"],
            ["versions.function_id", "versions.number"],
            ondelete="CASCADE",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    function_id: Mapped[int] = mapped_column(ForeignKey("functions.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    """The candidate version the copies run on."""
    fraction: Mapped[float] = mapped_column(Float)
    tolerance: Mapped[float] = mapped_column(Float)
    ignore: Mapped[list[str]] = mapped_column(JSON)
    priority: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    """When it was last set: a gateway that sees it change starts the shadow's counts again."""


@dataclass(frozen=True)
class ShadowRecord:
    function: str
    alias: str
    version: int
    fraction: float
    tolerance: float
    ignore: tuple[str, ...]
    priority: str
    updated_at: datetime


def _record(row: ShadowRow, function: str) -> ShadowRecord:
    return ShadowRecord(
        function=function,
        alias=row.alias,
        version=row.version,
        fraction=row.fraction,
        tolerance=row.tolerance,
        ignore=tuple(row.ignore or ()),
        priority=row.priority,
        updated_at=row.updated_at,
    )


class ShadowStore(UrlStore):
    """Shadow rows; every change is one short transaction (SQLite or PostgreSQL)."""

    def put(
        self,
        function: str,
        alias: str,
        version: int,
        fraction: float,
        tolerance: float = 1e-6,
        ignore: tuple[str, ...] = (),
        priority: str = "low",
    ) -> ShadowRecord:
        """Set the shadow of ``function``'s ``alias`` (replacing the one it had)."""
        with self._write() as session:
            # Locking the function's row serialises two gateways setting the same shadow
            # (PostgreSQL); SQLite's BEGIN IMMEDIATE already does.
            fn = function_row(session, function, lock=True)
            version_row(session, fn, version)  # NotFound unless the candidate exists
            row = session.scalars(
                select(ShadowRow).where(ShadowRow.function_id == fn.id, ShadowRow.alias == alias)
            ).first()
            if row is None:
                row = ShadowRow(function_id=fn.id, alias=alias)
                session.add(row)
            row.version, row.fraction, row.tolerance = version, fraction, tolerance
            row.ignore, row.priority, row.updated_at = list(ignore), priority, utcnow()
            session.flush()
            return _record(row, function)

    def all(self) -> list[ShadowRecord]:
        """Every shadow of every function (what each gateway applies)."""
        query = (
            select(ShadowRow, FunctionRow.name)
            .join(FunctionRow, FunctionRow.id == ShadowRow.function_id)
            .order_by(FunctionRow.name, ShadowRow.alias)
        )
        with self._read() as session:
            return [_record(row, name) for row, name in session.execute(query)]

    def delete(self, function: str, alias: str | None = None) -> list[ShadowRecord]:
        """Remove ``function``'s shadows (only ``alias``'s, if given); the removed ones."""
        with self._write() as session:
            query = (
                select(ShadowRow)
                .join(FunctionRow, FunctionRow.id == ShadowRow.function_id)
                .where(FunctionRow.name == function)
            )
            if alias is not None:
                query = query.where(ShadowRow.alias == alias)
            rows = list(session.scalars(query))
            if rows:
                session.execute(delete(ShadowRow).where(ShadowRow.id.in_([r.id for r in rows])))
            return [_record(row, function) for row in rows]
