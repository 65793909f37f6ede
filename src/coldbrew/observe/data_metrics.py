"""Prometheus metrics of the data layer (docs/DATA.md), on the gateway's metrics registry.

Feature lookups are counted from the ``FeatureStat`` list each instance returns with its
result (``runtime/messages.py``), so every instance on every process is counted, once. A stream
session's come per frame in ``StreamFeatures`` messages (``Scheduler.feature_observers``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from coldbrew.observe.metrics import LabelLimiter

DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class FeatureMetrics:
    def __init__(self, registry: CollectorRegistry, limit: LabelLimiter) -> None:
        self.limit = limit
        self.lookups = Counter(
            "coldbrew_feature_lookups",
            "Declared feature lookups by result: hit (cache), miss (database queried), "
            "default (no key in the event), error (database unavailable)",
            ["function", "feature", "result"],
            registry=registry,
        )
        self.db = Histogram(
            "coldbrew_feature_db_seconds",
            "Database time of feature lookups that missed the cache",
            ["function", "feature"],
            buckets=DB_BUCKETS,
            registry=registry,
        )

    def record(self, function: str, stats: list[Any]) -> None:
        label = self.limit.function(function)
        for stat in stats:
            self.lookups.labels(label, stat.name, stat.outcome).inc()
            if stat.outcome == "miss":
                self.db.labels(label, stat.name).observe(stat.db_ms / 1000)
