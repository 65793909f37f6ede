"""``batch_job = true`` on an object source: each new ``.csv`` / ``.jsonl`` / ``.parquet``
object becomes a batch job of the function (jobs/batch.py) instead of one async event.

- **folder**: the file itself is the job's input; results and errors are written beside it
  (``data.csv`` -> ``data.results.csv`` and ``data.errors.csv``), or into ``batch_output``.
  Those output names are never taken for new input (``*.results.*`` / ``*.errors.*``).
- **s3**: the object is downloaded into the job's folder, the job runs there, and once it
  completes (every row done, some perhaps failed) its results and errors files are uploaded
  beside the object in the input's format (``prefix/data.csv`` -> ``prefix/data.results.csv``
  and ``prefix/data.errors.csv``), or under ``batch_output`` (a key prefix, or
  ``s3://bucket/prefix/``). The same ``*.results.*`` / ``*.errors.*`` rule keeps those keys
  from being taken as input. The errors object is uploaded first, so the results object
  appearing means both are there. Cancelled and failed jobs upload nothing (a file that
  cannot be parsed, too: its error, naming the line, is on the job).

The upload is at least once and idempotent: the targets are committed with the job
(``output_uri``, ``errors_uri``), and the source uploads every completed job of its own that
has no ``uploaded_at`` after each poll (``ResultUploads``), reading that from the registry
each time, so a gateway that stops after a job completes and before its upload uploads after
its restart (the same bytes under the same keys, if it had got as far as a PUT). A failed
upload (a bucket gone, a denied PUT) is logged, kept in the job's ``upload_error``
(``coldbrew batch status``) and in the source's last error, and retried with a backoff; it
never stops the source.

Exactly one job per object, as for events (objects.py): the job's id is derived from the
source and the object's digest, the job is committed *before* the object is marked seen, and
a job that already exists under that id counts as created. A gateway that dies between the two
polls the object again after its restart and finds the job. An input that cannot be parsed
becomes a ``failed`` job whose error names the line (``coldbrew batch status``), never a
source that stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from coldbrew import errors
from coldbrew.jobs import batch_formats as formats
from coldbrew.jobs import policy
from coldbrew.jobs.batch_store import FAILED, Upload
from coldbrew.registry.batchjobs import BatchJobRow
from coldbrew.security.principal import ANONYMOUS

if TYPE_CHECKING:
    from coldbrew.jobs.sources.objects import ObjectSource, StoredObject

log = logging.getLogger("coldbrew.sources")
JOB_NAMESPACE = uuid.UUID("5d1c0f8e-7f0b-4c55-9a53-0b7c01dbb10b")
OUTPUT_MARKERS = (".results", ".errors")
UNPARSEABLE = "input is not parseable"
"""How batch_formats' errors about the file's content begin (an empty file, a bad line)."""
UPLOAD_BACKOFF_MAX_S = 300.0
"""A failing upload is retried at the source's next poll, then after twice as long each time
up to this."""


def is_input(key: str) -> bool:
    """A key a batch source takes as a job's input: a batch format, not a job's output."""
    try:
        formats.format_of(key)
    except errors.ValidationError:
        return False
    stem = _stem(Path(key).name)
    return not stem.endswith(OUTPUT_MARKERS)


def job_id(source: ObjectSource, obj: StoredObject) -> str:
    """The same content under the same key of the same source is always the same job (a
    UUID, as other ids): a file copied in again unchanged (a new mtime, so a new digest for
    the seen-set) finds its job and runs nothing twice; changed content is a new job."""
    content = obj.etag  # S3: the object's ETag
    if obj.path is not None:  # a file: the MD5 of what it holds now
        digest = hashlib.md5(usedforsecurity=False)
        with open(obj.path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        content = digest.hexdigest()
    name = f"{source.kind}:{source.source_id}:{obj.key}:{content}"
    return str(uuid.uuid5(JOB_NAMESPACE, name))


async def submit(source: ObjectSource, obj: StoredObject) -> bool:
    """Create the object's batch job; True once the object need not be tried again."""
    jobs = source.batch
    if jobs is None:  # a gateway built without batch jobs: say so, try again later
        source.state.error(f"{obj.key}: batch jobs are not running on this gateway")
        return False
    try:
        ident = await asyncio.to_thread(job_id, source, obj)
    except FileNotFoundError:
        return True  # removed since the listing: nothing to run
    if await asyncio.to_thread(jobs.store.get, ident) is not None:
        return True  # created before a crash (or by another gateway): marked seen now
    fmt = formats.format_of(obj.key)
    folder = jobs.root / ident
    try:
        output = await asyncio.to_thread(_output_path, source, obj, fmt)
        upload = upload_targets(source, obj, fmt)
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        input_path = await asyncio.to_thread(_input_path, source, obj, folder)
        created = await jobs.submit(
            ident,
            source.function,
            source.config.qualifier,
            ANONYMOUS,  # as the source's events: the function's own limits, no caller's
            input_path,
            fmt,
            output_path=output,
            source_id=source.source_id if upload else None,
            upload=upload,
        )
    except IntegrityError:
        return True  # another gateway committed the same job first
    except errors.ColdbrewError as exc:
        if exc.code == "VALIDATION_ERROR" and exc.message.startswith(UNPARSEABLE):
            # The file itself is bad (the message names its line): a failed job says so.
            await asyncio.to_thread(_failed_job, jobs, source, ident, folder, obj, fmt, exc)
            source.state.delivered += 1
            return True
        source.state.error(f"{obj.key}: {exc.code}: {exc.message}")
        if policy.failure_kind(exc.code) == "fatal":
            source.state.dropped += 1
            log.warning("%s source %s: %s refused: %s", source.kind, source.function, obj.key, exc)
            return True
        return False
    source.state.delivered += 1
    log.info(
        "%s source %s: %s -> batch job %s (%d rows)",
        source.kind,
        source.function,
        obj.key,
        ident,
        created["total_rows"],
        extra={"job_id": ident, "function": source.function},
    )
    return True


def _output_path(source: ObjectSource, obj: StoredObject, fmt: str) -> Path | None:
    """Where a folder's job writes its results (None: the job's folder, for S3)."""
    if obj.path is None:
        return None
    target = getattr(source.config, "batch_output", None)
    if target is not None:
        from coldbrew.jobs.sources.folder import check_folder

        # The gateway writes here: it must be a folder tenants may use, as the watched one.
        where = check_folder(target, getattr(source, "auth_enabled", False))
    else:
        where = Path(obj.path).parent
    return where / f"{_stem(Path(obj.key).name)}.results.{fmt}"


def upload_targets(source: ObjectSource, obj: StoredObject, fmt: str) -> tuple[str, str] | None:
    """The ``s3://`` URIs an S3 object's results and errors are uploaded to (None: a folder's
    job, written in place): beside the object, or under ``batch_output`` (a key prefix of the
    source's bucket, or ``s3://bucket/prefix``), named as a folder's are."""
    if obj.path is not None:
        return None
    output = source.config.batch_output_location()
    bucket, prefix = output or (source.config.bucket, obj.key.rpartition("/")[0])
    prefix = f"{prefix.rstrip('/')}/" if prefix.strip("/") else ""
    stem = _stem(obj.key.rpartition("/")[2])
    return (
        f"s3://{bucket}/{prefix}{stem}.results.{fmt}",
        f"s3://{bucket}/{prefix}{stem}.errors.{fmt}",
    )


def _input_path(source: ObjectSource, obj: StoredObject, folder: Path) -> Path:
    if obj.path is not None:
        return Path(obj.path)  # a watched file is read where it is
    target = folder / f"input{Path(obj.key).suffix.lower()}"
    if not target.exists():
        partial = target.with_name(target.name + ".partial")
        source._client().download_file(source.config.bucket, obj.key, str(partial))
        partial.replace(target)
    return target


def _failed_job(
    jobs: Any,
    source: ObjectSource,
    ident: str,
    folder: Path,
    obj: StoredObject,
    fmt: str,
    exc: errors.ColdbrewError,
) -> None:
    """A job that ends before it starts: its row, failed with the parse error, in one commit."""
    at = datetime.now(UTC)
    results = folder / f"results.{fmt}"
    row = BatchJobRow(
        id=ident,
        function_name=source.function,
        qualifier=source.config.qualifier,
        state=FAILED,
        home=jobs.home_key,
        folder=str(folder),
        input_path=obj.path or str(folder / obj.key),
        input_format=fmt,
        output_path=str(results),
        errors_path=str(folder / f"errors.{fmt}"),
        output_format=fmt,
        event_shape="record",
        total_rows=0,
        chunk_size=1,
        parallelism=1,
        chunks_done=0,
        rows_succeeded=0,
        rows_failed=0,
        runs=0,
        run_rows_at_start=0,
        created_at=at,
        finished_at=at,
        error={"code": exc.code, "message": f"{obj.key}: {exc.message}"},
    )
    try:
        with jobs.store.write() as session:
            session.add(row)
    except IntegrityError:
        pass  # the same failed job, recorded by another gateway
    log.warning("%s source %s: %s: %s", source.kind, source.function, obj.key, exc.message)


def _stem(name: str) -> str:
    for suffix in formats.SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


class ResultUploads:
    """An S3 source's completed jobs, uploaded beside their input objects (run every poll).

    What is pending is read from the registry each time (``uploaded_at`` unset), never kept
    here, so a gateway that stopped after a job completed but before its upload does it after
    its restart; only the retry backoff lives in memory. Uploading is idempotent (the same
    bytes under the same keys), so two gateways sharing the home, or a crash between the upload
    and its record, cost one more PUT and nothing else."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.pending = 0
        self._retry: dict[str, tuple[int, float]] = {}
        """job id -> (failures in a row, monotonic time of the next attempt)."""

    async def run(self) -> int:
        """Upload what is due; how many jobs' files were uploaded."""
        source, jobs = self.source, self.source.batch
        if jobs is None or not source.config.batch_job:
            return 0
        store = jobs.store
        due = await asyncio.to_thread(store.pending_uploads, source.source_id, jobs.home_key)
        self.pending = len(due)
        pending = {job.id for job in due}  # uploaded elsewhere, or pruned: no backoff to keep
        self._retry = {i: r for i, r in self._retry.items() if i in pending}
        done = 0
        for job in due:
            failures, next_at = self._retry.get(job.id, (0, 0.0))
            if time.monotonic() < next_at:
                continue
            try:
                await asyncio.to_thread(_upload, source, job)
            except Exception as exc:  # a bucket gone, a denied PUT: retried, never fatal
                await self._failed(job, failures + 1, _upload_reason(exc))
                continue
            await asyncio.to_thread(store.uploaded, job.id)
            self._retry.pop(job.id, None)
            self.pending -= 1
            done += 1
            log.info(
                "%s source %s: batch job %s -> %s",
                source.kind,
                source.function,
                job.id,
                job.output_uri,
                extra={"job_id": job.id, "function": source.function},
            )
        return done

    async def _failed(self, job: Upload, failures: int, reason: str) -> None:
        delay = min(UPLOAD_BACKOFF_MAX_S, self.source.config.poll_s * 2 ** (failures - 1))
        self._retry[job.id] = (failures, time.monotonic() + delay)
        said = f"{job.output_uri}: {reason}"
        self.source.state.error(f"batch job {job.id}: upload failed: {said}")
        if said != job.upload_error or failures == 1:  # once per new reason (and restart)
            log.warning(
                "%s source %s: batch job %s: upload failed (retried in %.0f s): %s",
                self.source.kind,
                self.source.function,
                job.id,
                delay,
                said,
                extra={"job_id": job.id, "function": self.source.function},
            )
            if said != job.upload_error:
                await asyncio.to_thread(self.source.batch.store.upload_failed, job.id, said)


def _upload(source: Any, job: Upload) -> None:
    """The errors file first, the results last: once the results object is there, so is the
    errors object (a consumer may wait for the results key alone)."""
    client = source._client()
    extra = {"Metadata": {"coldbrew-job-id": job.id}}
    for path, uri in ((job.errors_path, job.errors_uri), (job.output_path, job.output_uri)):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        client.upload_file(path, bucket, key, ExtraArgs=extra)


def _upload_reason(exc: BaseException) -> str:
    """What went wrong, without the gateway's local paths: boto3's S3UploadFailedError names
    the local file; the S3 error it wraps is what the caller can act on."""
    if type(exc).__name__ == "S3UploadFailedError" and exc.__context__ is not None:
        exc = exc.__context__
    if isinstance(exc, FileNotFoundError):
        return "the job's results file is gone from the gateway's home"
    return f"{type(exc).__name__}: {exc}"
