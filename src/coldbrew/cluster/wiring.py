"""The cluster side of one gateway, built from settings: in-process without Redis, shared
through ``COLDBREW_REDIS_URL`` with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coldbrew.cluster.identity import GatewayIdentity, namespace
from coldbrew.cluster.leases import RedisSlotLeases
from coldbrew.cluster.members import Describe, LocalMembers, RedisMembers
from coldbrew.settings import Settings


@dataclass
class Cluster:
    identity: GatewayIdentity
    namespace: str
    members: LocalMembers
    leases: RedisSlotLeases | None = None
    """None: one gateway's pools count their own instances (scaling.leases.LOCAL)."""
    redis: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, describe: Describe) -> Cluster:
        identity = GatewayIdentity.here()
        space = namespace(settings.registry_url())
        if not settings.redis_url:
            return cls(identity, space, LocalMembers(identity, describe))
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        return cls(
            identity,
            space,
            RedisMembers(client, space, identity, describe),
            RedisSlotLeases(client, space, identity.id),
            client,
        )

    async def start(self) -> None:
        await self.members.start()
        if self.leases:
            await self.leases.start()

    async def stop(self) -> None:
        await self.members.stop()
        if self.leases:
            await self.leases.stop()
        if self.redis is not None:
            self.redis.close()
