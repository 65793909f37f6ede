"""The start-failure circuit breaker, as tables: (time, event) steps and what must hold."""

from __future__ import annotations

import pytest

from coldbrew.scaling.breaker import Breaker, BreakerPolicy, BreakerState

POLICY = BreakerPolicy(threshold=3, window_s=10.0, base_s=1.0, cap_s=8.0, trial_timeout_s=30.0)
CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@pytest.mark.parametrize(
    ("trips", "backoff"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (500, 8.0)],
)
def test_backoff_doubles_up_to_the_cap(trips: int, backoff: float) -> None:
    assert POLICY.backoff_s(trips) == backoff


# Each step: (now, action, expected result of the action or None, state after).
# Actions: "allow" (allow_start), "fail" (on_failure), "ok" (on_success), "gone" (abandoned).
Step = tuple[float, str, bool | None, BreakerState]
CASES: dict[str, list[Step]] = {
    "closed allows every start": [
        (0.0, "allow", True, CLOSED),
        (0.0, "allow", True, CLOSED),
    ],
    "opens on the third consecutive failure": [
        (0.0, "fail", None, CLOSED),
        (0.1, "fail", None, CLOSED),
        (0.2, "fail", None, OPEN),
        (0.3, "allow", False, OPEN),
        (1.1, "allow", False, OPEN),  # 1 s backoff from 0.2
    ],
    "a success in between resets the count": [
        (0.0, "fail", None, CLOSED),
        (0.1, "fail", None, CLOSED),
        (0.2, "ok", None, CLOSED),
        (0.3, "fail", None, CLOSED),
        (0.4, "fail", None, CLOSED),
        (0.5, "allow", True, CLOSED),
    ],
    "failures outside the window are forgotten": [
        (0.0, "fail", None, CLOSED),
        (6.0, "fail", None, CLOSED),
        (15.5, "fail", None, CLOSED),  # the one at 0.0 is older than 10 s
        (16.0, "fail", None, OPEN),
    ],
    "one trial after the backoff, the others refused": [
        (0.0, "fail", None, CLOSED),
        (0.0, "fail", None, CLOSED),
        (0.0, "fail", None, OPEN),
        (1.0, "allow", True, HALF),
        (1.0, "allow", False, HALF),
        (1.5, "allow", False, HALF),
    ],
    "a failed trial reopens for twice as long": [
        (0.0, "fail", None, CLOSED),
        (0.0, "fail", None, CLOSED),
        (0.0, "fail", None, OPEN),
        (1.0, "allow", True, HALF),
        (1.2, "fail", None, OPEN),
        (3.1, "allow", False, OPEN),  # 2 s from 1.2
        (3.2, "allow", True, HALF),
        (3.3, "fail", None, OPEN),
        (7.2, "allow", False, OPEN),  # 4 s from 3.3
        (7.3, "allow", True, HALF),
    ],
    "a good trial closes it": [
        (0.0, "fail", None, CLOSED),
        (0.0, "fail", None, CLOSED),
        (0.0, "fail", None, OPEN),
        (1.0, "allow", True, HALF),
        (1.1, "ok", None, CLOSED),
        (1.2, "allow", True, CLOSED),
        (1.3, "fail", None, CLOSED),  # counting starts afresh
    ],
    "late failures of starts begun before it opened change nothing": [
        (0.0, "fail", None, CLOSED),
        (0.0, "fail", None, CLOSED),
        (0.0, "fail", None, OPEN),
        (0.1, "fail", None, OPEN),
        (0.2, "fail", None, OPEN),
        (1.0, "allow", True, HALF),  # still the first, 1 s backoff
    ],
    "an abandoned trial lets the next caller try": [
        (0.0, "fail", None, CLOSED),
        (0.0, "fail", None, CLOSED),
        (0.0, "fail", None, OPEN),
        (1.0, "allow", True, HALF),
        (1.1, "gone", None, OPEN),
        (1.2, "allow", True, HALF),
    ],
    "a trial never heard of is given up after trial_timeout_s": [
        (0.0, "fail", None, CLOSED),
        (0.0, "fail", None, CLOSED),
        (0.0, "fail", None, OPEN),
        (1.0, "allow", True, HALF),
        (30.9, "allow", False, HALF),
        (31.0, "allow", True, HALF),
    ],
}


@pytest.mark.parametrize("steps", list(CASES.values()), ids=list(CASES))
def test_breaker_transitions(steps: list[Step]) -> None:
    breaker = Breaker(POLICY)
    for now, action, expected, state in steps:
        if action == "allow":
            assert breaker.allow_start(now) is expected, (now, action)
        elif action == "fail":
            breaker.on_failure(now)
        elif action == "ok":
            breaker.on_success()
        else:
            breaker.on_abandoned()
        assert breaker.state is state, (now, action)


@pytest.mark.parametrize(
    ("now", "retry_after", "settled"),
    [(0.5, 0.5, False), (1.0, 0.0, False), (11.0, 0.0, False), (11.5, 0.0, True)],
)
def test_retry_after_and_settled(now: float, retry_after: float, settled: bool) -> None:
    breaker = Breaker(POLICY)
    for _ in range(3):
        breaker.on_failure(0.0)
    assert breaker.retry_after_s(now) == pytest.approx(retry_after)
    assert breaker.settled(now) is settled


def test_half_open_says_retry_soon() -> None:
    breaker = Breaker(POLICY)
    for _ in range(3):
        breaker.on_failure(0.0)
    assert breaker.allow_start(1.0) and breaker.state is HALF
    assert breaker.retry_after_s(1.5) == 0.0  # the trial's verdict comes with its start


def test_a_closed_breaker_with_recent_failures_is_not_settled() -> None:
    breaker = Breaker(POLICY)
    assert breaker.settled(0.0)
    breaker.on_failure(0.0)
    assert not breaker.settled(5.0) and breaker.settled(10.5)
    assert breaker.describe(5.0)["consecutive_failures"] == 1
