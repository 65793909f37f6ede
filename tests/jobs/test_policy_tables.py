"""Pure rules of async invocations and schedules, by tables: retry kinds and delays, event
invoke config bounds, destinations, schedule expressions and their ticks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from coldbrew import errors
from coldbrew.core.destinations import parse_destination
from coldbrew.core.expressions import latest_tick, next_tick, parse
from coldbrew.jobs import policy
from coldbrew.jobs.destinations import record

T0 = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)  # a Tuesday


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("FUNCTION_ERROR", "function"),
        ("TIMEOUT", "function"),
        ("OUT_OF_MEMORY", "function"),
        ("INSTANCE_CRASHED", "function"),
        ("THROTTLED", "system"),
        ("RATE_LIMITED", "system"),
        ("INIT_ERROR", "system"),
        ("INTERNAL_ERROR", "system"),
        ("NOT_FOUND", "fatal"),
        ("VALIDATION_ERROR", "fatal"),
    ],
)
def test_failure_kinds_follow_lambda(code: str, kind: str) -> None:
    assert policy.failure_kind(code) == kind


@pytest.mark.parametrize(
    ("failures", "base", "expected"), [(1, 60, 60), (2, 60, 120), (1, 0.2, 0.2), (2, 0.2, 0.4)]
)
def test_function_retry_delays_are_one_then_two_units(
    failures: int, base: float, expected: float
) -> None:
    rng = random.Random(7)
    for _ in range(50):
        delay = policy.function_retry_delay(failures, base, rng)
        assert expected * 0.8 <= delay <= expected * 1.2


@pytest.mark.parametrize(("attempt", "expected"), [(1, 1), (2, 2), (5, 16), (9, 256), (20, 300)])
def test_system_retry_backoff_grows_to_five_minutes(attempt: int, expected: float) -> None:
    delay = policy.system_retry_delay(attempt, random.Random(1))
    assert expected * 0.8 <= delay <= expected * 1.2


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (policy.EventInvokeConfig(max_retry_attempts=3), "MaximumRetryAttempts"),
        (policy.EventInvokeConfig(max_retry_attempts=-1), "MaximumRetryAttempts"),
        (policy.EventInvokeConfig(max_retry_attempts=True), "MaximumRetryAttempts"),  # type: ignore[arg-type]
        (policy.EventInvokeConfig(max_event_age_s=59), "MaximumEventAgeInSeconds"),
        (policy.EventInvokeConfig(max_event_age_s=21601), "MaximumEventAgeInSeconds"),
        (policy.EventInvokeConfig(max_event_age_s="60"), "MaximumEventAgeInSeconds"),  # type: ignore[arg-type]
        (policy.EventInvokeConfig(on_success="sqs://q"), "OnSuccess"),
        (policy.EventInvokeConfig(on_failure="function:bad name"), "OnFailure"),
    ],
)
def test_event_invoke_config_bounds(config: policy.EventInvokeConfig, problem: str) -> None:
    with pytest.raises(errors.ValidationError, match=problem):
        policy.check_config(config)


def test_event_invoke_config_defaults_and_limits_pass() -> None:
    assert policy.EventInvokeConfig().retries == 2
    assert policy.EventInvokeConfig().max_age_s == 21600
    for good in (
        policy.EventInvokeConfig(0, 60, "results", "https://example.test/hook"),
        policy.EventInvokeConfig(2, 21600, "function:other", None),
    ):
        assert policy.check_config(good) is good


@pytest.mark.parametrize(
    ("text", "kind", "target"),
    [
        ("results", "results", "results"),
        ("function:other", "function", "other"),
        ("arn:aws:lambda:us-east-1:000000000000:function:other", "function", "other"),
        ("arn:aws:lambda:eu-west-1:123456789012:function:other:prod", "function", "other"),
        ("http://127.0.0.1:9000/x", "webhook", "http://127.0.0.1:9000/x"),
    ],
)
def test_destinations(text: str, kind: str, target: str) -> None:
    found = parse_destination(text)
    assert (found.kind, found.target) == (kind, target)


@pytest.mark.parametrize("text", ["", "sqs", "function:", "arn:aws:sqs:us-east-1:1:q", "ftp://x"])
def test_bad_destinations(text: str) -> None:
    with pytest.raises(ValueError, match="not understood"):
        parse_destination(text)


def test_destination_record_has_lambdas_shape() -> None:
    ok = record(
        request_id="r1",
        function="fn",
        qualifier=None,
        condition="Success",
        attempts=1,
        payload=b'{"a": 1}',
        executed_version=3,
        response=b'{"b": 2}',
    )
    assert set(ok) == {
        "version",
        "timestamp",
        "requestContext",
        "requestPayload",
        "responseContext",
        "responsePayload",
    }
    assert ok["requestContext"] == {
        "requestId": "r1",
        "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:fn:$LATEST",
        "condition": "Success",
        "approximateInvokeCount": 1,
    }
    assert ok["responseContext"] == {"statusCode": 200, "executedVersion": "3"}
    assert ok["requestPayload"] == {"a": 1} and ok["responsePayload"] == {"b": 2}
    aged = record(
        request_id="r2",
        function="fn",
        qualifier="prod",
        condition="EventAgeExceeded",
        attempts=0,
        payload=b"not json",
    )
    assert "responseContext" not in aged and aged["requestPayload"] == "not json"


@pytest.mark.parametrize(
    ("expression", "at", "expected"),
    [
        ("rate(5 minutes)", T0 + timedelta(minutes=4), None),
        ("rate(5 minutes)", T0 + timedelta(minutes=5), T0 + timedelta(minutes=5)),
        ("rate(5 minutes)", T0 + timedelta(minutes=17), T0 + timedelta(minutes=15)),
        ("rate(1 minute)", T0 + timedelta(seconds=59), None),
        ("rate(2 seconds)", T0 + timedelta(seconds=5), T0 + timedelta(seconds=4)),
        ("rate(1 day)", T0 + timedelta(days=3, hours=1), T0 + timedelta(days=3)),
        ("cron(0 12 * * ? *)", T0 + timedelta(hours=11), None),
        ("cron(0 12 * * ? *)", T0 + timedelta(hours=12), T0 + timedelta(hours=12)),
        ("cron(0 12 * * ? *)", T0 + timedelta(days=2, hours=13), T0 + timedelta(days=2, hours=12)),
        ("cron(0/15 * * * ? *)", T0 + timedelta(minutes=44), T0 + timedelta(minutes=30)),
        # Day-of-week 1-7 from Sunday: 2 is Monday; Dec 7 2026 is the first Monday after T0.
        ("cron(0 9 ? * 2 *)", T0 + timedelta(days=6), None),
        ("cron(0 9 ? * MON *)", T0 + timedelta(days=6, hours=10), T0 + timedelta(days=6, hours=9)),
        ("cron(0 9 ? * MON-FRI *)", T0 + timedelta(hours=10), T0 + timedelta(hours=9)),
        ("cron(0 9 ? * 1 *)", T0 + timedelta(days=5, hours=10), T0 + timedelta(days=5, hours=9)),
        ("cron(0 0 1 * ? 2027)", T0 + timedelta(days=40), datetime(2027, 1, 1, tzinfo=UTC)),
        ("cron(0 0 1 * ? 2028)", T0 + timedelta(days=40), None),
    ],
)
def test_latest_tick(expression: str, at: datetime, expected: datetime | None) -> None:
    assert latest_tick(parse(expression), T0, at) == expected


def test_cron_in_a_timezone_and_the_next_tick() -> None:
    noon_in_new_york = parse("cron(0 12 * * ? *)")
    at = T0 + timedelta(hours=20)
    assert latest_tick(noon_in_new_york, T0, at, "America/New_York") == T0 + timedelta(hours=17)
    assert next_tick(parse("rate(5 minutes)"), T0 + timedelta(minutes=7), T0) == T0 + timedelta(
        minutes=10
    )
    last_friday = parse("cron(30 2 ? * 6L *)")
    assert next_tick(last_friday, T0, T0) == datetime(2026, 12, 25, 2, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rate(0 minutes)", "at least 1"),
        ("rate(5 weeks)", "unit"),
        ("rate(five minutes)", "not a schedule expression"),
        ("cron(0 12 * *)", "6 fields"),
        ("cron(0 12 * * * *)", "exactly one of"),
        ("cron(0 12 ? * ? *)", "exactly one of"),
        ("cron(61 12 * * ? *)", "not a valid cron"),
        ("cron(0 12 ? * 8 *)", "1-7"),
        ("cron(0 12 * * ? 1900)", "1970"),
        ("every 5 minutes", "not a schedule expression"),
    ],
)
def test_bad_expressions(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse(text)
