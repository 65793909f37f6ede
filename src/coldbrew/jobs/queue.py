"""The durable queue of async invocations, in the registry's database.

One implementation for SQLite and PostgreSQL (contract-tested on both, tests/jobs):

- **enqueue** commits the event before the caller is told 202; an idempotency key already used
  for the function returns the first event's request id instead of queueing another.
- **lease** takes up to ``n`` visible events (``visible_at <= now``) and hides them for the
  visibility timeout, naming the lease owner. PostgreSQL skips rows another gateway is leasing
  (``SELECT ... FOR UPDATE SKIP LOCKED``); SQLite's ``BEGIN IMMEDIATE`` serialises leasers.
  A gateway that dies mid-run leaves its leases to expire; the rows become visible again and
  another worker (or the restarted gateway) runs them: at-least-once.
- **finish / retry / dead_letter** end or postpone a leased event, only while the caller still
  holds its lease (a worker whose lease expired and was taken over changes nothing).

Every method is synchronous (SQLAlchemy); the worker calls them in a thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from coldbrew import errors
from coldbrew.registry.asyncq import AsyncEventRow, AsyncResultRow, DeadLetterRow
from coldbrew.registry.engine import WRITE_OPTION

QUEUED, SUCCEEDED, FAILED = "queued", "succeeded", "failed"
_SQLITE_WRITES = threading.Lock()


def write_lock(engine: Engine) -> contextlib.AbstractContextManager[object]:
    """On SQLite, one writer at a time in this process: threads queueing on this lock cost
    nothing, while threads queueing on SQLite's own lock sleep in its busy handler (up to
    100 ms a turn), which collapses throughput when submits and the worker write together."""
    return _SQLITE_WRITES if engine.dialect.name == "sqlite" else contextlib.nullcontext()


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewEvent:
    request_id: str
    function_name: str
    version: int
    payload: bytes
    qualifier: str | None = None
    client_context: dict[str, Any] | None = None
    caller_kind: str | None = None
    caller_id: str | None = None
    protocol: str = "native"
    idempotency_key: str | None = None
    max_retry_attempts: int = 2
    max_event_age_s: int = 21600


@dataclass(frozen=True)
class Leased:
    """An event a worker holds until ``lease_until``."""

    id: int
    request_id: str
    function_name: str
    qualifier: str | None
    version: int
    payload: bytes
    client_context: dict[str, Any] | None
    caller_kind: str | None
    caller_id: str | None
    protocol: str
    attempts: int
    """Including this one."""
    failures: int
    max_retry_attempts: int
    max_event_age_s: int
    created_at: datetime
    owner: str

    def age_s(self, at: datetime | None = None) -> float:
        return ((at or now()) - self.created_at).total_seconds()


class Store:
    """Read sessions and locked write transactions on the registry database, for the stores
    of async work (this queue, batch jobs)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._writes = sessionmaker(
            engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False
        )

    @contextmanager
    def write(self) -> Iterator[Session]:
        with write_lock(self.engine), self._writes() as session, session.begin():
            yield session

    def any_row(self, query: Select[Any]) -> bool:
        """Whether ``query`` finds a row: one read on a plain connection, without the write
        lock or a session. The idle poll's usual answer is "nothing", and a lease or claim
        that looks first costs the gateway a fraction of the write transaction it skips (the
        one the meter and the queue's producers would otherwise wait behind)."""
        with self.engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None


class EventQueue(Store):
    # -- producers ---------------------------------------------------------------------------

    def enqueue(self, event: NewEvent, session: Session | None = None) -> tuple[str, bool]:
        """Commit ``event``; ``(request_id, created)``. With an idempotency key the function
        has seen, ``(first request id, False)`` and nothing is queued."""
        if session is not None:
            return self._enqueue(session, event)
        try:
            with self.write() as own:
                return self._enqueue(own, event)
        except IntegrityError:
            # Two submits with one key raced past the lookup: the loser reads the winner's id.
            found = self.first_for_key(event.function_name, event.idempotency_key)
            if found is None:
                raise
            return found, False

    def _enqueue(self, session: Session, event: NewEvent) -> tuple[str, bool]:
        if event.idempotency_key is not None:
            first = session.scalar(
                select(AsyncEventRow.request_id)
                .where(AsyncEventRow.function_name == event.function_name)
                .where(AsyncEventRow.idempotency_key == event.idempotency_key)
            )
            if first is not None:
                return first, False
        at = now()
        session.add(
            AsyncEventRow(
                **asdict(event),
                state=QUEUED,
                attempts=0,
                failures=0,
                created_at=at,
                visible_at=at,
            )
        )
        session.flush()
        return event.request_id, True

    def first_for_key(self, function: str, key: str | None) -> str | None:
        """The request id of the function's event with this idempotency key, if any."""
        if key is None:
            return None
        with self._read() as session:
            return session.scalar(
                select(AsyncEventRow.request_id)
                .where(AsyncEventRow.function_name == function)
                .where(AsyncEventRow.idempotency_key == key)
            )

    # -- workers -----------------------------------------------------------------------------

    def lease(self, owner: str, n: int, visibility_s: float) -> list[Leased]:
        """Up to ``n`` visible events, oldest first, hidden for ``visibility_s`` from others."""
        at = now()
        visible = (AsyncEventRow.state == QUEUED, AsyncEventRow.visible_at <= at)
        if not self.any_row(select(AsyncEventRow.id).where(*visible)):
            return []
        with self.write() as session:
            rows = session.scalars(
                select(AsyncEventRow)
                .where(*visible)
                .order_by(AsyncEventRow.visible_at, AsyncEventRow.id)
                .limit(n)
                .with_for_update(skip_locked=True)
            ).all()
            leased = []
            for row in rows:
                row.attempts += 1
                row.lease_owner = owner
                row.visible_at = at + timedelta(seconds=visibility_s)
                leased.append(_leased(row, owner))
            return leased

    def extend(self, event: Leased, visibility_s: float) -> bool:
        """Keep holding a long-running event; False if the lease was lost."""
        with self.write() as session:
            result = session.execute(
                _held(event).values(visible_at=now() + timedelta(seconds=visibility_s))
            )
            return result.rowcount == 1

    def release(self, event: Leased) -> bool:
        """Hand a leased event back, visible at once (a gateway stopping cleanly)."""
        with self.write() as session:
            result = session.execute(_held(event).values(visible_at=now(), lease_owner=None))
            return result.rowcount == 1

    def finish(self, event: Leased, executed_version: int | None) -> bool:
        with self.write() as session:
            result = session.execute(
                _held(event).values(
                    state=SUCCEEDED,
                    finished_at=now(),
                    lease_owner=None,
                    executed_version=executed_version,
                )
            )
            return result.rowcount == 1

    def retry(
        self, event: Leased, delay_s: float, error: dict[str, Any], function_error: bool
    ) -> bool:
        """Put a failed attempt back, visible again after ``delay_s``."""
        values: dict[str, Any] = {
            "visible_at": now() + timedelta(seconds=delay_s),
            "lease_owner": None,
            "last_error": error,
        }
        if function_error:
            values["failures"] = AsyncEventRow.failures + 1
        with self.write() as session:
            return session.execute(_held(event).values(**values)).rowcount == 1

    def dead_letter(self, event: Leased, reason: str, error: dict[str, Any] | None) -> bool:
        """End the event as failed and keep it in the dead-letter store."""
        at = now()
        with self.write() as session:
            result = session.execute(
                _held(event).values(
                    state=FAILED, finished_at=at, lease_owner=None, last_error=error
                )
            )
            if result.rowcount != 1:
                return False
            session.add(
                DeadLetterRow(
                    request_id=event.request_id,
                    function_name=event.function_name,
                    reason=reason,
                    error=error,
                    attempts=event.attempts,
                    payload=event.payload,
                    created_at=event.created_at,
                    failed_at=at,
                )
            )
            return True

    # -- inspection --------------------------------------------------------------------------

    def get(self, request_id: str) -> dict[str, Any] | None:
        with self._read() as session:
            row = session.scalar(
                select(AsyncEventRow).where(AsyncEventRow.request_id == request_id)
            )
            return None if row is None else event_dict(row)

    def list_events(
        self, function: str, state: str | None = None, limit: int = 100, key_prefix: str = ""
    ) -> list[dict[str, Any]]:
        """Newest first; ``key_prefix`` keeps those whose idempotency key starts with it (a
        schedule's runs: ``schedule:NAME:``)."""
        with self._read() as session:
            query = select(AsyncEventRow).where(AsyncEventRow.function_name == function)
            if state is not None:
                query = query.where(AsyncEventRow.state == state)
            if key_prefix:
                query = query.where(AsyncEventRow.idempotency_key.startswith(key_prefix))
            rows = session.scalars(query.order_by(AsyncEventRow.id.desc()).limit(limit))
            return [event_dict(row) for row in rows]

    def depth(self) -> dict[str, tuple[int, float]]:
        """Per function: queued events and the age in seconds of the oldest."""
        at = now()
        with self._read() as session:
            rows = session.execute(
                select(
                    AsyncEventRow.function_name,
                    func.count(),
                    func.min(AsyncEventRow.created_at),
                )
                .where(AsyncEventRow.state == QUEUED)
                .group_by(AsyncEventRow.function_name)
            ).all()
        result = {}
        for name, count, oldest in rows:
            if isinstance(oldest, str):  # SQLite's MIN() of a datetime column is text
                oldest = datetime.fromisoformat(oldest)
            if oldest is not None and oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
            result[name] = (int(count), (at - oldest).total_seconds() if oldest else 0.0)
        return result

    def prune(self, older_than_s: float) -> int:
        """Forget finished events (and so their idempotency keys) and ``results`` records
        older than this; the count of events forgotten."""
        cutoff = now() - timedelta(seconds=older_than_s)
        with self.write() as session:
            letters = select(DeadLetterRow.request_id)
            result = session.execute(
                delete(AsyncEventRow)
                .where(AsyncEventRow.state != QUEUED)
                .where(AsyncEventRow.finished_at < cutoff)
                # a dead letter keeps its event, so that a redrive can queue it again
                .where(AsyncEventRow.request_id.not_in(letters))
            )
            session.execute(delete(AsyncResultRow).where(AsyncResultRow.created_at < cutoff))
            return int(result.rowcount or 0)

    # -- dead letters ------------------------------------------------------------------------

    def dead_letters(self, function: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._read() as session:
            rows = session.scalars(
                select(DeadLetterRow)
                .where(DeadLetterRow.function_name == function)
                .order_by(DeadLetterRow.id)
                .limit(limit)
            )
            return [dead_letter_dict(row) for row in rows]

    def dead_letter_by_id(self, function: str, request_id: str) -> dict[str, Any]:
        with self._read() as session:
            row = session.scalar(
                select(DeadLetterRow)
                .where(DeadLetterRow.function_name == function)
                .where(DeadLetterRow.request_id == request_id)
            )
            if row is None:
                raise errors.NotFound(f"no dead letter '{request_id}' for function '{function}'")
            return dead_letter_dict(row, payload=True)

    def redrive(self, function: str, request_ids: list[str] | None = None) -> list[str]:
        """Queue dead letters again under their own request ids, with fresh retries and age;
        None means all of the function's dead letters."""
        at = now()
        with self.write() as session:
            query = select(DeadLetterRow).where(DeadLetterRow.function_name == function)
            if request_ids is not None:
                query = query.where(DeadLetterRow.request_id.in_(request_ids))
            letters = session.scalars(query.with_for_update()).all()
            moved = [letter.request_id for letter in letters]
            if moved:
                session.execute(
                    update(AsyncEventRow)
                    .where(AsyncEventRow.request_id.in_(moved))
                    .values(
                        state=QUEUED,
                        failures=0,
                        created_at=at,
                        visible_at=at,
                        finished_at=None,
                        lease_owner=None,
                    )
                )
                session.execute(delete(DeadLetterRow).where(DeadLetterRow.request_id.in_(moved)))
            return moved

    def purge(self, function: str) -> int:
        with self.write() as session:
            result = session.execute(
                delete(DeadLetterRow).where(DeadLetterRow.function_name == function)
            )
            return int(result.rowcount or 0)

    # -- the results destination -------------------------------------------------------------

    def add_result(self, function: str, request_id: str, condition: str, record: Any) -> None:
        with self.write() as session:
            session.add(
                AsyncResultRow(
                    function_name=function,
                    request_id=request_id,
                    condition=condition,
                    record=record,
                    created_at=now(),
                )
            )

    def results(self, function: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        with self._read() as session:
            rows = session.scalars(
                select(AsyncResultRow)
                .where(AsyncResultRow.function_name == function)
                .where(AsyncResultRow.id > after)
                .order_by(AsyncResultRow.id)
                .limit(limit)
            )
            return [
                {"id": r.id, "request_id": r.request_id, "condition": r.condition, **r.record}
                for r in rows
            ]

    def purge_results(self, function: str) -> int:
        with self.write() as session:
            result = session.execute(
                delete(AsyncResultRow).where(AsyncResultRow.function_name == function)
            )
            return int(result.rowcount or 0)


def _held(event: Leased):  # type: ignore[no-untyped-def]
    """An UPDATE that applies only while ``event``'s lease is still the caller's."""
    return (
        update(AsyncEventRow)
        .where(AsyncEventRow.id == event.id)
        .where(AsyncEventRow.state == QUEUED)
        .where(AsyncEventRow.lease_owner == event.owner)
        .where(AsyncEventRow.attempts == event.attempts)
    )


def _leased(row: AsyncEventRow, owner: str) -> Leased:
    return Leased(
        id=row.id,
        request_id=row.request_id,
        function_name=row.function_name,
        qualifier=row.qualifier,
        version=row.version,
        payload=row.payload,
        client_context=row.client_context,
        caller_kind=row.caller_kind,
        caller_id=row.caller_id,
        protocol=row.protocol,
        attempts=row.attempts,
        failures=row.failures,
        max_retry_attempts=row.max_retry_attempts,
        max_event_age_s=row.max_event_age_s,
        created_at=row.created_at,
        owner=owner,
    )


def _stamp(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def event_dict(row: AsyncEventRow) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "function": row.function_name,
        "qualifier": row.qualifier,
        "state": row.state,
        "attempts": row.attempts,
        "failures": row.failures,
        "created_at": _stamp(row.created_at),
        "finished_at": _stamp(row.finished_at),
        "executed_version": row.executed_version,
        "last_error": row.last_error,
        "idempotency_key": row.idempotency_key,
    }


def dead_letter_dict(row: DeadLetterRow, payload: bool = False) -> dict[str, Any]:
    found = {
        "request_id": row.request_id,
        "function": row.function_name,
        "reason": row.reason,
        "error": row.error,
        "attempts": row.attempts,
        "created_at": _stamp(row.created_at),
        "failed_at": _stamp(row.failed_at),
    }
    if payload:
        found["payload"] = row.payload.decode("utf-8", errors="replace")
    return found
