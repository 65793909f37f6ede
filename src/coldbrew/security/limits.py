"""Rate-limit and quota arithmetic: pure functions of explicit times, tested with hypothesis.

A **token bucket** holds up to ``burst`` tokens and refills at ``rate`` tokens per second; a
request takes one token or is refused with the time until one is available. **Quotas** count
requests per UTC calendar day and month; a refused request does not count.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    """Seconds until the limit is fully available again (RateLimit-Reset)."""
    retry_after_s: int = 0
    """When refused: whole seconds to wait (Retry-After), at least 1."""
    code: str = ""
    """RATE_LIMITED or QUOTA_EXCEEDED when refused."""


def take(bucket: Bucket | None, rate: float, burst: int, now: float) -> tuple[Bucket, Decision]:
    """Take one token at time ``now``; returns the new bucket state and the decision."""
    burst = max(1, burst)
    if bucket is None:
        tokens = float(burst)
    else:
        elapsed = max(0.0, now - bucket.updated)
        tokens = min(float(burst), bucket.tokens + elapsed * rate)
    if tokens >= 1.0:
        tokens -= 1.0
        return Bucket(tokens, now), _bucket_decision(True, tokens, rate, burst)
    return Bucket(tokens, now), _bucket_decision(False, tokens, rate, burst)


def _bucket_decision(allowed: bool, tokens: float, rate: float, burst: int) -> Decision:
    full_in = (burst - tokens) / rate if rate > 0 else 0.0
    retry = 0
    if not allowed:
        retry = max(1, math.ceil((1.0 - tokens) / rate)) if rate > 0 else 86_400
    return Decision(
        allowed,
        limit=burst,
        remaining=max(0, math.floor(tokens)),
        reset_s=max(0, math.ceil(full_in)),
        retry_after_s=retry,
        code="" if allowed else "RATE_LIMITED",
    )


def day_window(now: float) -> tuple[str, float]:
    """The UTC day containing ``now``: its key and the Unix time it ends."""
    moment = datetime.fromtimestamp(now, UTC)
    start = datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp()
    return moment.strftime("%Y%m%d"), start + 86_400


def month_window(now: float) -> tuple[str, float]:
    """The UTC calendar month containing ``now``: its key and the Unix time it ends."""
    moment = datetime.fromtimestamp(now, UTC)
    days = calendar.monthrange(moment.year, moment.month)[1]
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp()
    return moment.strftime("%Y%m"), start + days * 86_400


def quota(used_before: int, limit: int, now: float, ends_at: float) -> Decision:
    """Whether one more request fits a quota of which ``used_before`` are used."""
    reset = max(1, math.ceil(ends_at - now))
    if used_before < limit:
        return Decision(True, limit, limit - used_before - 1, reset)
    return Decision(False, limit, 0, reset, retry_after_s=reset, code="QUOTA_EXCEEDED")


def tightest(decisions: list[Decision]) -> Decision | None:
    """The decision to report: the first refusal, else the one with the fewest left."""
    if not decisions:
        return None
    refused = [d for d in decisions if not d.allowed]
    if refused:
        return max(refused, key=lambda d: d.retry_after_s)
    return min(decisions, key=lambda d: d.remaining)
