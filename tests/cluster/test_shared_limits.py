"""Shared state that gateways ask on the hot path, asked less often (issue 15): a rate limit
taken from Redis in small reserves per gateway, and a refused instance slot remembered a moment.

Two ``RedisLimitState`` objects on one Redis stand for two gateways; the counts of Redis round
trips are the feature (without it, one per call)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import redis

from coldbrew.cluster.leases import RedisSlotLeases
from coldbrew.security.limiter import RESERVE_S, RedisLimitState, TokenReserve


def _two_gateways(redis_url: str) -> tuple[RedisLimitState, RedisLimitState]:
    space = f"test:{uuid.uuid4().hex[:8]}"
    return RedisLimitState(redis_url, space), RedisLimitState(redis_url, space)


def test_a_busy_bucket_costs_a_round_trip_per_reserve(redis_url: str) -> None:
    async def scenario() -> tuple[int, int]:
        gateways = _two_gateways(redis_url)
        allowed = 0
        for i in range(2000):  # far below the limit: reserves grow to 100 tokens
            allowed += (await gateways[i % 2].take_bucket("fn:busy", 1000, 100_000)).allowed
        trips = sum(g.round_trips for g in gateways)
        for gateway in gateways:
            await gateway.close()
        return allowed, trips

    allowed, trips = asyncio.run(scenario())
    assert allowed == 2000
    assert trips < 200, f"{trips} Redis round trips for 2,000 calls"  # 2,000 without


def test_a_bucket_shared_by_reserves_is_never_overdrawn(redis_url: str) -> None:
    async def scenario() -> tuple[int, float]:
        gateways = _two_gateways(redis_url)
        started = time.monotonic()
        allowed = 0
        for i in range(1500):  # a bucket of 500 refilling at 500/s, overloaded
            allowed += (await gateways[i % 2].take_bucket("fn:full", 500, 500)).allowed
        elapsed = time.monotonic() - started
        for gateway in gateways:
            await gateway.close()
        return allowed, elapsed

    allowed, elapsed = asyncio.run(scenario())
    # What the bucket held plus what it refilled: a token is spent at most RESERVE_S after
    # it was taken from the shared bucket.
    assert 500 <= allowed <= 500 + 500 * (elapsed + RESERVE_S), (allowed, elapsed)


def test_a_small_bucket_is_exact_across_gateways(redis_url: str) -> None:
    async def scenario() -> list[bool]:
        gateways = _two_gateways(redis_url)
        out = [(await gateways[i % 2].take_bucket("key", 0.01, 4)).allowed for i in range(6)]
        for gateway in gateways:
            await gateway.close()
        return out

    assert asyncio.run(scenario()) == [True, True, True, True, False, False]


def test_an_unspent_reserve_goes_back_to_the_shared_bucket(redis_url: str) -> None:
    reserve = TokenReserve(cap=20)
    reserve.left, reserve.until, reserve.want = 3, time.monotonic() - 1, 8  # outlived RESERVE_S
    assert not reserve.spend(time.monotonic())
    assert reserve.to_give_back(time.monotonic()) == 3 and reserve.want == 4

    async def scenario() -> tuple[float, float]:
        state = RedisLimitState(redis_url, f"test:{uuid.uuid4().hex[:8]}")
        key = [f"{state.namespace}:bucket:k"]
        rate, burst = 0.001, 100  # no refill to speak of during the test
        granted, before, _ = await state._bucket(keys=key, args=[rate, burst, 50, 0])
        assert int(granted) == 50
        granted, after, _ = await state._bucket(keys=key, args=[rate, burst, 1, 10])
        assert int(granted) == 1
        await state.close()
        return float(before), float(after)

    before, after = asyncio.run(scenario())
    assert round(after - before, 2) == 9.0  # 10 given back, 1 taken


def test_a_refused_slot_is_not_asked_for_again_at_once(redis_url: str) -> None:
    client: Any = redis.Redis.from_url(redis_url)
    space = f"test:{uuid.uuid4().hex[:8]}"
    holder = RedisSlotLeases(client, space, "gw-a")
    asker = RedisSlotLeases(client, space, "gw-b", refusal_s=0.2)
    lease = holder.take("fn:1", 1)
    assert lease is not None
    assert all(asker.take("fn:1", 1) is None for _ in range(100))
    assert asker.asked == 1, "one round trip for 100 refused takes"
    holder.give_back("fn:1", lease)
    time.sleep(0.25)  # another gateway's freed slot is seen once the refusal is over
    assert asker.take("fn:1", 1) is not None and asker.asked == 2
    client.close()
