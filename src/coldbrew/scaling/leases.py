"""Instance slots of a version shared by several gateways: ``max_instances`` across processes.

A pool asks for a lease before it starts an instance and gives it back when the instance ends.
One gateway needs nothing of the kind (its pool counts its own instances), so the default
grants every lease without a look elsewhere; ``coldbrew.cluster.leases.RedisSlotLeases`` is the
shared implementation used when several gateways share a Redis (docs/CLUSTER.md).
"""

from __future__ import annotations

from typing import Protocol


class SlotLeases(Protocol):
    def take(self, version: str, limit: int) -> str | None:
        """A lease on one of ``limit`` instance slots of ``version`` (the pool's template key,
        which names the content too), or None when every slot is leased elsewhere. It must be
        quick: pools call it on the event loop, before a cold start only."""
        ...

    def give_back(self, version: str, lease: str) -> None:
        """The instance of ``lease`` ended; its slot is free again."""
        ...

    def surplus(self, version: str) -> int:
        """Slots of ``version`` this gateway should give up for other gateways waiting for one
        (their fair share); the pool retires that many instances. Quick, no I/O."""
        ...


class LocalSlotLeases:
    """One gateway: the pool's own instance count is the whole truth."""

    def take(self, version: str, limit: int) -> str | None:
        return "local"

    def give_back(self, version: str, lease: str) -> None:
        return None

    def surplus(self, version: str) -> int:
        return 0


LOCAL = LocalSlotLeases()
