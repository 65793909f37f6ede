"""The sliding window gives back what it was given, and stays out of the collector's way."""

from __future__ import annotations

import gc
import math
import random

from coldbrew.observe.usage import Usage
from coldbrew.observe.window import Window, WindowStats, summarize


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


def same(a: WindowStats, b: WindowStats) -> bool:
    """Equal, sums of money and GB-seconds to the last bits (added in another order)."""
    summed = ("cost_usd", "gb_seconds")
    return all(
        math.isclose(getattr(a, f), getattr(b, f), rel_tol=1e-12)
        if f in summed
        else getattr(a, f) == getattr(b, f)
        for f in WindowStats.__dataclass_fields__
    )


def test_one_tally_says_what_summarize_says_of_each_function_and_version() -> None:
    """The alert rules read a Tally (one pass over the rows) in place of ``summarize`` over
    ``since`` per function, per version and for the cost baseline: the same numbers."""
    rng = random.Random(7)
    window = Window(horizon_s=10_000)
    statuses = ["OK"] * 6 + ["FUNCTION_ERROR", "THROTTLED", "TIMEOUT"]
    for i in range(3000):
        window.add(
            usage(1000.0 + i * 0.5, rng.choice("fgh"), rng.choice(statuses))._replace(
                version=rng.choice((1, 2, 3)),
                wall_ms=rng.uniform(1, 900),
                cost_usd=rng.uniform(0, 1e-5),
                gb_seconds=rng.uniform(0, 1e-3),
                cold_start=rng.random() < 0.1,
            )
        )
    start, cost_from = 1900.0, 1200.0
    tally = window.tally(start, cost_from)
    assert tally.functions() == window.functions() == {"f", "g", "h"}
    for function in "fgh":
        recent = window.since(start, function)
        assert same(tally.stats(function), summarize(recent))
        assert tally.versions(function) == sorted({u.version for u in recent})
        for version in (1, 2, 3):
            mine = [u for u in recent if u.version == version]
            assert same(tally.stats(function, version), summarize(mine))
        earlier = [u for u in window.since(cost_from, function) if u.started_at < start]
        assert abs(tally.earlier_cost[function] - sum(u.cost_usd for u in earlier)) < 1e-12
    assert window.tally(start).earlier_cost == {"f": 0.0, "g": 0.0, "h": 0.0}
