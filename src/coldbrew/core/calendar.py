"""Day specifications of provisioned-concurrency schedules (``mon-fri``, ``sat,sun``, ``daily``).

Here, below ``runtime`` (whose config validates them) and ``scaling`` (which applies them)."""

from __future__ import annotations

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_days(spec: str) -> set[int]:
    """``mon-fri``, ``sat,sun``, ``daily`` -> weekday numbers (Monday is 0); ValueError else."""
    spec = spec.strip().lower()
    if spec in ("daily", "*", "all"):
        return set(range(7))
    days: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.strip().partition("-")
        start = DAYS.index(first[:3])
        end = DAYS.index(last[:3]) if last else start
        span = range(start, end + 1) if start <= end else [*range(start, 7), *range(0, end + 1)]
        days.update(span)
    return days
