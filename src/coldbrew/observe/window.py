"""A sliding window of recent invocations kept in memory, and the statistics read from it.

Alerts and the dashboard both need "what happened in the last N seconds" per function without
touching the database on every evaluation: a bounded deque of :class:`Usage`, trimmed by age and
count, answers that in microseconds for the volumes one gateway serves.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from coldbrew.observe.usage import Usage

_STARTED_AT = Usage._fields.index("started_at")
_FUNCTION = Usage._fields.index("function")
_VERSION = Usage._fields.index("version")
_WALL_MS = Usage._fields.index("wall_ms")
_GB_SECONDS = Usage._fields.index("gb_seconds")
_COST = Usage._fields.index("cost_usd")
_COLD = Usage._fields.index("cold_start")
_STATUS = Usage._fields.index("status")


@dataclass(frozen=True)
class WindowStats:
    """Aggregates over a set of invocations (one function, or all)."""

    invocations: int
    errors: int
    throttles: int
    cold_starts: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    cost_usd: float
    gb_seconds: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.invocations if self.invocations else 0.0

    @property
    def cold_start_ratio(self) -> float:
        completed = self.invocations - self.throttles
        return self.cold_starts / completed if completed > 0 else 0.0


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (what CloudWatch reports); None for no data."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(usages: Iterable[Usage]) -> WindowStats:
    items = list(usages)
    latencies = sorted(u.wall_ms for u in items if u.status not in ("THROTTLED",))
    return WindowStats(
        invocations=len(items),
        errors=sum(1 for u in items if not u.ok),
        throttles=sum(1 for u in items if u.status == "THROTTLED"),
        cold_starts=sum(1 for u in items if u.cold_start),
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99),
        cost_usd=sum(u.cost_usd for u in items),
        gb_seconds=sum(u.gb_seconds for u in items),
    )


class _Group:
    """Running sums of one (function, version) in a :class:`Tally`."""

    __slots__ = (
        "_sorted",
        "cold_starts",
        "cost_usd",
        "errors",
        "gb_seconds",
        "invocations",
        "latencies",
    )

    def __init__(self) -> None:
        self.invocations = self.errors = self.cold_starts = 0
        self.cost_usd = self.gb_seconds = 0.0
        self.latencies: list[float] = []
        """Wall times of the invocations that were not throttled."""
        self._sorted = False

    def sorted_latencies(self) -> list[float]:
        """``latencies``, sorted in place once (a function's stats merge its versions' runs)."""
        if not self._sorted:
            self.latencies.sort()
            self._sorted = True
        return self.latencies


class Tally:
    """One pass over a window's rows (:meth:`Window.tally`): per (function, version) the
    statistics of the invocations placed at or after ``start``; per function, the cost of those
    placed in ``[cost_from, start)``. What the alert rules read every few seconds, without
    turning each row back into a :class:`Usage` or scanning the rows once per function, per
    version and for the baseline (which took ~0.3 s of the event loop every pass at 200,000
    rows)."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[int, _Group]] = {}
        """Function -> version -> its invocations placed at or after ``start``."""
        self.earlier_cost: dict[str, float] = {}
        """Function -> cost placed in ``[cost_from, start)`` (0.0 for a function whose rows
        are all older, or all without ``cost_from``)."""

    def functions(self) -> set[str]:
        """Every function the window holds invocations of (of any age)."""
        return set(self.groups) | set(self.earlier_cost)

    def versions(self, function: str) -> list[int]:
        """The versions of ``function`` placed at or after ``start``, in order."""
        return sorted(self.groups.get(function, ()))

    def stats(self, function: str, version: int | None = None) -> WindowStats:
        """What :func:`summarize` says of the invocations of ``function`` (one ``version``)
        placed at or after ``start``."""
        versions = self.groups.get(function, {})
        if version is None:
            groups = list(versions.values())
        else:
            groups = [versions[version]] if version in versions else []
        runs = [g.sorted_latencies() for g in groups]
        # Sorted runs: sorted() of their concatenation merges them in one linear pass.
        latencies = runs[0] if len(runs) == 1 else sorted(itertools.chain.from_iterable(runs))
        invocations = sum(g.invocations for g in groups)
        return WindowStats(
            invocations=invocations,
            errors=sum(g.errors for g in groups),
            throttles=invocations - sum(len(g.latencies) for g in groups),
            cold_starts=sum(g.cold_starts for g in groups),
            p50_ms=percentile(latencies, 50),
            p95_ms=percentile(latencies, 95),
            p99_ms=percentile(latencies, 99),
            cost_usd=sum(g.cost_usd for g in groups),
            gb_seconds=sum(g.gb_seconds for g in groups),
        )


class Window:
    """The invocations of the last ``horizon_s`` seconds (at most ``max_items``).

    Kept as plain tuples and turned back into :class:`Usage` when read: a plain tuple of plain
    values drops out of the garbage collector's tracking, where 200,000 tracked objects would make
    every full collection walk them all (pauses of ~100 ms under load). Reads are rare (alerts,
    the dashboard); adds happen on every invocation."""

    def __init__(self, horizon_s: float = 3600.0, max_items: int = 200_000) -> None:
        self.horizon_s = horizon_s
        self._rows: deque[tuple[object, ...]] = deque(maxlen=max_items)

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, usage: Usage) -> None:
        self._rows.append(tuple(usage))

    def trim(self, now: float | None = None) -> None:
        cutoff = (time.time() if now is None else now) - self.horizon_s
        rows = self._rows
        while rows and rows[0][_STARTED_AT] < cutoff:  # type: ignore[operator]
            rows.popleft()

    def oldest(self) -> float | None:
        """When the oldest invocation held was placed (Unix time), or None when empty."""
        return self._rows[0][_STARTED_AT] if self._rows else None  # type: ignore[return-value]

    def all(self) -> list[Usage]:
        return [Usage._make(row) for row in self._rows]

    def since(
        self, start: float, function: str | None = None, version: int | None = None
    ) -> list[Usage]:
        """Invocations placed at or after ``start``, of one function (and one version)."""
        return [
            Usage._make(row)
            for row in self._rows
            if row[_STARTED_AT] >= start  # type: ignore[operator]
            and (function is None or row[_FUNCTION] == function)
            and (version is None or row[_VERSION] == version)
        ]

    def tally(self, start: float, cost_from: float | None = None) -> Tally:
        """One pass over every row: see :class:`Tally`."""
        tally = Tally()
        groups, earlier = tally.groups, tally.earlier_cost
        rows: Iterable[tuple[Any, ...]] = self._rows
        for row in rows:
            function = row[_FUNCTION]
            at = row[_STARTED_AT]
            if at >= start:
                versions = groups.get(function)
                if versions is None:
                    versions = groups[function] = {}
                group = versions.get(row[_VERSION])
                if group is None:
                    group = versions[row[_VERSION]] = _Group()
                group.invocations += 1
                status = row[_STATUS]
                if status != "OK":
                    group.errors += 1
                if status != "THROTTLED":
                    group.latencies.append(row[_WALL_MS])
                if row[_COLD]:
                    group.cold_starts += 1
                group.cost_usd += row[_COST]
                group.gb_seconds += row[_GB_SECONDS]
            elif cost_from is not None and at >= cost_from:
                earlier[function] = earlier.get(function, 0.0) + row[_COST]
            elif function not in earlier:
                earlier[function] = 0.0
        return tally

    def versions(self, function: str) -> set[int]:
        """The versions of ``function`` the window holds invocations of."""
        return {row[_VERSION] for row in self._rows if row[_FUNCTION] == function}  # type: ignore[misc]

    def functions(self) -> set[str]:
        return {row[_FUNCTION] for row in self._rows}  # type: ignore[misc]

    def series(
        self, now: float, seconds: int, function: str | None = None
    ) -> list[dict[str, float]]:
        """Per-second buckets of the last ``seconds`` seconds, oldest first (dashboard charts)."""
        start = math.floor(now) - seconds + 1
        buckets: list[list[Usage]] = [[] for _ in range(seconds)]
        for u in self.since(start, function):
            index = int(u.started_at - start)
            if 0 <= index < seconds:
                buckets[index].append(u)
        rows = []
        for offset, bucket in enumerate(buckets):
            stats = summarize(bucket)
            rows.append(
                {
                    "t": start + offset,
                    "invocations": stats.invocations,
                    "errors": stats.errors,
                    "throttles": stats.throttles,
                    "cold_starts": stats.cold_starts,
                    "p50_ms": stats.p50_ms or 0.0,
                    "p95_ms": stats.p95_ms or 0.0,
                    "p99_ms": stats.p99_ms or 0.0,
                    "cost_usd": stats.cost_usd,
                }
            )
        return rows
