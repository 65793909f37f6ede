"""Polled object sources (an S3 prefix, a watched folder): each new object is one async event
with Lambda's S3 notification shape.

Each poll lists the objects, compares them with the source's **seen-set** (table
``event_source_objects``, in the registry's database) and, oldest first, hands every object not
in it to :meth:`AsyncInvocations.accept` (as ``POST .../invoke?async`` would), then records it as
seen. An object's identity is a digest of its key and of what changes when it is written again
(S3: ETag and LastModified; a file: size and mtime), so an overwritten object is new, as with
S3's ``ObjectCreated`` notifications.

Why nothing is lost or replayed across a restart: the event is committed with an idempotency
key made of the source and the digest *before* the object is marked seen. A gateway that dies
between the two polls the object again after its restart; ``accept`` finds the key and queues
nothing. Several gateways polling one source deliver each object once for the same reason.
Objects that vanish from the listing leave the seen-set, which so stays as large as the prefix.

With ``batch_job = true`` each new object is a batch job instead (``batch_jobs.py``), in the
same order: the job is committed under an id made of the source and the digest, then the
object is marked seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import orjson
from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from coldbrew import errors
from coldbrew.dataplane import InvocationRequest
from coldbrew.ids import new_request_id
from coldbrew.jobs import policy
from coldbrew.jobs.queue import write_lock
from coldbrew.jobs.sources import batch_jobs
from coldbrew.jobs.sources.state import SourceState
from coldbrew.registry.engine import WRITE_OPTION
from coldbrew.registry.event_sources import SourceObjectRow

log = logging.getLogger("coldbrew.sources")
INITIALISED = "-"
"""The seen-set's marker row: this source was polled once (``backfill = false`` then knows
that an empty seen-set is an empty prefix, not a source never polled)."""


@dataclass(frozen=True)
class StoredObject:
    """One listed object, as the S3 event describes it."""

    key: str
    size: int
    etag: str
    modified: datetime
    version: str
    """What changes when the object is written again (part of its digest)."""
    path: str | None = None
    """A watched folder's file, for the client context."""

    def digest(self) -> str:
        return hashlib.sha256(f"{self.key}\0{self.version}".encode()).hexdigest()


def s3_event(bucket: str, obj: StoredObject, region: str, arn: str | None = None) -> bytes:
    """Lambda's S3 ``ObjectCreated:Put`` notification of one object (event version 2.1). As
    in S3's own, the key is URL-encoded (``unquote_plus`` it)."""
    stamp = obj.modified.astimezone(UTC)
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "coldbrew"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": new_request_id()[:16], "x-amz-id-2": ""},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "coldbrew-event-source",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "coldbrew"},
                "arn": arn or f"arn:aws:s3:::{bucket}",
            },
            "object": {
                "key": quote_plus(obj.key, safe="/"),
                "size": obj.size,
                "eTag": obj.etag,
                "sequencer": f"{int(stamp.timestamp() * 1_000_000):016X}",
            },
        },
    }
    return orjson.dumps({"Records": [record]})


class SeenStore:
    """The seen-set of every polled source (``source_id`` tells them apart)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writes = engine.execution_options(**{WRITE_OPTION: True})

    def load(self, source_id: str) -> set[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(SourceObjectRow.digest).where(SourceObjectRow.source_id == source_id)
            )
            return {row[0] for row in rows}

    def add(self, source_id: str, digests: dict[str, str]) -> None:
        """Record ``{digest: key}``; rows another gateway wrote first are left as they are."""
        if not digests:
            return
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        rows = [
            {"source_id": source_id, "digest": d, "object_key": k, "seen_at": datetime.now(UTC)}
            for d, k in digests.items()
        ]
        statement = insert(SourceObjectRow).values(rows).on_conflict_do_nothing()
        with write_lock(self.engine), self._writes.begin() as conn:
            conn.execute(statement)

    def forget(self, source_id: str, digests: set[str]) -> None:
        if not digests:
            return
        with write_lock(self.engine), self._writes.begin() as conn:
            conn.execute(
                delete(SourceObjectRow).where(
                    SourceObjectRow.source_id == source_id,
                    SourceObjectRow.digest.in_(list(digests)),
                )
            )


class ObjectSource:
    """The polling loop shared by the S3 and folder sources; they say how to list."""

    kind = "objects"

    def __init__(
        self, function: str, config: Any, events: Any, seen: SeenStore, source_id: str
    ) -> None:
        self.function = function
        self.config = config
        self.events = events
        self.seen_store = seen
        self.source_id = source_id
        self.state = SourceState(function, self.kind, self.target())
        self.batch: Any = None
        """The gateway's ``BatchJobs`` (set by ``EventSources``): for ``batch_job = true``."""
        self._seen: set[str] | None = None
        self._pending = 0
        self._task: asyncio.Task[None] | None = None

    # -- what a kind provides ----------------------------------------------------------------

    def target(self) -> str:
        raise NotImplementedError

    def list_objects(self) -> list[StoredObject]:
        """Every object of the source now (blocking: run in a thread). Raises on failure:
        a partial listing must not make the seen-set forget the objects it missed."""
        raise NotImplementedError

    def event(self, obj: StoredObject) -> tuple[bytes, dict[str, Any] | None]:
        """The event of one new object and its client context."""
        raise NotImplementedError

    async def tend(self) -> None:
        """Work of the source besides listing, after every poll, even a failed one (S3: upload
        the results of its completed batch jobs)."""

    # -- the loop ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"coldbrew-source-{self.kind}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def lag(self) -> dict[str, int] | None:
        return {"pending_objects": self._pending}

    def _wanted(self, key: str) -> bool:
        if not (key.startswith(self.config.prefix) and key.endswith(self.config.suffix)):
            return False
        # A batch source takes only input files, never its jobs' results written beside them.
        return not self.config.batch_job or batch_jobs.is_input(key)

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a source that is down is polled again, not fatal
                said = _describe(exc)
                if said != self.state.last_error:  # once per new reason, not once per poll
                    log.warning("%s source %s: poll failed: %s", self.kind, self.function, said)
                self.state.error(said)
            try:
                await self.tend()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the registry down, say: tried again after the next poll
                said = _describe(exc)
                if said != self.state.last_error:
                    log.warning("%s source %s: %s", self.kind, self.function, said)
                self.state.error(said)
            await asyncio.sleep(self.config.poll_s)

    async def poll(self) -> int:
        """One listing; returns how many objects were delivered."""
        listed = await asyncio.to_thread(self.list_objects)
        current = {obj.digest(): obj for obj in listed if self._wanted(obj.key)}
        if self._seen is None:
            self._seen = await asyncio.to_thread(self.seen_store.load, self.source_id)
            if INITIALISED not in self._seen:
                if not self.config.backfill:  # only what appears from now on
                    await asyncio.to_thread(
                        self.seen_store.add, self.source_id, {d: o.key for d, o in current.items()}
                    )
                    self._seen |= set(current)
                await asyncio.to_thread(self.seen_store.add, self.source_id, {INITIALISED: ""})
                self._seen.add(INITIALISED)
        new = sorted(
            (obj for digest, obj in current.items() if digest not in self._seen),
            key=lambda o: (o.modified, o.key),
        )
        self._pending = len(new)
        delivered = 0
        for obj in new:
            if await self._deliver(obj):
                digest = obj.digest()
                await asyncio.to_thread(self.seen_store.add, self.source_id, {digest: obj.key})
                self._seen.add(digest)
                delivered += 1
            self._pending -= 1
        gone = self._seen - set(current) - {INITIALISED}
        if gone:
            await asyncio.to_thread(self.seen_store.forget, self.source_id, gone)
            self._seen -= gone
        return delivered

    async def _deliver(self, obj: StoredObject) -> bool:
        """Accept the object's event; True once it need not be tried again."""
        self.state.event()
        if self.config.batch_job:
            return await batch_jobs.submit(self, obj)
        payload, context = await asyncio.to_thread(self.event, obj)
        request = InvocationRequest(
            self.function,
            payload,
            new_request_id(),
            qualifier=self.config.qualifier,
            protocol=self.kind,
            kind="async",
            client_context=context,
            limited=False,
        )
        key = f"{self.kind}:{self.source_id}:{obj.digest()}"
        try:
            request_id, created = await self.events.accept(request, key)
        except errors.ColdbrewError as exc:
            self.state.error(f"{obj.key}: {exc.code}: {exc.message}")
            if policy.failure_kind(exc.code) == "fatal":  # no retry makes it acceptable
                self.state.dropped += 1
                log.warning(
                    "%s source %s: %s refused: %s %s",
                    self.kind,
                    self.function,
                    obj.key,
                    exc.code,
                    exc.message,
                )
                return True
            return False  # the next poll tries again
        self.state.delivered += 1
        log.info(
            "%s source %s: %s -> %s%s",
            self.kind,
            self.function,
            obj.key,
            request_id,
            "" if created else " (already queued)",
            extra={"request_id": request_id, "function": self.function},
        )
        return True


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
