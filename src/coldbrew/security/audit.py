"""The audit log: every administrative action, who did it, when, on what, from where, and
how it ended. Events are written off the request path, after the response is sent."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from coldbrew.registry.security import SecurityStore, now

log = logging.getLogger("coldbrew.audit")


def event(
    actor: str,
    action: str,
    target: str,
    details: dict[str, Any] | None = None,
    source_ip: str | None = None,
    outcome: str = "ok",
) -> dict[str, Any]:
    return {
        "at": now(),
        "actor": actor[:128],
        "action": action[:64],
        "target": target[:256],
        "details": details or {},
        "source_ip": source_ip,
        "outcome": outcome[:32],
    }


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


class AuditLog:
    def __init__(self, store: SecurityStore) -> None:
        self.store = store
        self._pending: set[asyncio.Task[None]] = set()

    def record(self, row: dict[str, Any]) -> None:
        """Write in the background; a failing write is logged, never raised at the caller."""
        task = asyncio.ensure_future(self._write(row))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, row: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(self.store.add_audit, [row])
        except Exception:
            log.exception("could not write audit event %s", row.get("action"))

    async def flush(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
