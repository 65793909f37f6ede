"""Which gateways are up: each one writes what it holds to a shared hash every
``interval_s``; a gateway not heard from for ``3 * interval_s`` is gone (SIGKILL included).

One gateway without Redis is its own whole membership (``LocalMembers``). The view is grouped
by node for ``GET /v1/nodes`` and ``coldbrew nodes`` (gateway/native/nodes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from coldbrew.cluster.identity import GatewayIdentity

log = logging.getLogger("coldbrew.cluster")
Describe = Callable[[], dict[str, Any]]
"""What this gateway holds now (instances, templates, pools): built by the platform."""


def gateway_record(identity: GatewayIdentity, describe: Describe) -> dict[str, Any]:
    now = time.time()
    return {
        "id": identity.id,
        "node": identity.node,
        "pid": identity.pid,
        "worker": identity.worker,
        "started_at": round(identity.started_at, 3),
        "uptime_s": round(now - identity.started_at, 1),
        "seen_at": round(now, 3),
        **describe(),
    }


def by_node(gateways: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gateways grouped by node, with each node's totals."""
    nodes: dict[str, dict[str, Any]] = {}
    for gateway in sorted(gateways, key=lambda g: (g["node"], g.get("worker") or 0, g["pid"])):
        empty = {"node": gateway["node"], "instances": 0, "templates": 0, "gateways": []}
        node = nodes.setdefault(gateway["node"], empty)
        node["instances"] += int(gateway.get("instances", 0))
        node["templates"] += int(gateway.get("templates", 0))
        node["gateways"].append(gateway)
    return list(nodes.values())


class LocalMembers:
    def __init__(self, identity: GatewayIdentity, describe: Describe) -> None:
        self.identity = identity
        self.describe = describe

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def gateways(self) -> list[dict[str, Any]]:
        return [gateway_record(self.identity, self.describe)]


class RedisMembers(LocalMembers):
    def __init__(
        self,
        client: Any,
        namespace: str,
        identity: GatewayIdentity,
        describe: Describe,
        interval_s: float = 2.0,
    ) -> None:
        super().__init__(identity, describe)
        self.client = client
        self.key = f"{namespace}:gateways"
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._beat()
        self._task = asyncio.create_task(self._beat_forever())

    async def _beat(self) -> None:
        record = orjson.dumps(gateway_record(self.identity, self.describe))
        await asyncio.to_thread(self.client.hset, self.key, self.identity.id, record)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self._beat()
            except Exception:
                log.warning("could not publish this gateway's heartbeat", exc_info=True)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.client.hdel, self.key, self.identity.id)

    async def gateways(self) -> list[dict[str, Any]]:
        try:
            raw = await asyncio.to_thread(self.client.hgetall, self.key)
        except Exception:  # Redis down: this gateway still knows itself
            log.warning("could not read the other gateways' heartbeats", exc_info=True)
            return await super().gateways()
        now, alive, dead = time.time(), [], []
        for gateway_id, value in raw.items():
            record = orjson.loads(value)
            if record["id"] == self.identity.id:
                continue  # this one, fresh, below
            if now - record["seen_at"] <= 3 * self.interval_s:
                alive.append(record)
            elif now - record["seen_at"] > 60:
                dead.append(gateway_id)
        if dead:  # long gone (killed): forget them
            await asyncio.to_thread(self.client.hdel, self.key, *dead)
        return [gateway_record(self.identity, self.describe), *alive]
