"""Per-function event invoke configs (Lambda's FunctionEventInvokeConfig), in the registry."""

from __future__ import annotations

import time
from datetime import datetime

from sqlalchemy import Engine, delete, select

from coldbrew import errors
from coldbrew.jobs.policy import EventInvokeConfig, check_config
from coldbrew.jobs.queue import Store, now
from coldbrew.registry.asyncq import EventInvokeConfigRow

CACHE_S = 2.0
"""How long a gateway trusts its copy; another gateway's change applies within this."""


class ConfigStore(Store):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._cache: dict[str, tuple[float, EventInvokeConfig | None, datetime | None]] = {}

    def get(self, function: str) -> tuple[EventInvokeConfig, datetime] | None:
        """The stored config and when it last changed, or None when the function has none."""
        with self._read() as session:
            row = session.get(EventInvokeConfigRow, function)
            if row is None:
                return None
            return _config(row), row.updated_at

    def effective(self, function: str) -> EventInvokeConfig:
        """The config that applies now (defaults when none is stored), cached briefly."""
        cached = self._cache.get(function)
        if cached is not None and time.monotonic() - cached[0] < CACHE_S:
            return cached[1] or EventInvokeConfig()
        found = self.get(function)
        config = found[0] if found else None
        self._cache[function] = (time.monotonic(), config, found[1] if found else None)
        return config or EventInvokeConfig()

    def put(self, function: str, config: EventInvokeConfig) -> tuple[EventInvokeConfig, datetime]:
        check_config(config)
        at = now()
        with self.write() as session:
            row = session.get(EventInvokeConfigRow, function)
            if row is None:
                row = EventInvokeConfigRow(function_name=function)
                session.add(row)
            row.max_retry_attempts = config.max_retry_attempts
            row.max_event_age_s = config.max_event_age_s
            row.on_success = config.on_success
            row.on_failure = config.on_failure
            row.updated_at = at
        self._cache.pop(function, None)
        return config, at

    def delete(self, function: str) -> None:
        with self.write() as session:
            result = session.execute(
                delete(EventInvokeConfigRow).where(EventInvokeConfigRow.function_name == function)
            )
        self._cache.pop(function, None)
        if not result.rowcount:
            raise errors.NotFound(f"function '{function}' has no event invoke config")

    def names(self) -> list[str]:
        with self._read() as session:
            return list(session.scalars(select(EventInvokeConfigRow.function_name)))


def _config(row: EventInvokeConfigRow) -> EventInvokeConfig:
    return EventInvokeConfig(
        max_retry_attempts=row.max_retry_attempts,
        max_event_age_s=row.max_event_age_s,
        on_success=row.on_success,
        on_failure=row.on_failure,
    )
