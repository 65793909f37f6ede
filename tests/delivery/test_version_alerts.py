"""Alert rules per version: a function that runs more than one version (a split, a rollout)
is also judged version by version, labelled ``name:version``."""

from __future__ import annotations

import time

import pytest

from coldbrew.observe.alerting import AlertManager
from coldbrew.observe.rules import RuleConfig
from coldbrew.observe.usage import Usage
from coldbrew.observe.window import Window

CONFIG = RuleConfig(window_s=60, error_rate=0.01, p95_ms=1000, min_invocations=20)


def usage(version: int, ok: bool, at: float, wall_ms: float = 2.0) -> Usage:
    return Usage(
        "r", "fn", version, "canary", at, 1.0, wall_ms, 1, 128, 0.0, 0.0, False, None,
        "OK" if ok else "FUNCTION_ERROR",
    )  # fmt: skip


def manager(rows: list[Usage], per_version: bool = True) -> AlertManager:
    window = Window()
    for row in rows:
        window.add(row)
    return AlertManager(window, CONFIG, [], per_version=per_version)


def firing(events: list[dict[str, object]]) -> set[tuple[object, object]]:
    return {(e["rule"], e["function"]) for e in events if e["state"] == "firing"}


@pytest.mark.parametrize(
    ("v1_errors", "v2_errors", "expected"),
    [
        (0, 0, set()),
        # 5 of 100 on version 2: the function as a whole is at 1 % (not above), v2 at 5 %.
        (0, 5, {("error_rate", "fn:2")}),
        (5, 0, {("error_rate", "fn:1")}),
        (5, 5, {("error_rate", "fn"), ("error_rate", "fn:1"), ("error_rate", "fn:2")}),
    ],
)
def test_each_version_is_judged(v1_errors: int, v2_errors: int, expected: set[object]) -> None:
    now = time.time()
    rows = [usage(1, i >= v1_errors, now - 1) for i in range(400)]
    rows += [usage(2, i >= v2_errors, now - 1) for i in range(100)]
    events = manager(rows).evaluate_once(now)
    assert firing(events) == expected


def test_off_when_asked() -> None:
    now = time.time()
    rows = [usage(1, True, now - 1) for _ in range(400)]
    rows += [usage(2, i >= 5, now - 1) for i in range(100)]
    assert firing(manager(rows, per_version=False).evaluate_once(now)) == set()


def test_a_version_alert_resolves_when_the_split_ends() -> None:
    now = time.time()
    rows = [usage(1, True, now - 1) for _ in range(400)]
    rows += [usage(2, i >= 5, now - 1) for i in range(100)]
    alerts = manager(rows)
    assert firing(alerts.evaluate_once(now)) == {("error_rate", "fn:2")}
    later = now + 120  # the window has moved on: only version 1 runs now
    for _ in range(50):
        alerts.window.add(usage(1, True, later - 1))
    events = alerts.evaluate_once(later)
    assert {(e["rule"], e["function"]) for e in events if e["state"] == "resolved"} == {
        ("error_rate", "fn:2")
    }
    assert alerts.active == {}


def test_per_version_latency() -> None:
    now = time.time()
    rows = [usage(1, True, now - 1, 5.0) for _ in range(100)]
    rows += [usage(2, True, now - 1, 3000.0) for _ in range(30)]
    assert ("p95_latency", "fn:2") in firing(manager(rows).evaluate_once(now))
