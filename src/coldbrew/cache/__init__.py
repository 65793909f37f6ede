"""Caches: in-process and Redis, behind one small protocol (``base.Cache``).

Used by the instances' feature lookups (``runtime/features.py``) and by the data plane's
prediction cache. Imports only the core, so any layer may use it.
"""

from coldbrew.cache.base import Cache
from coldbrew.cache.local import LocalCache

__all__ = ["Cache", "LocalCache", "open_cache"]


def open_cache(url: str | None, max_entries: int = 100_000) -> Cache:
    """``redis://...`` -> a Redis cache; None or ``local`` -> one in this process."""
    if url and url.startswith(("redis://", "rediss://", "unix://")):
        from coldbrew.cache.redis import RedisCache

        return RedisCache(url)
    return LocalCache(max_entries)
