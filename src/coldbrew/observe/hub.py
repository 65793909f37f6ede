"""Observability as one component: metrics, sliding window, access log, meter, alerts.

The platform builds one :class:`Observability`, appends :meth:`observe` to the scheduler's
observers, and starts/stops it with the server. ``observe`` runs on the event loop for every
invocation: it prices the outcome once and hands the same :class:`Usage` to each consumer, all
of which only append to memory; the database write and the alert evaluation run in their own
background tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from coldbrew.core.pricing import PriceTable, price_table
from coldbrew.observe.alerting import AlertManager
from coldbrew.observe.data_metrics import FeatureMetrics
from coldbrew.observe.drift_watch import DriftWatch
from coldbrew.observe.logs import access_log
from coldbrew.observe.meter_writer import MeterWriter
from coldbrew.observe.metrics import Metrics
from coldbrew.observe.predictions import PredictionLog
from coldbrew.observe.quality import Quality, QualityMetrics
from coldbrew.observe.retention import Retention
from coldbrew.observe.rules import RuleConfig
from coldbrew.observe.usage import OutcomeLike, usage_of
from coldbrew.observe.window import Window
from coldbrew.registry.feedback import FeedbackStore
from coldbrew.registry.meter import MeterStore
from coldbrew.registry.predictions import PredictionStore
from coldbrew.settings import Settings

log = logging.getLogger("coldbrew.observe")


class Observability:
    def __init__(self, settings: Settings, pools: Callable[[], Iterable[Any]]) -> None:
        custom = PriceTable(**settings.price_table_custom) if settings.price_table_custom else None
        self.prices = price_table(settings.price_table, custom)
        self.settings = settings
        self.pools = pools
        self.started_at = time.time()
        self.metrics = Metrics(self.prices, settings.metrics_max_functions)
        self.features = FeatureMetrics(self.metrics.registry, self.metrics.limit)
        self.prediction_store = PredictionStore(settings.registry_url())
        flush_s = settings.prediction_flush_interval_s
        self.predictions = PredictionLog(self.prediction_store, flush_s)
        self.feedback_store = FeedbackStore(settings.registry_url())
        quality_metrics = QualityMetrics(self.metrics.registry, self.metrics.limit)
        self.drift = DriftWatch(
            self.prediction_store,
            quality_metrics.psi,
            self.metrics.limit,
            settings.alert_quality_window_s,
            settings.alert_drift_interval_s,
            settings.alert_max_psi,
            settings.alert_min_drift_inputs,
        )
        """Input drift; its ``references`` loader is set by the platform (it reads bundles)."""
        self.quality = Quality(
            self.feedback_store,
            self.prediction_store,
            quality_metrics,
            settings.alert_quality_window_s,
            settings.alert_min_accuracy,
            settings.alert_max_mae,
            settings.alert_min_feedback,
            max_ece=settings.alert_max_ece,
            drift=self.drift,
        )
        self.retention = Retention(
            self.prediction_store,
            settings.prediction_retention_days,
            settings.meter_retention_days,
            settings.retention_interval_s,
        )
        self.window = Window(horizon_s=max(3600.0, settings.alert_window_s * 13))
        self.store = MeterStore(settings.registry_url())
        self.writer = MeterWriter(self.store, settings.meter_flush_interval_s)
        rules = RuleConfig(
            window_s=settings.alert_window_s,
            error_rate=settings.alert_error_rate,
            p95_ms=settings.alert_p95_ms,
            cold_start_ratio=settings.alert_cold_start_ratio,
            cost_anomaly_factor=settings.alert_cost_anomaly_factor,
            min_invocations=settings.alert_min_invocations,
        )
        self.alerts = AlertManager(
            self.window, rules, settings.alert_webhooks, settings.alert_interval_s
        )
        self.alerts.sources.append(self.quality.evaluations)
        self.alerts.sources.append(self.drift.evaluations)
        self.drift.functions = self.window.functions
        self._sampler: asyncio.Task[None] | None = None

    def observe(self, outcome: OutcomeLike) -> None:
        """The scheduler observer: quick, never raises into the hot path (the scheduler also
        guards it)."""
        usage = usage_of(outcome, self.prices)
        self.metrics.record(usage)
        self.window.add(usage)
        self.writer.add(usage)
        access_log(usage)
        if getattr(outcome, "features", None):
            self.features.record(outcome.function_name, outcome.features)  # type: ignore[attr-defined]

    async def start(self) -> None:
        await self.writer.start()
        await self.predictions.start()
        await self.retention.start()
        await self.alerts.start()
        await self.drift.start()
        self._sampler = asyncio.create_task(self._sample_forever())

    async def stop(self) -> None:
        if self._sampler:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        await self.alerts.stop()
        await self.drift.stop()
        await self.writer.stop()
        await self.retention.stop()
        await self.predictions.stop()
        self.prediction_store.close()
        self.feedback_store.close()
        self.store.close()

    async def _sample_forever(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.metrics_sample_interval_s)
            now = time.monotonic()
            try:
                self.metrics.sample_pools(list(self.pools()), now - last)
            except Exception:
                log.exception("pool sampling failed")
            last = now
