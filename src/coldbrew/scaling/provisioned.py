"""Provisioned concurrency on a schedule: pure math from (schedules, time) to instance counts.

A schedule such as ``{days = "mon-fri", start = "08:00", end = "18:00", instances = 2}`` keeps
two instances warm on weekdays during office hours (in its ``timezone``, UTC by default); the
largest of ``min_instances`` and every active schedule wins.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from coldbrew.core.calendar import parse_days
from coldbrew.runtime.config import ProvisionedSchedule


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
