"""Schedule expressions, EventBridge's syntax: ``rate(5 minutes)`` and ``cron(0 12 * * ? *)``.

- ``rate(N unit)``: unit ``minute(s)``, ``hour(s)``, ``day(s)``, and coldbrew's extension
  ``second(s)`` (at least 1 s; for tests and fast loops). Ticks fall every N units from the
  moment the schedule was created.
- ``cron(minutes hours day-of-month month day-of-week year)``: AWS's six fields. Day-of-week
  counts 1-7 from Sunday (``SUN``-``SAT`` also work), ``L``, ``W`` and ``#`` as in AWS; one of
  day-of-month and day-of-week must be ``?``. Evaluated in the schedule's timezone (default
  UTC) with croniter.

Pure functions: :func:`latest_tick` says which tick is due at a given moment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

_RATE = re.compile(r"^rate\(\s*(\d+)\s+([a-z]+)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_DOW_NAMES = {d: i + 1 for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
MAX_YEAR = 2199


@dataclass(frozen=True)
class Expression:
    text: str
    period_s: int | None = None
    """For ``rate()``."""
    cron: str | None = None
    """For ``cron()``: the five standard fields croniter reads (day-of-week from 0 = Sunday)."""
    years: frozenset[int] | None = None
    """For ``cron()`` with a year field other than ``*``."""


def parse(text: str) -> Expression:
    """The expression, or ValueError saying what is wrong with it."""
    text = text.strip()
    found = _RATE.match(text)
    if found:
        count, unit = int(found.group(1)), found.group(2).rstrip("s")
        if unit not in _UNITS:
            raise ValueError(
                f"{text!r}: the unit must be seconds, minutes, hours or days, "
                f"not {found.group(2)!r}"
            )
        if count < 1:
            raise ValueError(f"{text!r}: the rate must be at least 1")
        return Expression(text, period_s=count * _UNITS[unit])
    found = _CRON.match(text)
    if not found:
        raise ValueError(
            f"{text!r} is not a schedule expression; use 'rate(5 minutes)' or "
            "'cron(0 12 * * ? *)' (minutes hours day-of-month month day-of-week year)"
        )
    fields = found.group(1).split()
    if len(fields) != 6:
        raise ValueError(
            f"{text!r}: cron() takes 6 fields (minutes hours day-of-month month day-of-week "
            f"year), not {len(fields)}"
        )
    minute, hour, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise ValueError(f"{text!r}: exactly one of day-of-month and day-of-week must be '?'")
    standard = " ".join([minute, hour, _star(dom), month, _star(_dow(dow, text))])
    if not croniter.is_valid(standard):
        raise ValueError(f"{text!r}: not a valid cron expression")
    return Expression(text, cron=standard, years=_years(year, text))


def _star(field: str) -> str:
    return "*" if field == "?" else field


def _dow(field: str, text: str) -> str:
    """AWS counts day-of-week 1-7 from Sunday; croniter 0-6."""
    if field in ("?", "*"):
        return field
    for name, number in _DOW_NAMES.items():
        field = field.upper().replace(name, str(number))

    def shift(found: re.Match[str]) -> str:
        number = int(found.group(0))
        if not 1 <= number <= 7:
            raise ValueError(f"{text!r}: day-of-week counts 1-7 (SUN-SAT), not {number}")
        return str(number - 1)

    # Shift day numbers but not the "nth" of '#' (3#2 = second Tuesday) nor a '/' step.
    shifted = re.sub(r"(?<![#/])\d+", shift, field)
    return re.sub(r"(\d)L", r"L\1", shifted)  # AWS's 6L (last Friday) is croniter's L5


def _years(field: str, text: str) -> frozenset[int] | None:
    if field == "*":
        return None
    years: set[int] = set()
    try:
        for part in field.split(","):
            body, _, step = part.partition("/")
            if body == "*":
                low, high = 1970, MAX_YEAR
            elif "-" in body:
                low, high = (int(x) for x in body.split("-", 1))
            else:
                low = high = int(body)
                if step:
                    high = MAX_YEAR
            years.update(range(low, high + 1, int(step) if step else 1))
    except ValueError:
        raise ValueError(f"{text!r}: the year field {field!r} is not understood") from None
    if not years or min(years) < 1970 or max(years) > MAX_YEAR:
        raise ValueError(f"{text!r}: years must lie in 1970-{MAX_YEAR}")
    return frozenset(years)


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except Exception:
        raise ValueError(f"unknown timezone {name!r}") from None
    return name


def latest_tick(
    expression: Expression, anchor: datetime, at: datetime, timezone: str = "UTC"
) -> datetime | None:
    """The last tick ``t`` with ``anchor < t <= at`` (UTC), or None. Missed ticks are not
    replayed: after a long stop only the latest one is due, as with EventBridge."""
    if at <= anchor:
        return None
    if expression.period_s is not None:
        period = timedelta(seconds=expression.period_s)
        ticks = (at - anchor) // period
        return anchor + ticks * period if ticks >= 1 else None
    assert expression.cron is not None
    zone = ZoneInfo(timezone)
    # croniter's get_prev from just after `at` includes a tick exactly at `at`.
    it = croniter(expression.cron, (at + timedelta(microseconds=1)).astimezone(zone))
    for _ in range(10_000):  # a year field can skip many ticks; bounded anyway
        tick = it.get_prev(datetime).astimezone(UTC)
        if tick <= anchor:
            return None
        if expression.years is None or tick.astimezone(zone).year in expression.years:
            return tick
    return None


def next_tick(
    expression: Expression, after: datetime, anchor: datetime, timezone: str = "UTC"
) -> datetime | None:
    """The first tick strictly after ``after`` (for display: ``coldbrew schedule ls``)."""
    if expression.period_s is not None:
        period = timedelta(seconds=expression.period_s)
        if after < anchor:
            return anchor + period
        return anchor + ((after - anchor) // period + 1) * period
    assert expression.cron is not None
    zone = ZoneInfo(timezone)
    it = croniter(expression.cron, after.astimezone(zone))
    for _ in range(10_000):
        tick = it.get_next(datetime).astimezone(UTC)
        if tick.year > MAX_YEAR:
            return None
        if expression.years is None or tick.astimezone(zone).year in expression.years:
            return tick
    return None
