"""Retention: the prediction log and the meter keep ``N`` days, then their rows are deleted.

A background task runs once at start and then every ``interval_s``; each pass deletes in one
statement per table, by the indexed time column. 0 days keeps rows forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from coldbrew.registry.predictions import PredictionStore

log = logging.getLogger("coldbrew.retention")


class Retention:
    def __init__(
        self,
        store: PredictionStore,
        prediction_days: float,
        meter_days: float,
        interval_s: float = 3600.0,
    ) -> None:
        self.store = store
        self.prediction_days = prediction_days
        self.meter_days = meter_days
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def run_once(self, now: datetime | None = None) -> dict[str, int]:
        now = now or datetime.now(UTC)
        done = {"predictions": 0, "meter": 0}
        if self.prediction_days > 0:
            done["predictions"] = self.store.delete_before(
                now - timedelta(days=self.prediction_days)
            )
        if self.meter_days > 0:
            done["meter"] = self.store.delete_meter_before(now - timedelta(days=self.meter_days))
        if done["predictions"] or done["meter"]:
            log.info("retention: deleted %(predictions)d predictions, %(meter)d meter rows", done)
        return done

    async def start(self) -> None:
        if self.prediction_days > 0 or self.meter_days > 0:
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.run_once)
            except Exception as exc:  # the database may be down: try again next time
                log.warning("retention pass failed: %s", exc)
            await asyncio.sleep(self.interval_s)
