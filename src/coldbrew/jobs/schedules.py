"""Schedules: async invocations at each tick of a ``rate()`` or ``cron()`` expression.

A schedule comes from a bundle's ``[[schedule]]`` (kept in step with the function's ``latest``
version) or from ``coldbrew schedule add``. Every gateway checks the schedules each
``schedule_poll_s``; a due tick is fired by one transaction that advances the schedule's
``last_tick`` only if it is still older than the tick, and queues the tick's event in the same
commit. So a tick runs once however many gateways run, and a restart neither repeats nor (for
the latest tick) loses one. Missed ticks are not replayed: after a stop, only the latest one
fires, as with EventBridge.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from coldbrew import errors
from coldbrew.core.expressions import check_timezone, latest_tick, next_tick, parse
from coldbrew.jobs.queue import EventQueue, NewEvent, Store, now
from coldbrew.registry.asyncq import ScheduleRow

ACCOUNT = "000000000000"
REGION = "us-east-1"


@dataclass(frozen=True)
class Due:
    id: int
    function: str
    name: str
    tick: datetime
    input: str | None


def scheduled_event(name: str, tick: datetime) -> dict[str, Any]:
    """EventBridge's scheduled-event shape, the event of a schedule without ``input``."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": tick.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}"],
        "detail": {},
    }


class ScheduleStore(Store):
    def __init__(self, engine: Engine, queue: EventQueue) -> None:
        self.queue = queue
        super().__init__(engine)

    def add(
        self,
        function: str,
        name: str,
        expression: str,
        input: Any = None,
        timezone: str = "UTC",
        source: str = "cli",
    ) -> dict[str, Any]:
        _check(expression, timezone)
        row = ScheduleRow(
            function_name=function,
            name=name,
            expression=expression,
            timezone=timezone,
            input=None if input is None else orjson.dumps(input).decode(),
            enabled=True,
            source=source,
            created_at=now(),
        )
        try:
            with self.write() as session:
                session.add(row)
        except IntegrityError:
            raise errors.Conflict(
                f"function '{function}' already has a schedule named '{name}'"
            ) from None
        return schedule_dict(row)

    def list(self, function: str | None = None) -> list[dict[str, Any]]:
        with self._read() as session:
            query = select(ScheduleRow).order_by(ScheduleRow.function_name, ScheduleRow.name)
            if function is not None:
                query = query.where(ScheduleRow.function_name == function)
            return [schedule_dict(row) for row in session.scalars(query)]

    def remove(self, function: str, name: str) -> None:
        with self.write() as session:
            result = session.execute(
                delete(ScheduleRow)
                .where(ScheduleRow.function_name == function)
                .where(ScheduleRow.name == name)
            )
        if not result.rowcount:
            raise errors.NotFound(f"function '{function}' has no schedule named '{name}'")

    def sync_config(self, function: str, schedules: list[Any]) -> None:
        """Make the function's ``config`` schedules those of its latest version's
        ``[[schedule]]`` tables (``ScheduleConfig``); a schedule whose expression, input and
        timezone are unchanged keeps its history."""
        wanted = {}
        for i, spec in enumerate(schedules, 1):
            text = None if spec.input is None else orjson.dumps(spec.input).decode()
            wanted[spec.name or f"schedule-{i}"] = (
                spec.expression,
                text,
                spec.timezone,
                spec.enabled,
            )
        try:
            with self.write() as session:
                rows = session.scalars(
                    select(ScheduleRow)
                    .where(ScheduleRow.function_name == function)
                    .where(ScheduleRow.source == "config")
                ).all()
                have = {row.name: row for row in rows}
                for name, row in have.items():
                    if name not in wanted:
                        session.delete(row)
                for name, (expression, text, timezone, enabled) in wanted.items():
                    row = have.get(name)
                    if row is not None and (row.expression, row.input, row.timezone) == (
                        expression,
                        text,
                        timezone,
                    ):
                        row.enabled = enabled
                        continue
                    if row is not None:
                        session.delete(row)
                        session.flush()
                    session.add(
                        ScheduleRow(
                            function_name=function,
                            name=name,
                            expression=expression,
                            timezone=timezone,
                            input=text,
                            enabled=enabled,
                            source="config",
                            created_at=now(),
                        )
                    )
        except IntegrityError:
            pass  # another gateway synced the same version meanwhile, or a CLI name clashes

    def drop_config(self, function: str) -> None:
        with self.write() as session:
            session.execute(
                delete(ScheduleRow)
                .where(ScheduleRow.function_name == function)
                .where(ScheduleRow.source == "config")
            )

    def due(self, at: datetime | None = None) -> list[Due]:
        at = at or now()
        with self._read() as session:
            rows = session.scalars(select(ScheduleRow).where(ScheduleRow.enabled.is_(True))).all()
        found = []
        for row in rows:
            try:
                tick = latest_tick(parse(row.expression), row.created_at, at, row.timezone)
            except ValueError:
                continue  # stored before a stricter parser; `schedule ls` still shows it
            if tick is not None and (row.last_tick is None or tick > row.last_tick):
                found.append(Due(row.id, row.function_name, row.name, tick, row.input))
        return found

    def fire(self, due: Due, event: NewEvent) -> bool:
        """Advance the schedule to ``due.tick`` and queue ``event``, in one commit; False when
        another gateway fired this tick first."""
        with self.write() as session:
            result = session.execute(
                update(ScheduleRow)
                .where(ScheduleRow.id == due.id)
                .where(or_(ScheduleRow.last_tick.is_(None), ScheduleRow.last_tick < due.tick))
                .values(last_tick=due.tick, last_request_id=event.request_id)
            )
            if result.rowcount != 1:
                return False
            self.queue.enqueue(event, session=session)
            return True

    def skip(self, due: Due) -> None:
        """Advance past a tick that cannot run (its function is gone), without an event."""
        with self.write() as session:
            session.execute(
                update(ScheduleRow)
                .where(ScheduleRow.id == due.id)
                .where(or_(ScheduleRow.last_tick.is_(None), ScheduleRow.last_tick < due.tick))
                .values(last_tick=due.tick)
            )


def _check(expression: str, timezone: str) -> None:
    try:
        parse(expression)
        check_timezone(timezone)
    except ValueError as exc:
        raise errors.ValidationError(str(exc)) from None


def schedule_dict(row: ScheduleRow) -> dict[str, Any]:
    upcoming = None
    try:
        after = max(now(), row.last_tick) if row.last_tick else now()
        upcoming = next_tick(parse(row.expression), after, row.created_at, row.timezone)
    except ValueError:
        pass
    stamp = lambda value: value.isoformat().replace("+00:00", "Z") if value else None  # noqa: E731
    return {
        "function": row.function_name,
        "name": row.name,
        "expression": row.expression,
        "timezone": row.timezone,
        "input": None if row.input is None else orjson.loads(row.input),
        "enabled": row.enabled,
        "source": row.source,
        "created_at": stamp(row.created_at),
        "last_tick": stamp(row.last_tick),
        "last_request_id": row.last_request_id,
        "next_tick": stamp(upcoming),
    }
