"""Finding the route of a request: the registry's route table, read through a short cache.

Matching rules (most specific route wins, ``ANY`` matches every method, a greedy ``{proxy+}``
takes the rest of the path) are in ``coldbrew.registry.routes``; this is the gateway's side:
one table read per second at most, invalidated at once by writes made through this gateway.
"""

from __future__ import annotations

import asyncio
import time

from coldbrew.registry.routes import RouteRecord, RouteTable, best_match

CACHE_TTL_S = 1.0


class Router:
    """Matches requests against the stored routes without a database query per request."""

    def __init__(self, table: RouteTable, ttl_s: float = CACHE_TTL_S) -> None:
        self.table = table
        self.ttl_s = ttl_s
        self._routes: list[RouteRecord] = []
        self._expires = 0.0

    def invalidate(self) -> None:
        self._expires = 0.0

    async def routes(self) -> list[RouteRecord]:
        if time.monotonic() >= self._expires:
            self._routes = await asyncio.to_thread(self.table.list)
            self._expires = time.monotonic() + self.ttl_s
        return self._routes

    async def match(self, method: str, path: str) -> tuple[RouteRecord, dict[str, str]] | None:
        return best_match(await self.routes(), method, path)
