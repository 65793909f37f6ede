"""``max_instances`` across gateways: a sorted set per version in Redis, one member per live
instance, scored by when its lease expires.

A gateway renews its leases every ``ttl_s / 4`` seconds; a gateway killed with SIGKILL renews
nothing, so its slots come back after at most ``ttl_s``. Taking a lease is one Lua script
(drop the expired, count, add), so two gateways racing for the last slot cannot both win.

A refusal is remembered for ``refusal_s`` (0.25 s). Pools ask for a slot whenever a call finds
every local instance busy and the pool is under ``max_instances`` locally, which under load is
most calls once the other gateways hold the rest of the slots; the question is synchronous, on
the event loop, so asking Redis each time put a blocking round trip on the hot path (issue 15:
~6 % of a worker's samples at 64 connections). Remembering "no" costs nothing in correctness
(a remembered refusal grants nothing): a slot another gateway frees is seen up to ``refusal_s``
later, and one this gateway gives back is seen at once.

**Fair shares.** Slots go to whoever asks first, so one gateway can end up holding them all
(it took the load first) while another's callers wait for a slot that never comes: under
steady load no instance is ever idle long enough to be given back. So a refused gateway says
it is waiting (a second sorted set per version, ``...:wanting``, entries living
``want_s``), and while another gateway waits:

- a take beyond this gateway's fair share, ``ceil(max_instances / (1 + gateways waiting))``,
  is refused even if a slot is free (the free slot is left to the waiting one);
- ``surplus`` says how many slots this gateway holds beyond that share (refreshed every
  second with the renewals); its pools retire that many instances (idle ones first, busy ones
  after their calls: ``Pool.reap``), and the slots go to the waiting gateway.

``max_instances`` itself is never exceeded: the count and the add are one script.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from typing import Any

log = logging.getLogger("coldbrew.cluster")

_TAKE = """
local slots, wanting = KEYS[1], KEYS[2]
local now, limit, owner = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[6]
redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
redis.call('ZREMRANGEBYSCORE', wanting, '-inf', now)
local held, mine = redis.call('ZRANGE', slots, 0, -1), 0
for _, lease in ipairs(held) do
  if string.sub(lease, 1, #owner + 1) == owner .. ':' then mine = mine + 1 end
end
local others = redis.call('ZCARD', wanting) - (redis.call('ZSCORE', wanting, owner) and 1 or 0)
if #held >= limit or (others > 0 and mine >= math.ceil(limit / (others + 1))) then
  redis.call('ZADD', wanting, ARGV[7], owner)
  redis.call('EXPIRE', wanting, ARGV[5])
  return 0
end
redis.call('ZADD', slots, ARGV[3], ARGV[4])
redis.call('EXPIRE', slots, ARGV[5])
redis.call('ZREM', wanting, owner)
return 1
"""
"""Drop the expired; refuse when every slot is leased, or when other gateways wait and this
one holds its fair share (it is then waiting too); else add the lease."""


class RedisSlotLeases:
    """``scaling.leases.SlotLeases`` shared through Redis (sync client: microseconds on
    loopback, and called only before a cold start)."""

    def __init__(
        self,
        client: Any,
        namespace: str,
        owner: str,
        ttl_s: float = 10.0,
        refusal_s: float = 0.25,
        want_s: float = 2.0,
    ) -> None:
        self.client = client
        self.prefix = f"{namespace}:slots:"
        self.owner = owner
        self.ttl_s = ttl_s
        self.refusal_s = refusal_s
        self.want_s = want_s
        self._take = client.register_script(_TAKE)
        self._held: dict[str, set[str]] = {}  # version -> leases of this gateway
        self._limits: dict[str, int] = {}  # version -> its max_instances (the last take's)
        self._refused: dict[str, float] = {}  # version -> monotonic time its refusal ends
        self._surplus: dict[str, int] = {}  # version -> slots held beyond the fair share
        self.asked = 0
        """Round trips ``take`` made to Redis (the bench and tests read it)."""
        self._task: asyncio.Task[None] | None = None

    def take(self, version: str, limit: int) -> str | None:
        if self._refused.get(version, 0.0) > time.monotonic():
            return None  # refused a moment ago: do not ask again yet
        lease = f"{self.owner}:{secrets.token_hex(4)}"
        now = time.time()
        args = [now, limit, now + self.ttl_s, lease, int(self.ttl_s) + 60, self.owner]
        args.append(now + self.want_s)
        self.asked += 1
        try:
            keys = [self.prefix + version, self.prefix + version + ":wanting"]
            granted = self._take(keys=keys, args=args)
        except Exception:  # Redis down: one gateway's own count still bounds it
            log.warning("instance slot leases unavailable (Redis); counting locally", exc_info=True)
            return "local"
        if not granted:
            self._refused[version] = time.monotonic() + self.refusal_s
            return None
        self._refused.pop(version, None)
        self._held.setdefault(version, set()).add(lease)
        self._limits[version] = limit
        return lease

    def surplus(self, version: str) -> int:
        """Slots of ``version`` this gateway holds beyond its fair share while other gateways
        wait for one (as of the last refresh, at most a second old): instances to retire."""
        return self._surplus.get(version, 0)

    def give_back(self, version: str, lease: str) -> None:
        held = self._held.get(version)
        if held is None or lease not in held:
            return
        self._refused.pop(version, None)  # the slot just freed is there for the next take
        if self._surplus.get(version):
            self._surplus[version] -= 1  # one fewer to retire until the next refresh
        held.discard(lease)
        if not held:
            self._held.pop(version, None)
        with contextlib.suppress(Exception):  # it expires by itself
            pipe = self.client.pipeline(transaction=False)
            pipe.zrem(self.prefix + version, lease)
            # Giving a slot back: this gateway does not wait for one now (if its callers still
            # do, its next refused take says so again).
            pipe.zrem(self.prefix + version + ":wanting", self.owner)
            pipe.execute()

    def held(self) -> dict[str, int]:
        return {version: len(leases) for version, leases in self._held.items()}

    def renew(self) -> None:
        """Extend this gateway's leases, and see who waits for the versions it holds."""
        now = time.time()
        held = list(self._held.items())
        pipe = self.client.pipeline(transaction=False)
        for version, leases in held:
            pipe.zadd(self.prefix + version, dict.fromkeys(leases, now + self.ttl_s), xx=True)
            pipe.zrangebyscore(self.prefix + version + ":wanting", now, "+inf")
        replies = pipe.execute()
        surplus = {}
        for (version, leases), waiting in zip(held, replies[1::2], strict=True):
            others = sum(1 for w in waiting if w.decode() != self.owner)
            if others:
                share = math.ceil(self._limits.get(version, len(leases)) / (others + 1))
                surplus[version] = max(0, len(leases) - share)
        self._surplus = surplus

    async def start(self) -> None:
        self._task = asyncio.create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(min(self.ttl_s / 4, 1.0))
            try:
                await asyncio.to_thread(self.renew)
            except Exception:
                log.warning("could not renew instance slot leases", exc_info=True)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for version, leases in list(self._held.items()):
            with contextlib.suppress(Exception):
                self.client.zrem(self.prefix + version, *leases)
        self._held.clear()
