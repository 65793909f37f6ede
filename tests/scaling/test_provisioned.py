"""Scheduled provisioned concurrency: pure math from schedules and a time to an instance count."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coldbrew.core.calendar import parse_days
from coldbrew.runtime.config import ProvisionedSchedule
from coldbrew.scaling.provisioned import provisioned_instances

OFFICE = ProvisionedSchedule(days="mon-fri", start="08:00", end="18:00", instances=2)
NIGHT = ProvisionedSchedule(days="daily", start="22:00", end="06:00", instances=1)
PARIS = ProvisionedSchedule(
    days="mon-fri", start="08:00", end="18:00", instances=3, timezone="Europe/Paris"
)


@pytest.mark.parametrize(
    ("spec", "days"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("sat,sun", {5, 6}),
        ("daily", set(range(7))),
        ("fri-mon", {4, 5, 6, 0}),
        ("wed", {2}),
    ],
)
def test_parse_days(spec: str, days: set[int]) -> None:
    assert parse_days(spec) == days


# 2026-11-23 is a Monday.
@pytest.mark.parametrize(
    ("minimum", "schedules", "when", "expected"),
    [
        (0, [OFFICE], datetime(2026, 11, 23, 9, 0, tzinfo=UTC), 2),
        (0, [OFFICE], datetime(2026, 11, 23, 18, 0, tzinfo=UTC), 0),  # end is exclusive
        (0, [OFFICE], datetime(2026, 11, 23, 7, 59, tzinfo=UTC), 0),
        (0, [OFFICE], datetime(2026, 11, 22, 9, 0, tzinfo=UTC), 0),  # Sunday
        (1, [OFFICE], datetime(2026, 11, 22, 9, 0, tzinfo=UTC), 1),  # min_instances floor
        (3, [OFFICE], datetime(2026, 11, 23, 9, 0, tzinfo=UTC), 3),
        (0, [NIGHT], datetime(2026, 11, 23, 23, 0, tzinfo=UTC), 1),  # across midnight
        (0, [NIGHT], datetime(2026, 11, 23, 5, 59, tzinfo=UTC), 1),
        (0, [NIGHT], datetime(2026, 11, 23, 12, 0, tzinfo=UTC), 0),
        (0, [OFFICE, NIGHT], datetime(2026, 11, 23, 9, 0, tzinfo=UTC), 2),
        (0, [PARIS], datetime(2026, 11, 23, 7, 30, tzinfo=UTC), 3),  # 08:30 in Paris
        (0, [PARIS], datetime(2026, 11, 23, 17, 30, tzinfo=UTC), 0),  # 18:30 in Paris
    ],
)
def test_provisioned_instances(
    minimum: int, schedules: list[ProvisionedSchedule], when: datetime, expected: int
) -> None:
    assert provisioned_instances(minimum, schedules, when) == expected


def test_whole_day_schedule() -> None:
    always = ProvisionedSchedule(days="daily", start="00:00", end="24:00", instances=1)
    assert provisioned_instances(0, [always], datetime(2026, 11, 23, 23, 59, 59, tzinfo=UTC)) == 1
