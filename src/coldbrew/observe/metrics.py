"""Prometheus metrics of invocations, pools and cost, in a registry of their own.

Counters and histograms are fed per invocation by :meth:`Metrics.record` (a scheduler observer,
so failures count too); gauges (instances by state, queue depth, version templates) and the
provisioned-concurrency bill are refreshed by :meth:`Metrics.sample_pools` once a second.

Label cardinality is bounded: the first ``max_functions`` function names seen get their own
label, later ones are counted as ``_other`` (version ``_other`` too), so a tenant deploying
thousands of functions cannot blow up the scrape.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from coldbrew.core.pricing import PriceTable, provisioned_cost
from coldbrew.observe.usage import Usage

OTHER = "_other"
FV = ("function", "version")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
HOT_SERIES = 1024


class LabelLimiter:
    """Maps function names to labels, keeping at most ``limit`` distinct ones."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.known: set[str] = set()

    def function(self, name: str) -> str:
        if name in self.known:
            return name
        if len(self.known) < self.limit:
            self.known.add(name)
            return name
        return OTHER

    def labels(self, name: str, version: int | str) -> tuple[str, str]:
        label = self.function(name)
        return label, (OTHER if label == OTHER else str(version))


class Metrics:
    def __init__(self, prices: PriceTable, max_functions: int = 50) -> None:
        self.prices = prices
        self.limit = LabelLimiter(max_functions)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.invocations = Counter(
            "coldbrew_invocations", "Invocations by outcome status", [*FV, "status"], registry=r
        )
        self.errors = Counter(
            "coldbrew_errors", "Failed invocations by error code", [*FV, "code"], registry=r
        )
        self.throttles = Counter("coldbrew_throttles", "THROTTLED invocations", FV, registry=r)
        self.cold_starts = Counter("coldbrew_cold_starts", "Cold starts", FV, registry=r)
        self.duration = Histogram(
            "coldbrew_duration_seconds", "Handler duration", FV, buckets=LATENCY_BUCKETS, registry=r
        )
        self.wall = Histogram(
            "coldbrew_gateway_duration_seconds",
            "Gateway time from placement to answer (queueing and cold start included)",
            FV,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.init = Histogram(
            "coldbrew_init_duration_seconds",
            "Init time of cold starts (fork and model load)",
            FV,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.gb_seconds = Counter("coldbrew_billed_gb_seconds", "Billed GB-seconds", FV, registry=r)
        self.billed_requests = Counter(
            "coldbrew_billed_requests", "Invocations billed a request charge", FV, registry=r
        )
        self.cost = Counter(
            "coldbrew_cost_usd", "Invocation cost (requests + GB-seconds)", FV, registry=r
        )
        self.provisioned_gb_seconds = Counter(
            "coldbrew_provisioned_gb_seconds",
            "GB-seconds of instances held warm by min_instances",
            FV,
            registry=r,
        )
        self.provisioned_cost = Counter(
            "coldbrew_provisioned_cost_usd", "Cost of provisioned concurrency", FV, registry=r
        )
        self.batch_size = Histogram(
            "coldbrew_batch_size",
            "Invocations per batch",
            ["function"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.instances = Gauge(
            "coldbrew_instances", "Live instances by state", [*FV, "state"], registry=r
        )
        self.queue_depth = Gauge(
            "coldbrew_queue_depth", "Invocations waiting for an instance", FV, registry=r
        )
        self.templates = Gauge(
            "coldbrew_version_templates", "Version templates held (1 or 0)", FV, registry=r
        )
        self.provisioned_total_usd = 0.0
        """Provisioned-concurrency cost since start (the meter stores invocations only)."""
        self._hot: dict[tuple[str, int | str], _Series] = {}

    def record(self, usage: Usage) -> None:
        series = self._series(usage.function, usage.version)
        series.invocations(usage.status).inc()
        if not usage.ok:
            self.errors.labels(*series.labels, usage.status).inc()
        if usage.status == "THROTTLED":
            self.throttles.labels(*series.labels).inc()
        if usage.cold_start:
            self.cold_starts.labels(*series.labels).inc()
            if usage.init_ms is not None:
                self.init.labels(*series.labels).observe(usage.init_ms / 1000)
        series.wall.observe(usage.wall_ms / 1000)
        if usage.billed_ms:
            series.duration.observe(usage.duration_ms / 1000)
            series.billed_requests.inc()
            series.gb_seconds.inc(usage.gb_seconds)
            series.cost.inc(usage.cost_usd)

    def _series(self, function: str, version: int | str) -> _Series:
        """The children recorded on every invocation, per (function, version). ``labels()``
        validates and locks on each call: looked up once, it stops costing the hot path."""
        key = (function, version)
        series = self._hot.get(key)
        if series is None:
            if len(self._hot) >= HOT_SERIES:  # many versions over time: start afresh
                self._hot.clear()
            labels = self.limit.labels(function, version)
            series = _Series(labels, self)
            self._hot[key] = series
        return series

    def observe_batch(self, function: str, size: int) -> None:
        """For the batcher: one call per batch sent to an instance, with its size."""
        self.batch_size.labels(self.limit.function(function)).observe(size)

    def sample_pools(self, pools: Iterable[Any], elapsed_s: float) -> None:
        """Refresh the gauges from the scheduler's pools, and bill ``elapsed_s`` of provisioned
        concurrency for each pool holding ``keep_warm`` instances."""
        for gauge in (self.instances, self.queue_depth, self.templates):
            gauge.clear()
        for pool in pools:
            labels = self.limit.labels(pool.version.function_name, pool.version.number)
            counts = {"starting": 0, "warm": 0, "busy": 0}
            for instance in pool.instances:
                state = instance.state.value
                if state == "ready":
                    counts["busy" if instance.inflight else "warm"] += 1
                elif state == "starting":
                    counts["starting"] += 1
            for state, count in counts.items():
                self.instances.labels(*labels, state).inc(count)
            self.queue_depth.labels(*labels).inc(len(pool.waiters))
            self.templates.labels(*labels).inc(1 if pool.has_template() else 0)
            warm = getattr(pool, "keep_warm", 0)
            if warm and elapsed_s > 0:
                memory = pool.version.config.memory_mb
                self.provisioned_gb_seconds.labels(*labels).inc(warm * memory / 1024 * elapsed_s)
                cost = provisioned_cost(self.prices, memory, warm, elapsed_s)
                self.provisioned_cost.labels(*labels).inc(cost)
                self.provisioned_total_usd += cost

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Series:
    """One (function, version)'s children of the per-invocation counters and histograms."""

    def __init__(self, labels: tuple[str, ...], metrics: Metrics) -> None:
        self.labels = labels
        self._metrics = metrics
        self._invocations: dict[str, Any] = {}
        self.wall = metrics.wall.labels(*labels)
        self.duration = metrics.duration.labels(*labels)
        self.billed_requests = metrics.billed_requests.labels(*labels)
        self.gb_seconds = metrics.gb_seconds.labels(*labels)
        self.cost = metrics.cost.labels(*labels)

    def invocations(self, status: str) -> Any:
        child = self._invocations.get(status)
        if child is None:
            child = self._metrics.invocations.labels(*self.labels, status)
            self._invocations[status] = child
        return child
