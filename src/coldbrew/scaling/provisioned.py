"""Provisioned concurrency on a schedule: pure math from (schedules, time) to instance counts.

A schedule such as ``{days = "mon-fri", start = "08:00", end = "18:00", instances = 2}`` keeps
two instances warm on weekdays during office hours (in its ``timezone``, UTC by default); the
largest of ``min_instances`` and every active schedule wins.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from coldbrew.runtime.config import ProvisionedSchedule

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_days(spec: str) -> set[int]:
    """``mon-fri``, ``sat,sun``, ``daily`` -> weekday numbers (Monday is 0)."""
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


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    if int(hours) == 24:
        return time.max  # "24:00": the end of the day
    return time(int(hours), int(minutes))


def is_active(schedule: ProvisionedSchedule, now: datetime) -> bool:
    local = now.astimezone(ZoneInfo(schedule.timezone))
    if local.weekday() not in parse_days(schedule.days):
        return False
    start, end = _clock(schedule.start), _clock(schedule.end)
    current = local.time().replace(tzinfo=None)
    if start <= end:
        return start <= current < end
    return current >= start or current < end  # a window across midnight


def provisioned_instances(
    min_instances: int, schedules: list[ProvisionedSchedule], now: datetime
) -> int:
    active = [s.instances for s in schedules if is_active(s, now)]
    return max([min_instances, *active])
