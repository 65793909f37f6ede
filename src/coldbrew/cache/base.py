"""The cache protocol: bytes under string keys with a time to live, plus a short lock per key
so that processes sharing a cache can agree on who fills a missing entry (single-flight)."""

from __future__ import annotations

from typing import Protocol


class CacheUnavailable(Exception):
    """The cache could not be reached; callers treat it as a miss and carry on."""


class Cache(Protocol):
    shared: bool
    """Whether other processes see the same entries (then ``lock`` means something)."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    def lock(self, key: str, ttl_s: float) -> bool:
        """Take the fill lock of ``key`` for at most ``ttl_s``; False if another holds it."""

    def unlock(self, key: str) -> None: ...

    def close(self) -> None: ...
