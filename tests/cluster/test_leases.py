"""Instance slots shared by gateways: the Redis leases alone (a table of takes), and two pools
of one version on the in-process backend sharing them, as two gateways would."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis

from coldbrew import errors
from coldbrew.backends.inprocess import InProcessBackend
from coldbrew.cluster.leases import RedisSlotLeases
from coldbrew.runtime.config import FunctionConfig
from coldbrew.scaling.leases import LOCAL
from coldbrew.scaling.pool import Pool, TemplatePolicy, VersionInfo


@pytest.fixture
def client(redis_url: str) -> Any:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def _leases(client: Any, space: str, owner: str, ttl_s: float = 10.0) -> RedisSlotLeases:
    return RedisSlotLeases(client, space, owner, ttl_s, refusal_s=0)  # each take asks Redis


def test_leases_count_across_owners_and_come_back(client: Any) -> None:
    space = f"test:{uuid.uuid4().hex[:8]}"
    a, b = _leases(client, space, "gw-a"), _leases(client, space, "gw-b")
    first = a.take("fn:1", 2)
    second = b.take("fn:1", 2)
    assert first and second and first != second
    assert a.take("fn:1", 2) is None and b.take("fn:1", 2) is None  # both slots are leased
    assert a.take("fn:2", 2) is not None  # another version has slots of its own
    b.give_back("fn:1", second)
    assert a.take("fn:1", 2) is not None
    assert a.held() == {"fn:1": 2, "fn:2": 1}


def test_an_owner_that_stops_renewing_loses_its_leases(client: Any) -> None:
    space = f"test:{uuid.uuid4().hex[:8]}"
    dead, alive = _leases(client, space, "gw-dead", ttl_s=1), _leases(client, space, "gw-alive", 1)
    assert dead.take("fn:1", 1) is not None
    assert alive.take("fn:1", 1) is None
    alive_lease = None
    deadline = time.monotonic() + 5
    while alive_lease is None and time.monotonic() < deadline:
        time.sleep(0.2)
        alive_lease = alive.take("fn:1", 1)  # "dead" never renews: SIGKILL
    assert alive_lease is not None
    alive.renew()  # a live owner keeps its lease past the TTL
    time.sleep(0.6)
    alive.renew()
    time.sleep(0.6)
    assert dead.take("fn:1", 1) is None


def _pool(backend: InProcessBackend, leases: Any, most: int = 1, queue_s: float = 0.3) -> Pool:
    fields = {"handler": "handler:handler", "max_instances": most, "queue_timeout_s": queue_s}
    version = VersionInfo("leased", 1, "0" * 64, FunctionConfig.model_validate(fields), "/tmp")
    return Pool(version, backend, TemplatePolicy(enabled=False), leases=leases)


def test_two_pools_of_one_version_share_max_instances(client: Any) -> None:
    """Two gateways' pools of one version: the second cannot start while the first holds the
    only slot, and can once the first's instance ends."""

    async def scenario() -> None:
        space = f"test:{uuid.uuid4().hex[:8]}"
        backend = InProcessBackend({"leased": lambda e: e})
        first = _pool(backend, _leases(client, space, "gw-a"))
        second = _pool(backend, _leases(client, space, "gw-b"))
        instance, _ = await first.acquire()
        first.release(instance)
        with pytest.raises(errors.Throttled):
            await second.acquire()
        await first.close()  # its instance ends: the slot is given back
        instance, _ = await second.acquire()
        second.release(instance)
        await second.close()

    asyncio.run(scenario())


def test_one_gateway_asks_nothing_of_anyone() -> None:
    assert LOCAL.take("any", 1) == "local"
    assert LOCAL.give_back("any", "local") is None


def test_a_gateway_holding_every_slot_yields_its_share_to_a_waiting_one(client: Any) -> None:
    """Gateway A took both slots first; B's callers wait. A sees B waiting, retires one
    instance once its call is over, and B starts one in the slot it gave back."""

    async def scenario() -> None:
        space = f"test:{uuid.uuid4().hex[:8]}"
        backend = InProcessBackend({"leased": lambda e: e})
        a_leases = RedisSlotLeases(client, space, "gw-a", refusal_s=0.05)
        b_leases = RedisSlotLeases(client, space, "gw-b", refusal_s=0.05)
        first, second = _pool(backend, a_leases, 2, 10), _pool(backend, b_leases, 2, 10)
        held = [await first.acquire(), await first.acquire()]  # both slots, both busy
        waiting = asyncio.create_task(second.acquire())
        await asyncio.sleep(0.1)
        assert not waiting.done()  # B asked, was refused and said it waits
        a_leases.renew()  # A's periodic look (every second): B waits, A holds 2 of 2
        assert a_leases.surplus(first.template_key) == 1
        first.reap()  # retires one; it is busy, so it stops after its call
        assert first.reap() == 0 and sum(i.killed for i in first.instances) == 1
        for instance, _ in held:
            first.release(instance)
        deadline = time.monotonic() + 5
        while not waiting.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.06)
            second.reap()  # B's reaper retries the take: the slot A gave back is free
        instance, _ = await asyncio.wait_for(waiting, 1)
        second.release(instance)
        assert len(first.instances) == 1 and len(second.instances) == 1
        assert first._can_start() is False, "A may not take B's share back while B holds it"
        await first.close()
        await second.close()

    asyncio.run(scenario())
