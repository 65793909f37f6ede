"""Batch jobs and their progress in the registry's database (SQLite or PostgreSQL).

- **claim** hands a gateway one job to run: a queued job, or a running one whose lease ran out
  (its gateway died). PostgreSQL skips rows another gateway is claiming (``FOR UPDATE SKIP
  LOCKED``); on SQLite ``BEGIN IMMEDIATE`` serialises claimers. Only gateways sharing the job's
  home claim it (its files are there).
- **commit_chunk** records one chunk as done and adds its counts to the job in one
  transaction, only while the caller holds the job's lease and the job still runs: a cancelled
  job, or a gateway whose lease was taken over, commits nothing more.
- **pending_uploads** / **uploaded** / **upload_failed**: a completed job of an S3 source
  whose files are not yet in the bucket stays pending (``uploaded_at`` unset) until the
  source's runner uploads them, so a gateway that died in between uploads after its restart.
- Everything is synchronous (SQLAlchemy); the runner calls it in a thread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Update, delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from coldbrew import errors
from coldbrew.jobs.queue import Store
from coldbrew.registry.batchjobs import BatchChunkRow, BatchJobRow

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "queued",
    "running",
    "completed",
    "failed",
    "cancelled",
)
ACTIVE = (QUEUED, RUNNING)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewJob:
    id: str
    function_name: str
    qualifier: str | None
    home: str
    folder: str
    input_path: str
    input_format: str
    output_path: str
    errors_path: str
    output_format: str
    event_shape: str
    total_rows: int
    chunk_size: int
    parallelism: int
    caller_kind: str | None
    caller_id: str | None
    source_id: str | None = None
    output_uri: str | None = None
    """Where the results go once the job completes (an S3 source's job); None: they stay."""
    errors_uri: str | None = None


@dataclass(frozen=True)
class Upload:
    """A completed job's files still to be uploaded (``uploaded_at`` unset)."""

    id: str
    output_path: str
    errors_path: str
    output_uri: str
    errors_uri: str
    upload_error: str | None


@dataclass(frozen=True)
class Claimed:
    """A job a runner holds until its lease runs out (extended while it runs)."""

    id: str
    function_name: str
    qualifier: str | None
    input_path: str
    input_format: str
    output_path: str
    errors_path: str
    output_format: str
    event_shape: str
    folder: str
    total_rows: int
    chunk_size: int
    parallelism: int
    caller_kind: str | None
    caller_id: str | None
    owner: str


class JobStore(Store):
    def create(self, job: NewJob) -> dict[str, Any]:
        with self.write() as session:
            row = BatchJobRow(
                **asdict(job),
                state=QUEUED,
                chunks_done=0,
                rows_succeeded=0,
                rows_failed=0,
                runs=0,
                run_rows_at_start=0,
                created_at=now(),
            )
            session.add(row)
            session.flush()
            return describe(row)

    # -- runners ---------------------------------------------------------------------------------

    def claim(self, owner: str, home: str, lease_s: float) -> Claimed | None:
        at = now()
        claimable = (
            BatchJobRow.state.in_(ACTIVE),
            BatchJobRow.home == home,
            or_(BatchJobRow.lease_until.is_(None), BatchJobRow.lease_until < at),
        )
        if not self.any_row(select(BatchJobRow.id).where(*claimable)):
            return None
        with self.write() as session:
            row = session.scalars(
                select(BatchJobRow)
                .where(*claimable)
                .order_by(BatchJobRow.created_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            row.state = RUNNING
            row.lease_owner = owner
            row.lease_until = at + timedelta(seconds=lease_s)
            row.runs += 1
            row.started_at = row.started_at or at
            row.run_started_at = at
            row.run_rows_at_start = row.rows_succeeded + row.rows_failed
            fields = {k: getattr(row, k) for k in Claimed.__dataclass_fields__ if k != "owner"}
            return Claimed(**fields, owner=owner)

    def _held(self, job: Claimed) -> Update:
        return (
            update(BatchJobRow)
            .where(BatchJobRow.id == job.id)
            .where(BatchJobRow.lease_owner == job.owner)
            .where(BatchJobRow.state == RUNNING)
        )

    def extend(self, job: Claimed, lease_s: float) -> bool:
        """Keep holding the job; False when it was cancelled or its lease taken over."""
        with self.write() as session:
            until = now() + timedelta(seconds=lease_s)
            return session.execute(self._held(job).values(lease_until=until)).rowcount == 1

    def release(self, job: Claimed) -> None:
        """Hand a job back at once (a gateway stopping cleanly): another run resumes it."""
        with self.write() as session:
            session.execute(self._held(job).values(lease_until=None, lease_owner=None))

    def done_chunks(self, job_id: str) -> set[int]:
        with self._read() as session:
            found = session.scalars(
                select(BatchChunkRow.chunk).where(BatchChunkRow.job_id == job_id)
            )
            return set(found)

    def commit_chunk(self, job: Claimed, chunk: int, rows: int, failed: int) -> bool:
        """Record a chunk whose file is in place; False when the job is no longer this
        runner's (cancelled, or taken over) and nothing was recorded."""
        try:
            with self.write() as session:
                session.add(BatchChunkRow(job_id=job.id, chunk=chunk, rows=rows, failed=failed))
                session.flush()  # a chunk recorded twice fails here, before the counts move
                moved = session.execute(
                    self._held(job).values(
                        chunks_done=BatchJobRow.chunks_done + 1,
                        rows_succeeded=BatchJobRow.rows_succeeded + (rows - failed),
                        rows_failed=BatchJobRow.rows_failed + failed,
                    )
                )
                if moved.rowcount != 1:
                    raise _NotHeld  # rolls the chunk row back with the transaction
            return True
        except _NotHeld:
            return False
        except IntegrityError:
            return True  # already recorded (by this job's earlier run): done either way

    def finish(self, job: Claimed, state: str, error: dict[str, Any] | None = None) -> bool:
        with self.write() as session:
            ended = self._held(job).values(
                state=state, finished_at=now(), lease_owner=None, lease_until=None, error=error
            )
            return session.execute(ended).rowcount == 1

    # -- uploads of a source's jobs -----------------------------------------------------------

    def pending_uploads(self, source_id: str, home: str) -> list[Upload]:
        """Completed jobs of ``source_id`` whose files (in ``home``) are not uploaded yet,
        oldest first. Cancelled and failed jobs upload nothing."""
        with self._read() as session:
            rows = session.scalars(
                select(BatchJobRow)
                .where(BatchJobRow.source_id == source_id)
                .where(BatchJobRow.uploaded_at.is_(None))
                .where(BatchJobRow.state == COMPLETED)
                .where(BatchJobRow.home == home)
                .where(BatchJobRow.output_uri.is_not(None))
                .order_by(BatchJobRow.finished_at)
            ).all()
            return [
                Upload(
                    row.id,
                    row.output_path,
                    row.errors_path,
                    row.output_uri or "",
                    row.errors_uri or "",
                    row.upload_error,
                )
                for row in rows
            ]

    def uploaded(self, job_id: str) -> None:
        with self.write() as session:
            session.execute(
                update(BatchJobRow)
                .where(BatchJobRow.id == job_id)
                .values(uploaded_at=now(), upload_error=None)
            )

    def upload_failed(self, job_id: str, message: str) -> None:
        with self.write() as session:
            session.execute(
                update(BatchJobRow)
                .where(BatchJobRow.id == job_id)
                .where(BatchJobRow.uploaded_at.is_(None))
                .values(upload_error=message[:2000])
            )

    # -- callers -------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Cancel a queued or running job (its runner stops at its next chunk); the job as it
        is now, or None when there is no such job. A finished job stays as it was."""
        with self.write() as session:
            session.execute(
                update(BatchJobRow)
                .where(BatchJobRow.id == job_id)
                .where(BatchJobRow.state.in_(ACTIVE))
                .values(state=CANCELLED, finished_at=now(), lease_owner=None, lease_until=None)
            )
        return self.get(job_id)

    def prune(self, home: str, older_than_s: float) -> list[str]:
        """Forget this home's jobs that finished more than ``older_than_s`` ago; their
        folders, for the caller to remove."""
        before = now() - timedelta(seconds=older_than_s)
        with self.write() as session:
            rows = session.scalars(
                select(BatchJobRow)
                .where(BatchJobRow.home == home)
                .where(BatchJobRow.finished_at < before)
                .where(BatchJobRow.state.not_in(ACTIVE))
            ).all()
            ids = [row.id for row in rows]
            if ids:
                session.execute(delete(BatchChunkRow).where(BatchChunkRow.job_id.in_(ids)))
                session.execute(delete(BatchJobRow).where(BatchJobRow.id.in_(ids)))
            return [row.folder for row in rows]

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._read() as session:
            row = session.get(BatchJobRow, job_id)
            return describe(row) if row is not None else None

    def paths(self, job_id: str) -> dict[str, str]:
        """Where a job's files are (on the gateway's machine: never shown to callers)."""
        with self._read() as session:
            row = session.get(BatchJobRow, job_id)
            if row is None:
                raise errors.NotFound(f"no batch job '{job_id}'")
            return {"output_path": row.output_path, "errors_path": row.errors_path}

    def list(self, function: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = select(BatchJobRow).order_by(BatchJobRow.created_at.desc()).limit(limit)
        if function is not None:
            query = query.where(BatchJobRow.function_name == function)
        with self._read() as session:
            return [describe(row) for row in session.scalars(query)]


class _NotHeld(Exception):
    pass


def describe(row: BatchJobRow) -> dict[str, Any]:
    """A job as the API shows it: counts, throughput of the current run, and an ETA."""
    processed = row.rows_succeeded + row.rows_failed
    rate = eta = None
    if row.run_started_at is not None:
        ended = row.finished_at or now()
        elapsed = (ended - row.run_started_at).total_seconds()
        done_this_run = processed - row.run_rows_at_start
        if elapsed > 0 and done_this_run > 0:
            rate = done_this_run / elapsed
            if row.state == RUNNING:
                eta = (row.total_rows - processed) / rate
    return {
        "id": row.id,
        "function": row.function_name,
        "qualifier": row.qualifier,
        "state": row.state,
        "input_format": row.input_format,
        "output_format": row.output_format,
        "total_rows": row.total_rows,
        "rows_succeeded": row.rows_succeeded,
        "rows_failed": row.rows_failed,
        "rows_done": processed,
        "chunk_size": row.chunk_size,
        "chunks_total": -(-row.total_rows // row.chunk_size),
        "chunks_done": row.chunks_done,
        "parallelism": row.parallelism,
        "rows_per_s": round(rate, 1) if rate is not None else None,
        "eta_s": round(eta, 1) if eta is not None else None,
        "runs": row.runs,
        "runner": row.lease_owner,  # the gateway running it (host:pid:...), while one does
        "created_at": row.created_at.isoformat(),
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "error": row.error,
        # An S3 source's job: where its results and errors files go, and whether they are there.
        "output_uri": row.output_uri,
        "errors_uri": row.errors_uri,
        "uploaded_at": row.uploaded_at.isoformat() if row.uploaded_at else None,
        "upload_error": row.upload_error,
    }
