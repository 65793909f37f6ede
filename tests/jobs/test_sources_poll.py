"""The polling logic of object sources (S3 prefix, folder) against the real seen-set table, on
SQLite and PostgreSQL: what is new, what an overwrite is, what a restart (a new runner on the
same registry) delivers, and the key that makes a crash between commit and "seen" harmless.
The listing and ``accept`` are stand-ins; tests/jobs/test_sources.py runs the real ones."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine

from coldbrew.jobs.sources import source_id
from coldbrew.jobs.sources.objects import INITIALISED, ObjectSource, SeenStore, StoredObject
from coldbrew.registry import Registry
from coldbrew.registry.engine import build_engine
from coldbrew.runtime.config import S3SourceConfig

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """One backend is enough where the SQL is the same (the first test runs on both)."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry = Registry(url)
    registry.migrate()
    registry.close()
    made = build_engine(url)
    yield made
    made.dispose()


class Listed(ObjectSource):
    kind = "s3"

    def __init__(self, *args: Any, listing: dict[str, str], **kwargs: Any) -> None:
        self.listing = listing  # key -> version (etag); shared with the test
        super().__init__(*args, **kwargs)

    def target(self) -> str:
        return "test"

    def list_objects(self) -> list[StoredObject]:
        return [
            StoredObject(key, 1, etag, T0 + timedelta(seconds=i), etag)
            for i, (key, etag) in enumerate(sorted(self.listing.items()))
        ]

    def event(self, obj: StoredObject) -> tuple[bytes, dict[str, Any] | None]:
        return obj.key.encode(), None


class Accepting:
    """``AsyncInvocations.accept`` with its idempotency: a key seen before queues nothing."""

    def __init__(self) -> None:
        self.queued: list[str] = []
        self.keys: set[str] = set()

    async def accept(self, request: Any, key: str) -> tuple[str, bool]:
        if key in self.keys:
            return "first", False
        self.keys.add(key)
        self.queued.append(request.payload.decode())
        return request.request_id, True


def _runner(engine: Engine, events: Accepting, listing: dict[str, str], **config: Any) -> Listed:
    cfg = S3SourceConfig(kind="s3", bucket="bucket", poll_s=1, **config)
    sid = source_id("fn", cfg)
    return Listed("fn", cfg, events, SeenStore(engine), sid, listing=listing)


def _poll(runner: Listed) -> int:
    return asyncio.run(runner.poll())


def test_each_object_once_overwrites_again_and_a_restart_replays_nothing(engine: Engine) -> None:
    events, listing = Accepting(), {"a": "1", "b": "1"}
    first = _runner(engine, events, listing)
    assert _poll(first) == 2 and _poll(first) == 0
    listing.update(b="2", c="1")  # b overwritten, c new
    assert _poll(first) == 2
    assert events.queued == ["a", "b", "b", "c"]
    del listing["a"]  # removed objects leave the seen-set...
    _poll(first)
    listing["d"] = "1"
    restarted = _runner(engine, events, listing)  # a new gateway on the same registry
    assert _poll(restarted) == 1
    assert events.queued == ["a", "b", "b", "c", "d"]
    listing["a"] = "3"  # ...so an object written again under the old name is new
    assert _poll(restarted) == 1 and events.queued[-1] == "a"


def test_a_crash_between_commit_and_seen_queues_nothing_twice(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = sqlite_engine
    events, listing = Accepting(), {"a": "1"}
    crashing = _runner(engine, events, listing)

    real_add = crashing.seen_store.add

    def crash(sid: str, digests: dict[str, str]) -> None:
        if INITIALISED in digests:  # the first poll's marker row: written
            return real_add(sid, digests)
        raise RuntimeError("the gateway died here")

    monkeypatch.setattr(crashing.seen_store, "add", crash)
    with pytest.raises(RuntimeError):
        _poll(crashing)
    assert events.queued == ["a"]
    restarted = _runner(engine, events, listing)
    _poll(restarted)  # delivered again, with the same key: accept queues nothing
    assert events.queued == ["a"]
    assert _poll(restarted) == 0


def test_without_backfill_only_later_objects(sqlite_engine: Engine) -> None:
    engine = sqlite_engine
    events, listing = Accepting(), {"old": "1"}
    runner = _runner(engine, events, listing, backfill=False)
    assert _poll(runner) == 0
    listing["new"] = "1"
    assert _poll(runner) == 1
    assert events.queued == ["new"]
    empty = _runner(engine, Accepting(), {}, backfill=False, prefix="other/")
    assert _poll(empty) == 0  # an empty prefix, polled once: later objects are new ones
    empty.listing["other/x"] = "1"
    assert _poll(empty) == 1


def test_refused_events_are_dropped_other_failures_retried(sqlite_engine: Engine) -> None:
    engine = sqlite_engine
    from coldbrew import errors

    class Refusing(Accepting):
        def __init__(self, exc: Exception) -> None:
            super().__init__()
            self.exc = exc

        async def accept(self, request: Any, key: str) -> tuple[str, bool]:
            raise self.exc

    refused = _runner(engine, Refusing(errors.ValidationError("schema")), {"a": "1"})
    assert _poll(refused) == 1 and refused.state.dropped == 1  # for good: marked seen
    assert _poll(refused) == 0
    busy = _runner(engine, Refusing(errors.ColdbrewError("db down")), {"a": "1"}, prefix="")
    busy.source_id = "another"
    assert _poll(busy) == 0 and busy.state.last_error
    busy.events = SimpleNamespace(accept=Accepting().accept)
    assert _poll(busy) == 1  # tried again at the next poll
