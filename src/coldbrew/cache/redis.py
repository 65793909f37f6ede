"""A Redis cache shared by every process that opens the same URL.

Entries are plain keys with a PX expiry; the fill lock is ``SET <key>:lock 1 NX PX``, so one
process fills a missing key while the others wait for the value instead of also asking the
source. Every Redis failure is ``CacheUnavailable`` (callers fall back to the source): a cache
outage costs speed, never answers.
"""

from __future__ import annotations

import contextlib

import redis as redis_lib

from coldbrew.cache.base import CacheUnavailable

SOCKET_TIMEOUT_S = 0.5


class RedisCache:
    shared = True

    def __init__(self, url: str, socket_timeout_s: float = SOCKET_TIMEOUT_S) -> None:
        self.client = redis_lib.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
        )

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get(key)  # type: ignore[return-value]
        except redis_lib.RedisError as exc:
            raise CacheUnavailable(str(exc)) from None

    def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        try:
            self.client.set(key, value, px=max(1, int(ttl_s * 1000)))
        except redis_lib.RedisError as exc:
            raise CacheUnavailable(str(exc)) from None

    def lock(self, key: str, ttl_s: float) -> bool:
        try:
            return bool(self.client.set(key + ":lock", b"1", nx=True, px=max(1, int(ttl_s * 1000))))
        except redis_lib.RedisError as exc:
            raise CacheUnavailable(str(exc)) from None

    def unlock(self, key: str) -> None:
        with contextlib.suppress(redis_lib.RedisError):  # else it expires by itself
            self.client.delete(key + ":lock")

    def close(self) -> None:
        self.client.close()
