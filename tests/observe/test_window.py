"""The sliding window gives back what it was given, and stays out of the collector's way."""

from __future__ import annotations

import gc

from coldbrew.observe.usage import Usage
from coldbrew.observe.window import Window


def usage(at: float, function: str = "f", status: str = "OK") -> Usage:
    return Usage(
        request_id=f"r{at}",
        function=function,
        version=1,
        qualifier=None,
        started_at=at,
        duration_ms=2.0,
        wall_ms=3.0,
        billed_ms=2,
        memory_mb=512,
        gb_seconds=0.001,
        cost_usd=1e-7,
        cold_start=False,
        init_ms=None,
        status=status,
        caller="key-1",
    )


def test_reads_return_the_usages_added() -> None:
    window = Window(horizon_s=100)
    added = [usage(1000.0 + i, "f" if i % 2 else "g") for i in range(10)]
    for item in added:
        window.add(item)
    assert window.all() == added
    assert window.since(1005.0, "f") == [u for u in added[5:] if u.function == "f"]
    assert window.oldest() == 1000.0
    assert window.functions() == {"f", "g"}
    window.trim(now=1104.5)  # keeps what started at or after 1004.5
    assert window.all() == added[5:] and len(window) == 5
    assert Window().oldest() is None


def test_held_invocations_are_not_tracked_by_the_garbage_collector() -> None:
    # 200,000 tracked objects would make every full collection walk them all (~100 ms pauses).
    window = Window()
    for i in range(1000):
        window.add(usage(float(i)))
    gc.collect()
    assert not any(gc.is_tracked(row) for row in window._rows)
