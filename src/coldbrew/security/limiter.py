"""Where limit state lives: in this process (default) or in Redis, shared by every gateway.

Both apply the arithmetic of ``limits.py``. The Redis backend runs it as Lua scripts, so a
check-and-take is one atomic step even with many gateways, and uses the Redis clock so that
gateways on different machines agree on time.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from coldbrew.security import limits
from coldbrew.security.limits import Bucket, Decision
from coldbrew.security.principal import KeyLimits


class LimitState(Protocol):
    async def take_bucket(self, key: str, rate: float, burst: int) -> Decision: ...

    async def take_quota(self, key: str, limit: int, period: str) -> Decision: ...

    async def close(self) -> None: ...


def _window(period: str, now: float) -> tuple[str, float]:
    return limits.day_window(now) if period == "day" else limits.month_window(now)


class MemoryLimitState:
    """One process's limits. Entries of past windows are dropped as windows roll over."""

    def __init__(self) -> None:
        self.buckets: dict[str, Bucket] = {}
        self.counts: dict[str, int] = {}

    async def take_bucket(self, key: str, rate: float, burst: int) -> Decision:
        bucket, decision = limits.take(self.buckets.get(key), rate, burst, time.time())
        self.buckets[key] = bucket
        return decision

    async def take_quota(self, key: str, limit: int, period: str) -> Decision:
        now = time.time()
        window, ends_at = _window(period, now)
        slot = f"{key}:{period}:{window}"
        if slot not in self.counts:
            stale = [k for k in self.counts if k.startswith(f"{key}:{period}:")]
            for old in stale:
                del self.counts[old]
        used = self.counts.get(slot, 0)
        decision = limits.quota(used, limit, now, ends_at)
        if decision.allowed:
            self.counts[slot] = used + 1
        return decision

    async def close(self) -> None:
        return None


_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local giving_back = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
end
tokens = math.min(burst, tokens + giving_back)
local granted = 0
if tokens >= 1 then
  granted = math.min(want, math.floor(tokens))
  tokens = tokens - granted
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {granted, tostring(tokens), tostring(now)}
"""
"""Takes up to ``want`` whole tokens (none unless one is there), after putting back the
``giving_back`` a gateway took earlier and did not spend."""

_QUOTA_LUA = """
local limit = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used < limit then
  redis.call('INCR', KEYS[1])
  redis.call('EXPIREAT', KEYS[1], tonumber(ARGV[2]))
end
return used
"""


RESERVE_S = 0.1
"""How long a gateway may keep tokens it took ahead (``TokenReserve``)."""


def reserve_cap(rate: float, burst: int) -> int:
    """Most tokens one gateway takes ahead: a tenth of the burst, at most 0.1 s of the rate."""
    return max(1, min(burst // 10, int(rate * RESERVE_S)))


class TokenReserve:
    """Tokens of one shared bucket that this gateway took ahead of its calls.

    A call with a reserve left is admitted without asking Redis. When the reserve runs out
    while fresh the next take asks for twice as many, up to ``cap`` (``reserve_cap``: buckets
    under 20 tokens or 20/s are asked once per call, exactly as before); a reserve not spent
    within ``RESERVE_S`` is given back with the next take, and that take asks for half.

    The shared bucket is never overdrawn (every token admitted was taken from it atomically).
    What changes, with N gateways, is timing: a gateway may spend up to ``cap`` tokens up to
    ``RESERVE_S`` after taking them, and a caller may be refused while the other gateways hold
    up to (N - 1) x ``cap`` unspent tokens for at most ``RESERVE_S`` (docs/CLUSTER.md,
    "Limits across gateways"). A refused take is not repeated before the bucket can have
    refilled one token (at most ``RESERVE_S``): tokens another gateway gives back meanwhile
    are seen that much later."""

    __slots__ = ("cap", "empty_until", "left", "seen_tokens", "until", "want")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.want = 1
        self.left = 0
        self.until = 0.0
        self.seen_tokens = 0.0
        """The shared bucket's tokens at the last take (for RateLimit-Remaining)."""
        self.empty_until = 0.0
        """After a refusal: no token refills before then (and at most ``RESERVE_S``), so an
        overloaded bucket is not asked again per refused call either."""

    def spend(self, now: float) -> bool:
        if self.left > 0 and now < self.until:
            self.left -= 1
            return True
        return False

    def to_give_back(self, now: float) -> int:
        """Tokens left over, handed back with the next take; sizes that take."""
        unspent, self.left = self.left, 0
        if unspent:  # it outlived RESERVE_S: the demand is lower than the reserve was
            self.want = max(1, self.want // 2)
        elif now < self.until:  # it ran out while fresh: the demand is higher
            self.want = min(self.cap, self.want * 2)
        return unspent


class RedisLimitState:
    """Limits shared by every gateway that points at the same Redis (``COLDBREW_REDIS_URL``).

    Token buckets are taken in small batches per gateway (``TokenReserve``), so a busy
    rate-limited function costs one Redis round trip per batch rather than per call; quotas
    are counted in Redis on every call (a quota is a count, exact across gateways)."""

    def __init__(self, url: str, namespace: str = "coldbrew:limits") -> None:
        import redis.asyncio as aioredis

        self.redis: Any = aioredis.from_url(url)
        self.namespace = namespace
        self._bucket = self.redis.register_script(_BUCKET_LUA)
        self._quota = self.redis.register_script(_QUOTA_LUA)
        self._reserves: dict[str, TokenReserve] = {}
        self.round_trips = 0
        """Bucket and quota scripts run (the bench reads it)."""

    async def take_bucket(self, key: str, rate: float, burst: int) -> Decision:
        burst = max(1, burst)
        cap = reserve_cap(rate, burst)
        reserve = self._reserves.get(key)
        if reserve is None or reserve.cap != cap:  # new, or its limits changed
            reserve = self._reserves[key] = TokenReserve(cap)
        now = time.monotonic()
        if reserve.spend(now):
            return limits._bucket_decision(True, reserve.seen_tokens + reserve.left, rate, burst)
        if now < reserve.empty_until:
            return limits._bucket_decision(False, reserve.seen_tokens, rate, burst)
        giving_back = reserve.to_give_back(now)
        self.round_trips += 1
        granted, tokens, _now = await self._bucket(
            keys=[f"{self.namespace}:bucket:{key}"], args=[rate, burst, reserve.want, giving_back]
        )
        granted, reserve.seen_tokens = int(granted), float(tokens)
        if granted == 0:
            refill_s = (1.0 - reserve.seen_tokens) / rate if rate > 0 else RESERVE_S
            reserve.empty_until = time.monotonic() + min(RESERVE_S, refill_s)
            return limits._bucket_decision(False, reserve.seen_tokens, rate, burst)
        # += : a concurrent take of the same key may have refilled it meanwhile
        reserve.left += granted - 1
        reserve.until = time.monotonic() + RESERVE_S
        return limits._bucket_decision(True, reserve.seen_tokens + reserve.left, rate, burst)

    async def take_quota(self, key: str, limit: int, period: str) -> Decision:
        now = time.time()
        window, ends_at = _window(period, now)
        self.round_trips += 1
        used = await self._quota(
            keys=[f"{self.namespace}:quota:{key}:{period}:{window}"],
            args=[limit, int(ends_at) + 3600],
        )
        return limits.quota(int(used), limit, now, ends_at)

    async def close(self) -> None:
        await self.redis.aclose()


class Limiter:
    """Applies a key's limits and a function's limits to one invocation."""

    def __init__(self, state: LimitState) -> None:
        self.state = state

    async def check(
        self,
        caller: str | None,
        key_limits: KeyLimits,
        function: str | None,
        function_rate: float | None,
        function_burst: int | None,
    ) -> Decision | None:
        decisions: list[Decision] = []
        if caller and key_limits.rate_per_s:
            burst = key_limits.burst or max(1, int(key_limits.rate_per_s))
            decisions.append(await self.state.take_bucket(caller, key_limits.rate_per_s, burst))
        if function and function_rate:
            burst = function_burst or max(1, int(function_rate))
            decisions.append(await self.state.take_bucket(f"fn:{function}", function_rate, burst))
        if any(not d.allowed for d in decisions):
            return limits.tightest(decisions)
        if caller and key_limits.daily_quota is not None:
            decisions.append(await self.state.take_quota(caller, key_limits.daily_quota, "day"))
        if caller and key_limits.monthly_quota is not None and all(d.allowed for d in decisions):
            decisions.append(await self.state.take_quota(caller, key_limits.monthly_quota, "month"))
        return limits.tightest(decisions)


def limit_state(redis_url: str | None) -> LimitState:
    return RedisLimitState(redis_url) if redis_url else MemoryLimitState()
