"""The rollout decision (``delivery/rollout.py``), by tables."""

from __future__ import annotations

import time

import pytest

from coldbrew import errors
from coldbrew.delivery.controller import version_stats
from coldbrew.delivery.rollout import (
    Criteria,
    VersionStats,
    decide,
    parse_criteria,
    parse_duration,
    parse_steps,
)
from coldbrew.observe.usage import Usage

C = Criteria(max_error_rate_delta=0.01, max_p95_ratio=1.2, min_samples=100)
OK = VersionStats(1000, 0, 20.0)


def s(n: int, e: int, p95: float | None = 20.0) -> VersionStats:
    return VersionStats(n, e, p95)


@pytest.mark.parametrize(
    ("base", "cand", "elapsed", "last", "action"),
    [
        (OK, s(100, 0), 60, False, "advance"),  # healthy, step over
        (OK, s(100, 0), 60, True, "complete"),  # healthy through the last step
        (OK, s(100, 0), 10, False, "hold"),  # step not over
        (OK, s(99, 0), 60, False, "hold"),  # too few samples to judge
        (OK, s(50, 10), 10, False, "hold"),  # bad, but too few samples: not yet
        (OK, s(100, 5), 10, False, "rollback"),  # 5 % errors: rolled back inside the step
        (OK, s(100, 1), 60, False, "advance"),  # 1 % = delta, not above it
        (OK, s(100, 2), 60, False, "rollback"),
        (s(1000, 50), s(100, 5), 60, False, "advance"),  # the baseline fails as often
        (OK, s(100, 0, 25.0), 60, False, "rollback"),  # p95 25 > 20 x 1.2
        (OK, s(100, 0, 24.0), 60, False, "advance"),  # p95 24 = 20 x 1.2
        (OK, s(100, 0, 90.0), 10, False, "hold"),  # slow, judged at the step's end only
        (OK, s(99, 0, 90.0), 60, False, "hold"),  # slow, but too few samples
        (s(1000, 0, 1.0), s(100, 0, 4.0), 60, False, "advance"),  # under the 5 ms floor
        (s(1000, 0, 1.0), s(100, 0, 6.0), 60, False, "rollback"),
        (s(0, 0, None), s(100, 0), 60, False, "advance"),  # no baseline latency yet
        (OK, s(100, 0, None), 60, False, "advance"),  # candidate all errors-free, no p95
    ],
)
def test_decide(
    base: VersionStats, cand: VersionStats, elapsed: float, last: bool, action: str
) -> None:
    decision = decide(base, cand, C, elapsed, 60, last)
    assert decision.action == action, decision.reason


def test_reasons_say_why() -> None:
    assert "error rate 5.00%" in decide(OK, s(100, 5), C, 1, 60, False).reason
    assert "p95 30.0 ms" in decide(OK, s(100, 0, 30.0), C, 61, 60, False).reason
    assert "waiting for 100" in decide(OK, s(3, 0), C, 61, 60, False).reason


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("5,25,50,100", [0.05, 0.25, 0.5, 1.0]),
        ([10, 100], [0.1, 1.0]),
        ("100", [1.0]),  # blue/green
        ([0.5, 100], [0.005, 1.0]),
    ],
)
def test_parse_steps(given: object, expected: list[float]) -> None:
    assert parse_steps(given) == expected


@pytest.mark.parametrize(
    "given", ["", "5,25", "25,5,100", "0,100", "5,5,100", "5,150", "a,100", 7, [None, 100]]
)
def test_bad_steps(given: object) -> None:
    with pytest.raises(errors.ValidationError):
        parse_steps(given)


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("10m", 600), ("30s", 30), ("1.5h", 5400), ("500ms", 0.5), ("45", 45), (12, 12)],
)
def test_parse_duration(given: object, seconds: float) -> None:
    assert parse_duration(given) == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("given", ["", "10x", "-5s", "0", 0, "9999h", True, None, [1]])
def test_bad_durations(given: object) -> None:
    with pytest.raises(errors.ValidationError):
        parse_duration(given)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [
        {"max_error_rate_delta": 2},
        {"max_p95_ratio": 0.5},
        {"min_samples": 0},
        {"min_samples": "x"},
        {"max_error_rate_delta": float("nan")},
        {"min_samples": 1e999},
        {"max_p95_ratio": {}},
        {"min_accuracy": 1.5},
        {"min_accuracy": "high"},
        {"min_accuracy": True},
        {"min_accuracy": float("nan")},
        {"max_accuracy_drop": -0.1},
        {"min_feedback": 0},
    ],
)
def test_bad_criteria(body: dict[str, object]) -> None:
    with pytest.raises(errors.ValidationError):
        parse_criteria(body)


# --- accuracy (feedback) -------------------------------------------------------------------

A = Criteria(min_samples=100, min_accuracy=0.9, min_feedback=20)
D = Criteria(min_samples=100, max_accuracy_drop=0.05, min_feedback=20)


def fb(n: int, correct: int, invocations: int = 100) -> VersionStats:
    return VersionStats(invocations, 0, 20.0, feedback=n, correct=correct)


@pytest.mark.parametrize(
    ("criteria", "base", "cand", "elapsed", "action"),
    [
        (A, OK, fb(20, 18), 60, "advance"),  # 90 % = the bound
        (A, OK, fb(20, 17), 10, "rollback"),  # 85 %: rolled back inside the step
        (A, OK, fb(19, 0), 10, "hold"),  # all wrong, but too little feedback yet
        (A, OK, fb(19, 19), 60, "hold"),  # healthy, but too little feedback to promote
        (A, OK, fb(0, 0), 60, "hold"),  # no feedback at all: waits for it
        (A, OK, fb(20, 2, invocations=10), 10, "rollback"),  # accuracy needs no min_samples
        (C, OK, fb(20, 0), 60, "advance"),  # no accuracy bound: feedback is not judged
        (D, fb(100, 95), fb(20, 18), 60, "advance"),  # 90 % = 95 % - 5 %
        (D, fb(100, 95), fb(20, 17), 10, "rollback"),  # 85 % < 90 %
        (D, fb(10, 10), fb(20, 10), 60, "advance"),  # too little baseline feedback to compare
        (D, OK, fb(20, 10), 60, "advance"),  # no baseline feedback: nothing to compare with
    ],
)
def test_decide_accuracy(
    criteria: Criteria, base: VersionStats, cand: VersionStats, elapsed: float, action: str
) -> None:
    decision = decide(base, cand, criteria, elapsed, 60, False)
    assert decision.action == action, decision.reason


def test_accuracy_reasons_and_parsing() -> None:
    assert "accuracy 85.0% over 20 feedback" in decide(OK, fb(20, 17), A, 1, 60, False).reason
    assert "baseline's 95.0%" in decide(fb(100, 95), fb(20, 17), D, 1, 60, False).reason
    assert "waiting for 20 feedback" in decide(OK, fb(3, 3), A, 61, 60, False).reason
    parsed = parse_criteria({"min_accuracy": "0.9", "max_accuracy_drop": 0.02, "min_feedback": 5})
    assert (parsed.min_accuracy, parsed.max_accuracy_drop, parsed.min_feedback) == (0.9, 0.02, 5)
    assert parse_criteria({}).judges_accuracy is False
    assert VersionStats(1, 0, None).to_dict()["accuracy"] is None


def test_a_shadows_copies_are_not_the_candidates_traffic() -> None:
    """A rollout judges the candidate by its callers' invocations: a shadow's copies (bursts of
    many rows at idle priority, failing or slow as they may) and throttles are left out."""
    now = time.time()

    def usage(status: str, wall_ms: float, protocol: str) -> Usage:
        return Usage(
            "r", "fn", 2, "2", now, 1.0, wall_ms, 1, 128, 0.0, 0.0, False, None, status,
            None, protocol,
        )  # fmt: skip

    rows = [usage("OK", 10.0, "native") for _ in range(100)]
    rows += [usage("FUNCTION_ERROR", 900.0, "shadow") for _ in range(50)]
    rows += [usage("THROTTLED", 0.0, "lambda") for _ in range(5)]
    assert version_stats(rows) == VersionStats(100, 0, 10.0)
