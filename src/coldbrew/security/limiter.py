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
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {allowed, tostring(tokens), tostring(now)}
"""

_QUOTA_LUA = """
local limit = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used < limit then
  redis.call('INCR', KEYS[1])
  redis.call('EXPIREAT', KEYS[1], tonumber(ARGV[2]))
end
return used
"""


class RedisLimitState:
    """Limits shared by every gateway that points at the same Redis (``COLDBREW_REDIS_URL``)."""

    def __init__(self, url: str, namespace: str = "coldbrew:limits") -> None:
        import redis.asyncio as aioredis

        self.redis: Any = aioredis.from_url(url)
        self.namespace = namespace
        self._bucket = self.redis.register_script(_BUCKET_LUA)
        self._quota = self.redis.register_script(_QUOTA_LUA)

    async def take_bucket(self, key: str, rate: float, burst: int) -> Decision:
        burst = max(1, burst)
        allowed, tokens, _now = await self._bucket(
            keys=[f"{self.namespace}:bucket:{key}"], args=[rate, burst]
        )
        return limits._bucket_decision(bool(int(allowed)), float(tokens), rate, burst)

    async def take_quota(self, key: str, limit: int, period: str) -> Decision:
        now = time.time()
        window, ends_at = _window(period, now)
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
