"""Batch jobs: a file of records run through one function, resumable after a crash
(docs/ASYNC.md "Batch jobs").

    submit: admit (unknown function: 404; the caller's limits charged once) -> every record
            checked (400 with the line of the first bad one) -> job row committed
    run:    a gateway claims the job (a lease, extended while it runs) -> the records, in
            chunks of the function's batch size, ``parallelism`` chunks at a time; each record
            is one invocation on the data plane (``kind="batch"``: metered, logged, counted;
            the batcher merges a chunk's records into handler batches) -> each finished chunk
            is written to its own file, renamed into place, then recorded in the registry
            with its counts in one transaction -> when every chunk is recorded, the chunk files
            are merged in input order into the results and errors files (written aside and
            renamed), and the job is completed.

A gateway killed mid-job leaves its lease to expire; the next claim (here after a restart, or
on another gateway sharing the home) skips the recorded chunks and runs the others again, so
every record is in the output exactly once. Records of a chunk that was running at the crash
run twice (at-least-once invocation); only one of the two answers is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter

from coldbrew import errors
from coldbrew.dataplane import Admitted, DataPlane, InvocationRequest
from coldbrew.ids import new_request_id, new_request_ids
from coldbrew.jobs import batch_formats as formats
from coldbrew.jobs import policy
from coldbrew.jobs.batch_store import (
    CANCELLED,
    COMPLETED,
    FAILED,
    Claimed,
    JobStore,
    NewJob,
)
from coldbrew.registry.engine import build_engine
from coldbrew.runtime.config import BUILTIN_MODEL_HANDLER
from coldbrew.security.principal import Principal
from coldbrew.settings import Settings

log = logging.getLogger("coldbrew.batch")

MAX_PARALLELISM = 64
DEFAULT_PARALLELISM = 4
UNBATCHED_CHUNK = 64
JOBS_PER_GATEWAY = 2
"""Jobs one gateway runs at once; more wait queued (their chunks share the same pools)."""
ROW_ATTEMPTS = 6
"""Tries of a record that meets a system error (a failed cold start, an internal error), with
a backoff from 0.25 s doubling to 4 s; then it is a failed row with that error's code. A
throttle is backpressure, not a failure: it is retried (same backoff) for as long as the job
runs. A function error is not retried."""
BACKPRESSURE = frozenset({"THROTTLED", "RATE_LIMITED", "QUOTA_EXCEEDED"})
SHAPES = ("packed", "instances", "record")
PRUNE_EVERY_S = 600.0


class JobFailed(Exception):
    """The job cannot go on (its function is gone): it ends ``failed`` with this error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message}


@dataclass(frozen=True, slots=True)
class RowResult:
    row: int
    line: int | None
    request_id: str
    body: bytes | None
    """The handler's answer (JSON bytes) when the row succeeded."""
    code: str | None = None
    message: str | None = None

    def line_bytes(self) -> bytes:
        if self.body is not None:
            out = {"row": self.row, "request_id": self.request_id}
            return orjson.dumps({**out, "output": orjson.Fragment(self.body)})
        return orjson.dumps(
            {
                "row": self.row,
                "line": self.line,
                "request_id": self.request_id,
                "code": self.code,
                "message": self.message,
            }
        )


class BatchMetrics:
    """On ``/metrics``, besides each record's invocation in the ordinary series."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()  # tests build many: never the global one
        self.rows = Counter(
            "coldbrew_batch_rows",
            "Records of batch jobs recorded, by outcome (succeeded, failed)",
            ["function", "outcome"],
            registry=registry,
        )
        self.jobs = Counter(
            "coldbrew_batch_jobs",
            "Batch jobs by event (submitted, resumed, completed, failed, cancelled)",
            ["function", "event"],
            registry=registry,
        )


class BatchJobs:
    def __init__(
        self, settings: Settings, dataplane: DataPlane, metrics: BatchMetrics | None = None
    ) -> None:
        self.settings = settings
        self.dataplane = dataplane
        self.metrics = metrics or BatchMetrics()
        self.engine = build_engine(settings.registry_url())
        self.store = JobStore(self.engine)
        self.root = settings.home / "jobs"
        self.home_key = f"{socket.gethostname()}:{settings.home.resolve()}"[:512]
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{new_request_id()[:8]}"[:64]
        self.lease_s = settings.async_visibility_s
        self.poll_s = settings.async_poll_s
        self.wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._running: dict[str, tuple[Claimed, asyncio.Task[None]]] = {}

    @classmethod
    def from_platform(cls, platform: Any) -> BatchJobs:
        observed = platform.observe.metrics.registry if platform.observe is not None else None
        return cls(platform.settings, platform.dataplane, BatchMetrics(observed))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.create_task(self._claim_loop(), name="coldbrew-batch")

    async def stop(self) -> None:
        """Stop running jobs and hand them back at once: a restart resumes them without
        waiting for their leases (their unrecorded chunks run again)."""
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        for job, task in list(self._running.values()):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.release, job)
        self.engine.dispose()

    # -- submitting --------------------------------------------------------------------------

    def new_folder(self) -> tuple[str, Path]:
        """A job id and the folder its files live in (the upload is received there)."""
        job_id = new_request_id()
        folder = self.root / job_id
        folder.mkdir(parents=True)
        return job_id, folder

    async def admit(
        self, job_id: str, function: str, qualifier: str | None, principal: Principal
    ) -> Admitted:
        """Accept a job of ``function`` from ``principal``: NOT_FOUND at once for an unknown
        function or qualifier, and the caller's limits charged once for the whole job."""
        probe = InvocationRequest(
            function, b"", job_id, qualifier, principal, protocol="batch", kind="batch"
        )
        probe.check_schema = False  # each record is checked when it runs
        return await self.dataplane.admit(probe)

    async def submit(
        self,
        job_id: str,
        function: str,
        qualifier: str | None,
        principal: Principal,
        input_path: Path,
        input_format: str,
        output_format: str | None = None,
        output_path: Path | None = None,
        parallelism: int | None = None,
        shape: str | None = None,
        admitted: Admitted | None = None,
        *,
        source_id: str | None = None,
        upload: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """Check and commit a job whose input is at ``input_path`` (received into the job's
        folder, or a server-side file). Results go to ``output_path`` (default: the job's
        folder), errors beside them. ``admitted``: what :meth:`admit` answered, when the caller
        admitted the job before receiving its input. ``source_id`` and ``upload`` (the results'
        and errors' ``s3://`` URIs): an S3 source's job, whose files that source uploads once
        the job completes (recorded with the job, so a restart does not lose the upload)."""
        formats.check_format(input_format)
        output_format = formats.check_format(output_format or input_format)
        if shape is not None and shape not in SHAPES:
            raise errors.ValidationError(f"shape must be one of {', '.join(SHAPES)}")
        if parallelism is not None and not 1 <= parallelism <= MAX_PARALLELISM:
            raise errors.ValidationError(f"parallelism must be 1 to {MAX_PARALLELISM}")
        admitted = admitted or await self.admit(job_id, function, qualifier, principal)
        total = await asyncio.to_thread(formats.count_records, input_path, input_format)
        config = admitted.version.config
        folder = self.root / job_id
        results = output_path or folder / f"results.{output_format}"
        failures = results.with_name(
            f"{_stem(results).removesuffix('.results')}.errors.{output_format}"
        )
        slots = max(1, config.max_instances * config.concurrency)
        chunk_size = (
            config.batching.max_batch_size if config.batches() else min(UNBATCHED_CHUNK, slots)
        )
        if qualifier in (None, "latest"):
            # One model for every row: a deploy during the job does not change its answers.
            qualifier = str(admitted.version.number)
        job = NewJob(
            id=job_id,
            function_name=function,
            qualifier=qualifier,
            home=self.home_key,
            folder=str(folder),
            input_path=str(input_path),
            input_format=input_format,
            output_path=str(results),
            errors_path=str(failures),
            output_format=output_format,
            event_shape=shape
            or ("packed" if config.handler == BUILTIN_MODEL_HANDLER else "record"),
            total_rows=total,
            chunk_size=chunk_size,
            parallelism=parallelism or _parallelism(config, chunk_size),
            caller_kind=principal.kind if principal.id else None,
            caller_id=principal.id,
            source_id=source_id,
            output_uri=upload[0] if upload else None,
            errors_uri=upload[1] if upload else None,
        )
        folder.mkdir(parents=True, exist_ok=True)
        created = await asyncio.to_thread(self.store.create, job)
        log.info(
            "batch job %s: %d records of %s for %s (chunks of %d, %d at a time)",
            job_id,
            total,
            input_format,
            function,
            job.chunk_size,
            job.parallelism,
            extra={"job_id": job_id, "function": function},
        )
        self.metrics.jobs.labels(function, "submitted").inc()
        self.wake.set()
        return created

    async def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Cancel a queued or running job; the job as it is now (None: no such job)."""
        before = await asyncio.to_thread(self.store.get, job_id)
        after = await asyncio.to_thread(self.store.cancel, job_id)
        if before is not None and after is not None and before["state"] != after["state"]:
            self.metrics.jobs.labels(after["function"], CANCELLED).inc()
        return after

    # -- running -----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        pruned_at = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if loop.time() - pruned_at > PRUNE_EVERY_S:
                pruned_at = loop.time()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self._prune)
            try:
                while len(self._running) < JOBS_PER_GATEWAY:
                    job = await asyncio.to_thread(
                        self.store.claim, self.owner, self.home_key, self.lease_s
                    )
                    if job is None:
                        break
                    task = asyncio.create_task(self._run(job), name=f"coldbrew-batch-{job.id}")
                    self._running[job.id] = (job, task)
                    task.add_done_callback(lambda _t, i=job.id: self._finished(i))
            except Exception:
                log.exception("could not claim batch jobs; trying again")
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(self.poll_s, 0.1) * 4)

    def _prune(self) -> None:
        """Finished jobs are kept as long as finished async events (COLDBREW_ASYNC_RETENTION_S),
        then their rows and folders (results of uploads with them) go."""
        for folder in self.store.prune(self.home_key, self.settings.async_retention_s):
            shutil.rmtree(folder, ignore_errors=True)

    def _finished(self, job_id: str) -> None:
        self._running.pop(job_id, None)
        self.wake.set()  # a slot for another job

    async def _run(self, job: Claimed) -> None:
        done = await asyncio.to_thread(self.store.done_chunks, job.id)
        log.info(
            "batch job %s: running (%d of %d chunks already done)",
            job.id,
            len(done),
            -(-job.total_rows // job.chunk_size),
            extra={"job_id": job.id, "function": job.function_name},
        )
        if done:
            self.metrics.jobs.labels(job.function_name, "resumed").inc()
        run = _Run(self, job, done)
        heartbeat = asyncio.create_task(run.heartbeat())
        try:
            await run.chunks()
        except JobFailed as failed:
            if await asyncio.to_thread(self.store.finish, job, FAILED, failed.error):
                self.metrics.jobs.labels(job.function_name, FAILED).inc()
            log.warning("batch job %s failed: %s", job.id, failed.error["message"])
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # a disk or database failure: the lease lapses, a rerun resumes
            log.exception("batch job %s stopped; it resumes when its lease expires", job.id)
            return
        finally:
            heartbeat.cancel()
        if run.lost:
            log.info("batch job %s: cancelled or taken over; stopped", job.id)
            found = await asyncio.to_thread(self.store.get, job.id)
            if found is not None and found["state"] == CANCELLED:
                await asyncio.to_thread(_tidy, job)
            return
        await asyncio.to_thread(_merge, job)
        if await asyncio.to_thread(self.store.finish, job, COMPLETED):
            self.metrics.jobs.labels(job.function_name, COMPLETED).inc()
            await asyncio.to_thread(_tidy, job)
            log.info("batch job %s completed", job.id, extra={"job_id": job.id})

    # -- one record --------------------------------------------------------------------------

    async def _invoke(
        self, job: Claimed, payload: bytes, request_id: str, principal: Principal
    ) -> bytes | tuple[str, str]:
        """One invocation with the job's retry rules: the answer, or ``(code, message)``."""
        delay, attempt = 0.25, 0
        while True:
            attempt += 1
            request = InvocationRequest(
                job.function_name,
                payload,
                request_id,
                job.qualifier,
                principal,
                protocol="batch",
                kind="batch",
                limited=False,  # the job was charged once, at submit
            )
            try:
                outcome = await self.dataplane.invoke(request)
            except errors.ColdbrewError as exc:
                if exc.code == "NOT_FOUND":
                    raise JobFailed(exc.code, exc.message) from None
                again = exc.code in BACKPRESSURE or attempt < ROW_ATTEMPTS
                if policy.failure_kind(exc.code) == "system" and again:
                    await asyncio.sleep(delay)
                    delay = min(4.0, delay * 2)
                    continue
                return exc.code, exc.message
            if outcome.error is not None:
                return outcome.error.code, outcome.error.message
            return _proxy_error(outcome.body) or outcome.body

    async def run_record(
        self, job: Claimed, record: formats.Record, principal: Principal, request_id: str
    ) -> RowResult:
        """One record, one invocation."""
        shape = "record" if job.event_shape == "record" else "instances"
        answer = await self._invoke(
            job, formats.to_event(record.value, shape), request_id, principal
        )
        if isinstance(answer, tuple):
            return _failed(record, request_id, *answer)
        return RowResult(record.row, record.line, request_id, answer)

    async def run_packed(
        self, job: Claimed, records: list[formats.Record], principal: Principal
    ) -> list[RowResult] | None:
        """A chunk as one invocation, ``{"instances": [row, ...]}``, its answer split back
        into one per row (every list as long as the chunk gives each row its item). None when
        the chunk cannot be packed or its invocation failed: then each row runs on its own, so
        that only the bad rows fail."""
        rows = [formats.feature_row(r.value) for r in records]
        if any(row is None for row in rows):
            return None
        request_id = new_request_id()
        payload = orjson.dumps({"instances": rows}, default=str)
        answer = await self._invoke(job, payload, request_id, principal)
        if isinstance(answer, tuple):
            return None
        split = formats.split_answer(answer, len(records))
        if split is None:
            return None
        return [
            RowResult(r.row, r.line, request_id, body)
            for r, body in zip(records, split, strict=True)
        ]


class _Run:
    """One run of one job: its chunks, ``parallelism`` at a time, and its lease."""

    def __init__(self, jobs: BatchJobs, job: Claimed, done: set[int]) -> None:
        self.jobs, self.job, self.done = jobs, job, done
        self.lost = False
        self.principal = Principal(
            id=job.caller_id,
            kind=job.caller_kind or "anonymous",  # type: ignore[arg-type]
            role="invoker",
        )
        self.chunk_dir = Path(job.folder) / "chunks"
        self.running: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """The job was cancelled or taken over: what still runs would not be recorded."""
        self.lost = True
        current = asyncio.current_task()
        for task in list(self.running):
            if task is not current:
                task.cancel()

    async def heartbeat(self) -> None:
        store = self.jobs.store
        while not self.lost:
            await asyncio.sleep(self.jobs.lease_s / 3)
            with contextlib.suppress(Exception):
                if not await asyncio.to_thread(store.extend, self.job, self.jobs.lease_s):
                    self.stop()

    async def chunks(self) -> None:
        job = self.job
        await asyncio.to_thread(self.chunk_dir.mkdir, parents=True, exist_ok=True)
        pending = formats.chunks(Path(job.input_path), job.input_format, job.chunk_size, self.done)
        slots = asyncio.Semaphore(job.parallelism)
        running = self.running
        try:
            while not self.lost:
                await slots.acquire()
                if self.lost:
                    break
                following = await asyncio.to_thread(next, pending, None)
                if following is None:
                    break
                task = asyncio.create_task(self.chunk(*following))
                running.add(task)
                task.add_done_callback(lambda t: (running.discard(t), slots.release()))
                # A failed chunk (the job cannot go on) stops the others at once.
                failed = [t for t in running if t.done() and t.exception() is not None]
                if failed:
                    raise failed[0].exception()  # type: ignore[misc]
            results = await asyncio.gather(*running, return_exceptions=True)
            if self.lost:
                return  # chunks cancelled with the job are not failures
        except BaseException:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def one_by_one(self, records: list[formats.Record]) -> list[RowResult]:
        ids = new_request_ids(len(records))
        return await asyncio.gather(
            *(
                self.jobs.run_record(self.job, r, self.principal, i)
                for r, i in zip(records, ids, strict=True)
            )
        )

    async def chunk(self, index: int, records: list[formats.Record]) -> None:
        packed = None
        if self.job.event_shape == "packed":
            packed = await self.jobs.run_packed(self.job, records, self.principal)
        rows = packed or await self.one_by_one(records)
        failed = sum(1 for r in rows if r.body is None)
        path = self.chunk_dir / f"{index:08d}.jsonl"
        await asyncio.to_thread(_write_atomically, path, [r.line_bytes() for r in rows])
        store = self.jobs.store
        if not await asyncio.to_thread(store.commit_chunk, self.job, index, len(rows), failed):
            self.stop()
            return
        counted = self.jobs.metrics.rows
        counted.labels(self.job.function_name, "succeeded").inc(len(rows) - failed)
        counted.labels(self.job.function_name, "failed").inc(failed)


def _parallelism(config: Any, chunk_size: int) -> int:
    """Chunks at once by default: up to DEFAULT_PARALLELISM, as many as the function's instance
    slots take, and no more rows in flight than its queue holds while its instances are still
    starting (more would only be throttled, and retried)."""
    slots = max(1, config.max_instances * config.concurrency)
    room = max(1, config.max_queue) * (chunk_size if config.batches() else 1)
    return max(1, min(DEFAULT_PARALLELISM, slots, room // chunk_size))


def _stem(path: Path) -> str:
    name = path.name
    for suffix in formats.SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _failed(record: formats.Record, request_id: str, code: str, message: str) -> RowResult:
    return RowResult(record.row, record.line, request_id, None, code, message)


def _proxy_error(body: bytes) -> tuple[str, str] | None:
    """A handler answer that is a Lambda proxy response with an error status (the built-in
    model handler's 400 for a bad row): ``(code, message)``."""
    if not body.startswith(b'{"statusCode"'):
        return None
    try:
        answer = orjson.loads(body)
        status = int(answer["statusCode"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if status < 400:
        return None
    try:
        error = orjson.loads(answer.get("body") or b"{}")["error"]
        return str(error["code"]), str(error["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"HTTP_{status}", str(answer.get("body", ""))[:1000]


def _write_atomically(path: Path, lines: list[bytes]) -> None:
    """A chunk file appears whole or not at all (written aside, then renamed). Not fsynced: a
    killed gateway's writes are in the page cache all the same, and a sync per chunk would
    cost more than the chunk (a machine that loses power may lose the latest chunks' files:
    docs/ASYNC.md)."""
    partial = path.with_suffix(".partial")
    partial.write_bytes(b"\n".join(lines) + b"\n")
    os.replace(partial, path)


def _merge(job: Claimed) -> None:
    """The chunk files, in input order, into the results and errors files (each written aside
    and renamed, so a crash here only means merging again)."""
    chunk_dir = Path(job.folder) / "chunks"
    output, failures = Path(job.output_path), Path(job.errors_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial_out = output.with_name(output.name + ".partial")
    partial_err = failures.with_name(failures.name + ".partial")
    results = formats.TableWriter(partial_out, job.output_format, formats.RESULT_COLUMNS)
    errs = formats.TableWriter(partial_err, job.output_format, formats.ERROR_COLUMNS)
    try:
        for index in range(-(-job.total_rows // job.chunk_size)):
            lines = (chunk_dir / f"{index:08d}.jsonl").read_bytes().splitlines()
            rows = [orjson.loads(line) for line in lines if line]
            results.write([r for r in rows if "output" in r])
            errs.write([r for r in rows if "output" not in r])
    finally:
        results.close()
        errs.close()
    os.replace(partial_out, output)
    os.replace(partial_err, failures)


def _tidy(job: Claimed) -> None:
    """A completed job keeps its results and errors; its chunk files and an uploaded input go
    (a cancelled job's too)."""
    folder = Path(job.folder)
    shutil.rmtree(folder / "chunks", ignore_errors=True)
    uploaded = Path(job.input_path)
    if uploaded.parent == folder:
        uploaded.unlink(missing_ok=True)


__all__ = ["CANCELLED", "BatchJobs", "JobFailed", "RowResult"]
