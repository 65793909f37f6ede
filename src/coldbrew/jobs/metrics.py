"""Prometheus series of async invocations, on the gateway's own metrics registry.

Counters (per function): ``coldbrew_async_events_total{outcome}`` with outcome ``accepted``,
``duplicate``, ``succeeded``, ``retried``, ``dead_lettered``, ``destination_failed``; gauges
sampled from the queue table: ``coldbrew_async_queue_depth`` and
``coldbrew_async_oldest_event_age_seconds``. Durations, errors and cost of each attempt are in
the ordinary invocation series (``kind`` async goes through the same scheduler observers).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

OUTCOMES = ("accepted", "duplicate", "succeeded", "retried", "dead_lettered", "destination_failed")


class AsyncMetrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        label: Callable[[str], str] | None = None,
    ) -> None:
        self.label = label or (lambda name: name)
        self.counts: Tally[tuple[str, str]] = Tally()
        """The same counts, readable without Prometheus (tests, in-process callers)."""
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "coldbrew_async_events",
            "Async invocation events by outcome",
            ["function", "outcome"],
            registry=r,
        )
        self.depth = Gauge(
            "coldbrew_async_queue_depth",
            "Async events waiting or running",
            ["function"],
            registry=r,
        )
        self.oldest = Gauge(
            "coldbrew_async_oldest_event_age_seconds",
            "Age of the oldest queued async event",
            ["function"],
            registry=r,
        )
        self._sampled: set[str] = set()
        self._depth: dict[str, tuple[int, float]] = {}

    def count(self, function: str, outcome: str) -> None:
        self.counts[(function, outcome)] += 1
        self.events.labels(self.label(function), outcome).inc()

    def sample(self, depth: dict[str, tuple[int, float]]) -> None:
        """Set the gauges from ``EventQueue.depth()``; functions that emptied read 0."""
        for name in self._sampled - set(depth):
            self.depth.labels(self.label(name)).set(0)
            self.oldest.labels(self.label(name)).set(0)
        for name, (count, age) in depth.items():
            self.depth.labels(self.label(name)).set(count)
            self.oldest.labels(self.label(name)).set(age)
        self._sampled = set(depth)
        self._depth = dict(depth)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Per function: the last sampled depth and oldest age, and the outcome counts since
        this gateway started (the dashboard's async table)."""
        names = set(self._depth) | {name for name, _ in self.counts}
        out: dict[str, dict[str, float]] = {}
        for name in sorted(names):
            depth, oldest = self._depth.get(name, (0, 0.0))
            row: dict[str, float] = {"queue_depth": depth, "oldest_age_s": oldest}
            for outcome in OUTCOMES:
                row[outcome] = self.counts[(name, outcome)]
            out[name] = row
        return out
