"""Declared feature lookups, run in the instance before the handler (docs/DATA.md).

    [[features]] name = "region", sql = "select ... where cell = :cell",
                 key = "$.location.cell", database = "DB_URL", cache = "redis", cache_ttl_s = 300

For each invocation and each declared feature: the key is read from the event, looked up in
the cache (``local``: this instance's memory; ``redis``: shared by every instance, on every
gateway), and on a miss queried from the database; the row (a dict of its columns, or the
declared default) lands in ``context.features[name]``. A feature declared without ``key`` or
``key_fn`` is looked up only when the handler asks, ``context.features.lookup(name, key)``,
through the same path (``Lookup.fetch``).

- Per instance, opened after fork: the database engine and its pool (``concurrency``
  connections), the worker threads that run queries under a deadline, the Redis client. The
  version template only imports the libraries; ``os.register_at_fork`` drops anything a fork
  would otherwise share.
- Single-flight: concurrent misses of one key in an instance wait for one query; with Redis
  the fill lock (``cache/redis.py``) makes that one query per key across all instances.
- Negative caching: a missing row is remembered for ``negative_ttl_s`` like a found one.
- Never a hang: the whole lookup (cache, waiting for another filler, the query) has
  ``timeout_ms``; past it, or when the database fails, the declared ``default`` is used, else
  the invocation fails with FEATURES_UNAVAILABLE (503). A query stuck on a dead connection
  keeps its worker; when every worker is stuck, lookups fail at once instead of queueing.
"""

from __future__ import annotations

import contextlib
import decimal
import hashlib
import importlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import orjson

from coldbrew import errors
from coldbrew.cache.base import Cache, CacheUnavailable
from coldbrew.cache.local import LocalCache
from coldbrew.runtime import messages as m
from coldbrew.runtime.config import FeatureConfig, FunctionConfig

CACHE_URL_VARIABLE = "COLDBREW_FEATURE_CACHE_URL"
"""The Redis URL ``cache = "redis"`` lookups use; set in the instance's environment by the
gateway from ``COLDBREW_FEATURE_CACHE_URL``."""
_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\['([^']*)'\]")
_FOUND, _NEGATIVE = b"V", b"N"
_POLL_S = (0.001, 0.002, 0.005, 0.01)


class LookupFailed(Exception):
    """The invocation cannot run: ``code`` is what the caller gets."""

    code = "FEATURES_UNAVAILABLE"
    stats: list[m.FeatureStat] | None = None


errors.declare(LookupFailed.code, 503)  # it reaches the gateway as an outcome's code


class FeaturesUnavailable(LookupFailed):
    """The database (or the wait for another process's fill) did not answer in time."""


class FeatureKeyMissing(LookupFailed):
    """The event has no key for a feature without a default: the caller's mistake."""

    code = "VALIDATION_ERROR"


def load(config: FunctionConfig, function_name: str) -> FeatureLookups | None:
    """The version's lookups (ValueError for a bad declaration), or None without any."""
    return FeatureLookups(config, function_name) if config.features else None


def parse_path(path: str) -> list[str | int]:
    tokens: list[str | int] = []
    rest = path[1:]
    while rest:
        found = _TOKEN.match(rest)
        if not found:
            raise ValueError(f"cannot read JSON path {path!r} at {rest!r}")
        name, index, quoted = found.groups()
        tokens.append(int(index) if index is not None else (name or quoted or ""))
        rest = rest[found.end() :]
    return tokens


_ABSENT = object()


def value_at(event: Any, tokens: list[str | int]) -> Any:
    value = event
    for token in tokens:
        if isinstance(token, int):
            if not isinstance(value, list) or token >= len(value):
                return _ABSENT
            value = value[token]
        elif isinstance(value, dict) and token in value:
            value = value[token]
        else:
            return _ABSENT
    return _ABSENT if value is None or isinstance(value, dict | list) else value


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    return str(value)


def _reason(exc: BaseException) -> str:
    """One line of why, with any credentials of a URL in it cut out."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(exc).__name__}: " + re.sub(r"//[^/@\s]*@", "//***@", line)[:300]


def database_url(url: str) -> str:
    """Plain PostgreSQL URLs use psycopg 3 (SQLAlchemy's default would be psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Database:
    """One database URL's engine, pool and query workers in this instance (made on first use)."""

    def __init__(self, url: str, size: int, timeout_ms: float) -> None:
        self.url = database_url(url)
        self.size = size
        self.timeout_ms = timeout_ms
        self._engine: Any = None
        self._workers: ThreadPoolExecutor | None = None
        self._free = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self.queries = 0

    def _start(self) -> None:
        from sqlalchemy import create_engine

        connect_args: dict[str, Any] = {}
        if self.url.startswith("postgresql"):
            seconds = max(1, int(self.timeout_ms / 1000 + 0.999))
            connect_args = {
                "connect_timeout": seconds,
                "options": f"-c statement_timeout={int(self.timeout_ms)}",
            }
        self._engine = create_engine(
            self.url,
            pool_size=self.size,
            max_overflow=0,
            pool_timeout=self.timeout_ms / 1000,
            connect_args=connect_args,
        )
        self._workers = ThreadPoolExecutor(self.size, thread_name_prefix="coldbrew-features")

    def query(self, sql: Any, params: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """The first row as a dict, or None; FeaturesUnavailable on any failure or timeout."""
        if timeout_s <= 0 or not self._free.acquire(timeout=timeout_s):
            raise FeaturesUnavailable("every database connection of this instance is busy")
        with self._lock:
            if self._engine is None:
                self._start()
        assert self._workers is not None
        self.queries += 1
        future = self._workers.submit(self._run, sql, params)
        try:
            return future.result(timeout_s)
        except FutureTimeout:
            raise FeaturesUnavailable(
                f"the database did not answer within {self.timeout_ms:g} ms"
            ) from None
        except FeaturesUnavailable:
            raise
        except Exception as exc:
            # The function's log gets the driver's reason; the caller only the stable code.
            print(f"coldbrew: feature lookup failed: {_reason(exc)}", file=sys.stderr)
            raise FeaturesUnavailable(f"the database failed: {type(exc).__name__}") from None

    def _run(self, sql: Any, params: dict[str, Any]) -> dict[str, Any] | None:
        try:
            with self._engine.connect() as conn:
                row = conn.execute(sql, params).mappings().first()
            return dict(row) if row is not None else None
        finally:
            self._free.release()

    def forget(self) -> None:
        """In a forked child: the parent's engine, pool and threads are not ours."""
        self._engine, self._workers = None, None
        self._free = threading.BoundedSemaphore(self.size)
        self._lock = threading.Lock()


class _Flight:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: bytes | None = None
        self.error: Exception | None = None


class Lookup:
    """One declared feature: key -> cache -> (single-flight) database -> value."""

    def __init__(self, spec: FeatureConfig, prefix: str, cache: Cache | None, db: Database) -> None:
        self.spec = spec
        self.cache = cache
        self.db = db
        self.has_default = "default" in spec.model_fields_set
        self.tokens = parse_path(spec.key) if spec.key else []
        self._key_fn: Callable[[Any], Any] | None = None
        digest = hashlib.sha256(f"{spec.database}\0{spec.sql}".encode()).hexdigest()[:12]
        self.prefix = f"{prefix}:{spec.name}:{digest}:"
        self._sql: Any = None
        self._param = ""
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()
        self.negative_ttl_s = (
            spec.negative_ttl_s if spec.negative_ttl_s is not None else spec.cache_ttl_s
        )
        self.on_demand = spec.key is None and spec.key_fn is None
        """Declared without a key: never run before the handler, only by ``lookup(name, key)``."""

    def prepare(self) -> None:
        """Parse the SQL (in the version template: once, shared by every fork)."""
        from sqlalchemy import text

        self._sql = text(self.spec.sql)
        params = list(self._sql._bindparams)
        if len(params) != 1:
            raise ValueError(
                f"feature {self.spec.name!r}: the SQL must have exactly one named parameter "
                f"(like :cell), it has {len(params)}"
            )
        self._param = params[0]

    def key_of(self, event: Any) -> Any:
        if self.spec.key_fn:
            if self._key_fn is None:
                module, _, attr = self.spec.key_fn.partition(":")
                self._key_fn = getattr(importlib.import_module(module), attr)
            return self._key_fn(event)
        return value_at(event, self.tokens)

    def get(self, event: Any) -> tuple[Any, m.FeatureStat]:
        """The lookup before the handler: the key read from the event."""
        return self.fetch(self.key_of(event))

    def fetch(self, key: Any) -> tuple[Any, m.FeatureStat]:
        """Cache, single flight, database, under ``timeout_ms``: the one path every lookup takes,
        whether its key came from the event or from the handler (``context.features.lookup``)."""
        deadline = time.monotonic() + self.spec.timeout_ms / 1000
        if key is _ABSENT or key is None:
            if self.has_default:
                return self.spec.default, m.FeatureStat(self.spec.name, "default", 0.0)
            where = f"at {self.spec.key}" if self.spec.key else "(the handler passed None)"
            raise FeatureKeyMissing(f"feature {self.spec.name!r}: no key {where}")
        cache_key = self.prefix + orjson.dumps(key).decode()
        if len(cache_key) > 200:
            cache_key = self.prefix + hashlib.sha256(cache_key.encode()).hexdigest()
        stored = self._cached(cache_key)
        if stored is not None:
            return self._decode(stored), m.FeatureStat(self.spec.name, "hit", 0.0)
        started = time.perf_counter()
        try:
            stored, queried = self._fill(cache_key, key, deadline)
        except FeaturesUnavailable:
            if self.has_default:
                return self.spec.default, m.FeatureStat(self.spec.name, "error", 0.0)
            raise
        outcome = "miss" if queried else "hit"
        db_ms = (time.perf_counter() - started) * 1000 if queried else 0.0
        return self._decode(stored), m.FeatureStat(self.spec.name, outcome, db_ms)

    def _cached(self, cache_key: str) -> bytes | None:
        if self.cache is None:
            return None
        try:
            return self.cache.get(cache_key)
        except CacheUnavailable:
            return None

    def _decode(self, stored: bytes) -> Any:
        if stored[:1] == _FOUND:
            return orjson.loads(stored[1:])
        return self.spec.default if self.has_default else None

    def _fill(self, cache_key: str, key: Any, deadline: float) -> tuple[bytes, bool]:
        """(stored value, whether this call queried the database)."""
        with self._lock:
            flight = self._flights.get(cache_key)
            leader = flight is None
            if leader:
                flight = self._flights[cache_key] = _Flight()
        assert flight is not None
        if not leader:
            if not flight.done.wait(max(0.0, deadline - time.monotonic())):
                raise FeaturesUnavailable(f"feature {self.spec.name!r}: lookup timed out")
            if flight.error is not None:
                raise flight.error
            assert flight.value is not None
            return flight.value, False
        try:
            flight.value, queried = self._fill_shared(cache_key, key, deadline)
            return flight.value, queried
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                self._flights.pop(cache_key, None)
            flight.done.set()

    def _fill_shared(self, cache_key: str, key: Any, deadline: float) -> tuple[bytes, bool]:
        """Take the cache's fill lock, or wait for whoever holds it to store the value."""
        cache = self.cache
        if cache is None or not cache.shared:
            # Re-read: a flight that just ended (after our miss) has stored the value.
            stored = self._cached(cache_key)
            return (
                (stored, False)
                if stored is not None
                else (self._query(cache_key, key, deadline), True)
            )
        attempt = 0
        while True:
            try:
                if cache.lock(cache_key, self.spec.timeout_ms / 1000 * 2):
                    try:
                        # The holder before us may have stored it between our miss and our lock.
                        stored = cache.get(cache_key)
                        if stored is not None:
                            return stored, False
                        return self._query(cache_key, key, deadline), True
                    finally:
                        cache.unlock(cache_key)
                stored = cache.get(cache_key)
            except CacheUnavailable:
                return self._query(cache_key, key, deadline), True
            if stored is not None:
                return stored, False
            if time.monotonic() >= deadline:
                raise FeaturesUnavailable(f"feature {self.spec.name!r}: lookup timed out")
            time.sleep(_POLL_S[min(attempt, len(_POLL_S) - 1)])
            attempt += 1

    def _query(self, cache_key: str, key: Any, deadline: float) -> bytes:
        row = self.db.query(self._sql, {self._param: key}, deadline - time.monotonic())
        if row is None:
            stored, ttl = _NEGATIVE, self.negative_ttl_s
        else:
            stored = _FOUND + orjson.dumps(row, default=_json_default)
            ttl = self.spec.cache_ttl_s
        if self.cache is not None:
            with contextlib.suppress(CacheUnavailable):
                self.cache.set(cache_key, stored, ttl)
        return stored

    def forget(self) -> None:
        self._flights = {}
        self._lock = threading.Lock()


class FeatureLookups:
    """Every declared feature of one version, in one process."""

    def __init__(self, config: FunctionConfig, function_name: str) -> None:
        self.config = config
        self.function_name = function_name
        self.lookups: list[Lookup] = []
        self._local = LocalCache()
        self._shared: Cache | None = None
        self._databases: dict[str, Database] = {}
        self._started = False
        self._lock = threading.Lock()
        for spec in config.features:
            self.lookups.append(Lookup(spec, f"coldbrew:features:{function_name}", None, None))  # type: ignore[arg-type]
        for lookup in self.lookups:
            lookup.prepare()
        self._by_name = {lookup.spec.name: lookup for lookup in self.lookups}
        os.register_at_fork(after_in_child=self._forget)

    def _start(self) -> None:
        """First invocation of this instance: the environment (secrets) is the instance's."""
        size = max(1, self.config.concurrency)
        for lookup in self.lookups:
            spec = lookup.spec
            url = os.environ.get(spec.database)
            if not url:
                raise FeaturesUnavailable(
                    f"feature {spec.name!r}: the variable {spec.database} is not set"
                )
            if url not in self._databases:
                self._databases[url] = Database(url, size, spec.timeout_ms)
            lookup.db = self._databases[url]
            lookup.cache = self._cache_for(spec)
        self._started = True

    def _cache_for(self, spec: FeatureConfig) -> Cache | None:
        if spec.cache == "none":
            return None
        if spec.cache == "local":
            return self._local
        if self._shared is None:
            url = os.environ.get(CACHE_URL_VARIABLE)
            if not url:
                raise FeaturesUnavailable(
                    f"feature {spec.name!r} uses cache = 'redis' but the server has no "
                    f"COLDBREW_FEATURE_CACHE_URL"
                )
            from coldbrew.cache.redis import RedisCache

            self._shared = RedisCache(url)
        return self._shared

    def resolve(self, event: Any) -> tuple[dict[str, Any], list[m.FeatureStat]]:
        if not self._started:
            with self._lock:
                if not self._started:
                    self._start()
        values: dict[str, Any] = {}
        stats: list[m.FeatureStat] = []
        for lookup in self.lookups:
            if lookup.on_demand:  # no key in the event: the handler calls lookup() itself
                continue
            try:
                values[lookup.spec.name], stat = lookup.get(event)
            except LookupFailed as exc:
                exc.stats = [*stats, m.FeatureStat(lookup.spec.name, "error", 0.0)]
                raise
            stats.append(stat)
        return values, stats

    def lookup(self, name: str, key: Any) -> tuple[Any, m.FeatureStat]:
        """One declared feature for a key the handler computed (``Features.lookup``)."""
        found = self._by_name.get(name)
        if found is None:
            raise KeyError(f"no [[features]] named {name!r} (declared: {sorted(self._by_name)})")
        if not self._started:
            with self._lock:
                if not self._started:
                    self._start()
        return found.fetch(key)

    def bind(
        self, values: dict[str, Any] | None = None, stats: list[m.FeatureStat] | None = None
    ) -> Features:
        """The ``context.features`` of one invocation or stream session."""
        return Features(self, values or {}, stats if stats is not None else [])

    def apply(self, event: Any, context: Any, builtin: bool) -> tuple[Any, list[m.FeatureStat]]:
        """Resolve into ``context.features``; for the built-in model handler, also append the
        declared ``columns`` to every row of the event."""
        values, stats = self.resolve(event)
        # The same stats list: lookups the handler makes land in the invocation's result too.
        context.features = self.bind(values, stats)
        if builtin and isinstance(event, dict):
            for field in ("instances", "inputs"):
                if field in event:
                    try:
                        rows = append_columns(event[field], context.features, self.config)
                    except LookupFailed as exc:
                        exc.stats = stats
                        raise
                    event = {**event, field: rows}
                    break
        return event, stats

    def _forget(self) -> None:
        self._started = False
        self._databases = {}
        self._shared = None
        self._local = LocalCache()
        self._lock = threading.Lock()
        for lookup in self.lookups:
            lookup.forget()


class Features(dict[str, Any]):
    """``context.features``: the values looked up before the handler, by name, and
    ``lookup(name, key)`` for a key only the handler knows (a plate read from a frame)."""

    def __init__(
        self, lookups: FeatureLookups, values: dict[str, Any], stats: list[m.FeatureStat]
    ) -> None:
        super().__init__(values)
        self._lookups = lookups
        self.stats = stats
        """Every lookup of this invocation, reported with its result for ``/metrics``."""

    def lookup(self, name: str, key: Any) -> Any:
        """The declared feature ``name`` for ``key``: the row as a dict, None (or the default)
        for no row. The same cache, single flight, ``timeout_ms`` and ``default`` as a lookup
        before the handler; without a default an outage raises ``FeaturesUnavailable``, which
        fails the invocation with FEATURES_UNAVAILABLE unless the handler catches it."""
        try:
            value, stat = self._lookups.lookup(name, key)
        except LookupFailed:
            self.stats.append(m.FeatureStat(name, "error", 0.0))
            raise
        self.stats.append(stat)
        return value


def append_columns(rows: Any, features: dict[str, Any], config: FunctionConfig) -> Any:
    """The built-in model handler's rows with each feature's declared ``columns`` appended."""
    extra: list[Any] = []
    for spec in config.features:
        row = features.get(spec.name)
        for column in spec.columns:
            value = row.get(column) if isinstance(row, dict) else None
            if value is None:
                raise FeaturesUnavailable(
                    f"feature {spec.name!r} has no value for column {column!r} (declare a default)"
                )
            extra.append(value)
    if not extra or not isinstance(rows, list):
        return rows
    return [list(r) + extra if isinstance(r, list) else r for r in rows]
