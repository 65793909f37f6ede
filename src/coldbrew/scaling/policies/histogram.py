"""Per-function idle-time histogram: the only state a keep-alive policy reads.

Kept apart from the policies so the loop that owns it (scheduler or simulator) is the only thing
that mutates state; the policies stay pure functions of it. Updates are O(1): the bin counts, the
sum of squared counts (for the coefficient of variation) and a short tail of recent idle times
(for the out-of-bounds forecast) are maintained incrementally, because the simulator records one
idle time per active minute of every function.
"""

from __future__ import annotations

import math
from collections import deque


class IdleHistogram:
    """Idle times in 1-minute bins over ``range_minutes``, plus out-of-bounds (OOB) counts."""

    def __init__(self, range_minutes: int = 240, recent: int = 8) -> None:
        if range_minutes < 1:
            raise ValueError("range_minutes must be >= 1")
        self.range_minutes = range_minutes
        self.counts = [0] * range_minutes
        self.in_range = 0
        self.out_of_bounds = 0
        self.recent: deque[float] = deque(maxlen=recent)
        self._sum_sq = 0
        self._max_bin = -1

    @classmethod
    def of(cls, idle_times: list[float], range_minutes: int = 240) -> IdleHistogram:
        """A histogram holding ``idle_times`` (convenience for tests and tables)."""
        hist = cls(range_minutes)
        for idle in idle_times:
            hist.add(idle)
        return hist

    @property
    def total(self) -> int:
        return self.in_range + self.out_of_bounds

    def add(self, idle_minutes: float) -> None:
        """Record one idle time (minutes, >= 0)."""
        if idle_minutes < 0:
            raise ValueError("idle time must be >= 0")
        self.recent.append(idle_minutes)
        b = int(idle_minutes)
        if b >= self.range_minutes:
            self.out_of_bounds += 1
            return
        self._sum_sq += 2 * self.counts[b] + 1
        self.counts[b] += 1
        self.in_range += 1
        self._max_bin = max(self._max_bin, b)

    def oob_share(self) -> float:
        """Fraction of all recorded idle times that fell beyond the range."""
        return self.out_of_bounds / self.total if self.total else 0.0

    def bin_cv(self) -> float:
        """Coefficient of variation of the bin counts over the whole range.

        High when idle times concentrate in a few bins (a predictable function), 0 when they are
        spread evenly; ``sqrt(range - 1)`` when every idle time falls in one bin.
        """
        if self.in_range == 0:
            return 0.0
        mean = self.in_range / self.range_minutes
        variance = max(self._sum_sq / self.range_minutes - mean * mean, 0.0)
        return math.sqrt(variance) / mean

    def percentile_bin(self, pct: float) -> int:
        """The first bin at which the cumulative in-range count reaches ``pct`` percent."""
        if self.in_range == 0:
            raise ValueError("empty histogram")
        target = max(pct / 100.0 * self.in_range, 1e-9)
        if pct > 50:
            # Tail percentiles sit near the top: walk down from the highest non-empty bin.
            above = 0
            for b in range(self._max_bin, -1, -1):
                if self.in_range - above - self.counts[b] < target:
                    return b
                above += self.counts[b]
            return 0
        seen = 0
        for b in range(self._max_bin + 1):
            seen += self.counts[b]
            if seen >= target:
                return b
        return self._max_bin
