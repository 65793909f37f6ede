"""Rollouts in the registry: one row per rollout of a function's alias to a candidate version.

The state lives here, not in a gateway's memory, so a rollout survives a gateway restart and
any gateway's controller can carry it on (``coldbrew.delivery.controller``). Created by
migration ``0008_delivery``, which imports this module so that the schema test's
``Base.metadata`` includes the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String, Text, case, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from coldbrew import errors
from coldbrew.registry.engine import UrlStore
from coldbrew.registry.feedback import FeedbackRow
from coldbrew.registry.models import Base, UTCDateTime, utcnow

ACTIVE = ("running", "paused")
FINISHED = ("succeeded", "rolled_back", "aborted")


class RolloutRow(Base):
    __tablename__ = "rollouts"
    __table_args__ = (Index(None, "function_name", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    function_name: Mapped[str] = mapped_column(String(64))
    alias: Mapped[str] = mapped_column(String(64))
    baseline: Mapped[int] = mapped_column(Integer)
    candidate: Mapped[int] = mapped_column(Integer)
    steps: Mapped[list[float]] = mapped_column(JSON)
    """The candidate's fraction at each step, ascending, the last one 1.0."""
    step: Mapped[int] = mapped_column(Integer, default=0)
    step_duration_s: Mapped[float] = mapped_column(Float)
    step_started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    criteria: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """One entry per decision taken (step, action, both versions' stats)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


@dataclass(frozen=True)
class Rollout:
    id: int
    function_name: str
    alias: str
    baseline: int
    candidate: int
    steps: list[float]
    step: int
    step_duration_s: float
    step_started_at: datetime
    state: str
    criteria: dict[str, Any]
    reason: str | None
    created_at: datetime
    updated_at: datetime
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        """The candidate's share of the alias's traffic at the current step."""
        return self.steps[min(self.step, len(self.steps) - 1)]

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key in ("step_started_at", "created_at", "updated_at"):
            out[key] = out[key].isoformat()
        out["fraction"] = self.fraction
        return out


def _record(row: RolloutRow) -> Rollout:
    return Rollout(
        id=row.id,
        function_name=row.function_name,
        alias=row.alias,
        baseline=row.baseline,
        candidate=row.candidate,
        steps=list(row.steps),
        step=row.step,
        step_duration_s=row.step_duration_s,
        step_started_at=row.step_started_at,
        state=row.state,
        criteria=dict(row.criteria),
        reason=row.reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        history=list(row.history or []),
    )


class RolloutStore(UrlStore):
    """Rollout rows; every change is one short transaction (SQLite or PostgreSQL)."""

    def create(self, **values: Any) -> Rollout:
        """A new running rollout; refused while the function has an active one."""
        with self._write() as session:
            if _active(session, values["function_name"]) is not None:
                raise errors.Conflict(
                    f"function '{values['function_name']}' already has a rollout in progress; "
                    "abort it first (coldbrew rollout abort NAME)"
                )
            now = utcnow()
            row = RolloutRow(
                **values,
                step=0,
                step_started_at=now,
                state="running",
                history=[],
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            return _record(row)

    def current(self, function: str) -> Rollout | None:
        """The active rollout of a function, else its most recent one, else None."""
        with self._read() as session:
            row = (
                _active(session, function)
                or session.scalars(
                    select(RolloutRow)
                    .where(RolloutRow.function_name == function)
                    .order_by(RolloutRow.id.desc())
                    .limit(1)
                ).first()
            )
            return _record(row) if row is not None else None

    def active(self) -> list[Rollout]:
        with self._read() as session:
            rows = session.scalars(
                select(RolloutRow).where(RolloutRow.state.in_(ACTIVE)).order_by(RolloutRow.id)
            )
            return [_record(row) for row in rows]

    def recent(self, since: datetime) -> list[Rollout]:
        """Active rollouts and those that changed since ``since`` (the dashboard's)."""
        with self._read() as session:
            rows = session.scalars(
                select(RolloutRow)
                .where(RolloutRow.state.in_(ACTIVE) | (RolloutRow.updated_at >= since))
                .order_by(RolloutRow.id)
            )
            return [_record(row) for row in rows]

    def update(self, rollout_id: int, expect_state: str | None = None, **values: Any) -> Rollout:
        """Change one rollout; with ``expect_state``, only if it is still in that state
        (another gateway's controller, or the user, may have moved it meanwhile)."""
        with self._write() as session:
            row = session.get(RolloutRow, rollout_id, with_for_update=True)
            if row is None:
                raise errors.NotFound(f"rollout {rollout_id} not found")
            if expect_state is not None and row.state != expect_state:
                raise errors.Conflict(
                    f"the rollout of '{row.function_name}' is {row.state}, not {expect_state}"
                )
            note = values.pop("note", None)
            for key, value in values.items():
                setattr(row, key, value)
            if note is not None:
                row.history = [*(row.history or [])[-99:], note]
            row.updated_at = utcnow()
            session.flush()
            return _record(row)

    def feedback(self, function: str, version: int, since: datetime) -> tuple[int, int]:
        """(feedback, correct) of the classification feedback on ``version``'s predictions made
        since ``since`` (the feedback table of ``POST .../feedback``; regression feedback, which
        has no "correct", is not counted)."""
        t = FeedbackRow
        query = select(
            func.count(t.correct), func.coalesce(func.sum(case((t.correct, 1), else_=0)), 0)
        ).where(
            t.function_name == function,
            t.version == version,
            t.predicted_at >= since,
            t.correct.is_not(None),
        )
        with self._read() as session:
            n, correct = session.execute(query).one()
        return int(n), int(correct)


def _active(session: Session, function: str) -> RolloutRow | None:
    return session.scalars(
        select(RolloutRow)
        .where(RolloutRow.function_name == function)
        .where(RolloutRow.state.in_(ACTIVE))
        .limit(1)
    ).first()
