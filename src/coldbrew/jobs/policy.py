"""Pure rules of asynchronous invocations, as AWS Lambda applies them (tested by tables).

- What a failure is: a **function error** (the handler raised, timed out, ran out of memory or
  crashed its instance) counts against ``MaximumRetryAttempts`` and waits ``retry_delay_s``,
  then twice that (Lambda: one minute, then two). **Throttles and system errors** (no capacity,
  rate limits, a failed cold start) do not count: the event goes back to the queue with a
  delay growing from 1 s to 5 minutes until it reaches ``MaximumEventAgeInSeconds``.
  Errors that no retry can fix (the function or version is gone) end the event at once.
- Event invoke config: ``MaximumRetryAttempts`` 0-2 (default 2), ``MaximumEventAgeInSeconds``
  60-21600 (default 21600, 6 hours), optional on-success and on-failure destinations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Literal

from coldbrew import errors
from coldbrew.core.destinations import parse_destination

DEFAULT_RETRIES = 2
DEFAULT_MAX_AGE_S = 6 * 3600
MIN_AGE_S, MAX_AGE_S = 60, 6 * 3600
SYSTEM_BACKOFF_START_S = 1.0
SYSTEM_BACKOFF_MAX_S = 300.0
JITTER = 0.2
"""Delays are spread by +/- this fraction, so events that failed together do not retry in
lockstep."""

FUNCTION_ERRORS = frozenset({"FUNCTION_ERROR", "TIMEOUT", "OUT_OF_MEMORY", "INSTANCE_CRASHED"})
FATAL_ERRORS = frozenset({"NOT_FOUND", "VALIDATION_ERROR", "PAYLOAD_TOO_LARGE"})

Kind = Literal["function", "system", "fatal"]


def failure_kind(code: str) -> Kind:
    """How a failed attempt's error ``code`` is retried."""
    if code in FUNCTION_ERRORS:
        return "function"
    if code in FATAL_ERRORS:
        return "fatal"
    return "system"  # THROTTLED, RATE_LIMITED, INIT_ERROR, INTERNAL_ERROR, ...


def _jittered(delay: float, rng: random.Random | None) -> float:
    spread = (rng or random).uniform(-JITTER, JITTER)
    return max(0.0, delay * (1 + spread))


def function_retry_delay(failures: int, base_s: float, rng: random.Random | None = None) -> float:
    """Wait before the retry that follows the ``failures``-th function error (1-based)."""
    return _jittered(base_s * 2 ** max(0, failures - 1), rng)


def system_retry_delay(attempts: int, rng: random.Random | None = None) -> float:
    """Wait before re-running after a throttle or system error on attempt ``attempts``."""
    delay = min(SYSTEM_BACKOFF_MAX_S, SYSTEM_BACKOFF_START_S * 2 ** max(0, attempts - 1))
    return _jittered(delay, rng)


@dataclass(frozen=True)
class EventInvokeConfig:
    """One function's async settings; fields left None take Lambda's defaults."""

    max_retry_attempts: int | None = None
    max_event_age_s: int | None = None
    on_success: str | None = None
    on_failure: str | None = None

    @property
    def retries(self) -> int:
        return DEFAULT_RETRIES if self.max_retry_attempts is None else self.max_retry_attempts

    @property
    def max_age_s(self) -> int:
        return DEFAULT_MAX_AGE_S if self.max_event_age_s is None else self.max_event_age_s

    def merged(self, changes: dict[str, Any]) -> EventInvokeConfig:
        """UpdateFunctionEventInvokeConfig: only the given fields change."""
        return replace(self, **changes)


def check_config(config: EventInvokeConfig) -> EventInvokeConfig:
    """VALIDATION_ERROR naming the first field out of Lambda's bounds."""
    retries = config.max_retry_attempts
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 2
    ):
        raise errors.ValidationError(
            f"MaximumRetryAttempts must be an integer from 0 to 2, not {retries!r}"
        )
    age = config.max_event_age_s
    if age is not None and (
        isinstance(age, bool) or not isinstance(age, int) or not MIN_AGE_S <= age <= MAX_AGE_S
    ):
        raise errors.ValidationError(
            f"MaximumEventAgeInSeconds must be an integer from {MIN_AGE_S} to {MAX_AGE_S}, "
            f"not {age!r}"
        )
    for field, value in (("OnSuccess", config.on_success), ("OnFailure", config.on_failure)):
        if value is not None:
            try:
                parse_destination(value)
            except ValueError as exc:
                raise errors.ValidationError(f"DestinationConfig.{field}: {exc}") from None
    return config
