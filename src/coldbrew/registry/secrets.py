"""The secrets table: named values, stored only as AES-GCM ciphertext (security/secrets.py).

The registry never sees a clear value: it stores what the gateway's cipher made, plus the
name, a generation counter (bumped by every ``set``, so a rotation is visible) and the
fingerprint of the key that encrypted it (so a changed key is reported as such, not as a
corrupt row). The table is created by migration ``0009_secrets``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, LargeBinary, String, delete, insert, select, update
from sqlalchemy.orm import Mapped, mapped_column

from coldbrew.registry.engine import CoreStore
from coldbrew.registry.models import Base, UTCDateTime


class SecretRow(Base):
    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    """nonce (12 bytes) | AES-256-GCM ciphertext | tag, with the name as associated data."""
    key_id: Mapped[str] = mapped_column(String(16))
    """First hex digits of sha256(key): which key encrypted the value."""
    generation: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


LISTED = ("name", "generation", "created_at", "updated_at")
"""What ``ls`` shows: never the ciphertext, never the value."""


class SecretTable(CoreStore):
    """Rows of ``secrets``; its own engine on the registry's URL (as the meter and keys have)."""

    def put(self, name: str, ciphertext: bytes, key_id: str) -> int:
        """Create or replace; returns the new generation (1 for a new secret)."""
        now = datetime.now(UTC)
        t = SecretRow
        with self._write.begin() as conn:
            old = conn.execute(select(t.generation).where(t.name == name)).scalar()
            if old is None:
                row = {"name": name, "ciphertext": ciphertext, "key_id": key_id}
                conn.execute(
                    insert(t), [{**row, "generation": 1, "created_at": now, "updated_at": now}]
                )
                return 1
            values = {"ciphertext": ciphertext, "key_id": key_id, "updated_at": now}
            conn.execute(update(t).where(t.name == name).values(generation=old + 1, **values))
            return int(old) + 1

    def get(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(SecretRow).where(SecretRow.name == name)).mappings().first()
        return dict(row) if row else None

    def generations(self, names: list[str]) -> dict[str, int]:
        t = SecretRow
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.name, t.generation).where(t.name.in_(names)))
            return {name: int(gen) for name, gen in rows}

    def list(self) -> list[dict[str, Any]]:
        t = SecretRow
        with self.engine.connect() as conn:
            rows = conn.execute(select(*(getattr(t, c) for c in LISTED)).order_by(t.name))
            return [dict(row._mapping) for row in rows]

    def delete(self, name: str) -> bool:
        with self._write.begin() as conn:
            result = conn.execute(delete(SecretRow).where(SecretRow.name == name))
        return bool(result.rowcount)
