"""Rate limits and quotas, per key and per function, for every invocation on every protocol."""

from __future__ import annotations

from coldbrew import errors
from coldbrew.security.errors import QuotaExceeded, RateLimited
from coldbrew.security.limiter import Limiter
from coldbrew.security.limits import Decision
from coldbrew.security.principal import Principal


def applies(principal: Principal, rate: float | None) -> bool:
    """Whether an invocation has any limit to check: the function's ``rate_limit`` or one of
    the key's. The common case (none) is answered here, without a coroutine."""
    return bool(rate) or principal.limits.any()


async def admit(
    limiter: Limiter,
    principal: Principal,
    function: str,
    rate: float | None,
    burst: int | None,
) -> Decision | None:
    """Take one token for this invocation, or raise RATE_LIMITED / QUOTA_EXCEEDED.

    The key's own limits and the function's ``rate_limit`` are checked together, so that a
    refused call takes nothing from the other bucket's budget beyond its own check."""
    if not applies(principal, rate):
        return None
    decision = await limiter.check(principal.caller, principal.limits, function, rate, burst)
    if decision is not None and not decision.allowed:
        raise refusal(decision)
    return decision


def refusal(decision: Decision) -> errors.Throttled:
    cls = QuotaExceeded if decision.code == "QUOTA_EXCEEDED" else RateLimited
    what = "quota" if cls is QuotaExceeded else "rate limit"
    exc = cls(f"{what} exceeded; retry in {decision.retry_after_s} s", decision.retry_after_s)
    exc.decision = decision  # type: ignore[attr-defined]
    return exc


def limit_headers(decision: Decision) -> list[tuple[str, str]]:
    """IETF draft RateLimit headers for a decision."""
    return [
        ("ratelimit-limit", str(decision.limit)),
        ("ratelimit-remaining", str(decision.remaining)),
        ("ratelimit-reset", str(decision.reset_s)),
    ]
