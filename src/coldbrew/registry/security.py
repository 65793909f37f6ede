"""API keys and audit events, in the registry's database.

Keys are stored as the sha256 of their secret, never the secret: a stolen database cannot be
replayed against the gateway. The tables are created by migration ``0004_security``, which
imports this module so that the schema test's ``Base.metadata`` includes them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from coldbrew.registry.engine import CoreStore
from coldbrew.registry.models import Base, UTCDateTime


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """Public identifier, also the key's prefix: ``cb_<id>_<secret>``."""
    prefix: Mapped[str] = mapped_column(String(40))
    """What the owner sees of the key (``cb_<id>_``), to tell keys apart."""
    secret_sha256: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(16))
    functions: Mapped[list[str]] = mapped_column(JSON)
    """Glob patterns (fnmatch) of the functions the key may reach."""
    ip_allowlist: Mapped[list[str]] = mapped_column(JSON)
    rate_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    burst: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    monthly_quota: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index(None, "at"), Index(None, "actor", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    """``key:<id>``, ``jwt:<subject>``, ``anonymous`` (auth off) or ``local`` (CLI --local)."""
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(32))
    """``ok`` or the error code the action ended with."""


KEY_COLUMNS = [c.name for c in ApiKeyRow.__table__.columns]
AUDIT_COLUMNS = [c.name for c in AuditRow.__table__.columns]


def now() -> datetime:
    return datetime.now(UTC)


class SecurityStore(CoreStore):
    """Keys and audit events; its own engine on the registry's URL (as the meter has)."""

    # --- keys -----------------------------------------------------------------------------------
    def add_key(self, row: dict[str, Any]) -> None:
        with self._write.begin() as conn:
            conn.execute(insert(ApiKeyRow), [{"created_at": now(), **row}])

    def get_key(self, key_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(ApiKeyRow).where(ApiKeyRow.id == key_id)).mappings().first()
        return {k: row[k] for k in KEY_COLUMNS} if row else None

    def list_keys(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(ApiKeyRow).order_by(ApiKeyRow.created_at)).mappings()
            return [{k: row[k] for k in KEY_COLUMNS} for row in rows]

    def count_active_keys(self) -> int:
        return sum(1 for k in self.list_keys() if k["revoked_at"] is None)

    def update_key(self, key_id: str, **values: Any) -> bool:
        with self._write.begin() as conn:
            result = conn.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(**values))
        return bool(result.rowcount)

    # --- audit ----------------------------------------------------------------------------------
    def add_audit(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with self._write.begin() as conn:
                conn.execute(insert(AuditRow), rows)

    def audit_events(
        self,
        since: datetime | None = None,
        actor: str | None = None,
        action: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        t = AuditRow
        query = select(t).order_by(t.at.desc(), t.id.desc()).limit(limit)
        if since:
            query = query.where(t.at >= since)
        if actor:
            query = query.where(t.actor == actor)
        if action:
            query = query.where(t.action == action)
        with self.engine.connect() as conn:
            return [{k: row[k] for k in AUDIT_COLUMNS} for row in conn.execute(query).mappings()]
