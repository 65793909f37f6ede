"""Native REST of batch jobs (``coldbrew.jobs.batch``; docs/ASYNC.md "Batch jobs").

- ``POST /v1/functions/{name}/jobs?format=csv|jsonl|parquet[&output_format=][&parallelism=]
  [&shape=]``: the body is the input file, streamed to the job's folder as it arrives (at most
  ``COLDBREW_MAX_BUNDLE_BYTES``), checked completely (400 with the line of the first record that
  is not parseable), then committed: 201 with the job. Admins may instead name a file on the
  gateway's machine (``?path=/abs/input.csv[&out=/abs/results.csv]``; no body): results are
  then written beside it.
- ``GET /v1/functions/{name}/jobs``, ``GET /v1/jobs``: jobs, newest first (``GET /v1/jobs``
  shows only the functions the caller sees).
- ``GET /v1/jobs/{id}``: counts, rows/s, ETA. ``GET /v1/jobs/{id}/results`` and ``.../errors``:
  the files of a completed job.
- ``POST /v1/jobs/{id}/cancel`` or ``DELETE /v1/jobs/{id}``: cancel.

A job belongs to its function: a caller scoped to other functions gets NOT_FOUND for it, exactly
as for the function itself; cancelling needs the ``invoke`` permission on it.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from coldbrew import errors
from coldbrew.gateway.auth import current
from coldbrew.gateway.body import too_large
from coldbrew.gateway.errors import json_response
from coldbrew.gateway.policy import Endpoint, anyone, function
from coldbrew.gateway.targets import split_qualifier
from coldbrew.jobs.batch import SHAPES, BatchJobs
from coldbrew.jobs.batch_formats import check_format, format_of
from coldbrew.security.errors import Forbidden

FLUSH_BYTES = 1024 * 1024


def _batch(request: Request) -> BatchJobs:
    return request.app.state.batch  # type: ignore[no-any-return]


def _number(request: Request, key: str) -> int | None:
    raw = request.query_params.get(key)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
        raise errors.ValidationError(f"{key} must be a whole number")
    return int(raw)


async def _receive(request: Request, saved: Path, limit: int) -> None:
    """The body to ``saved``, counted as it arrives, written off the event loop."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    received, pending = 0, bytearray()
    with saved.open("wb") as out:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large(limit)
            pending += chunk
            if len(pending) >= FLUSH_BYTES:
                data, pending = bytes(pending), bytearray()
                await asyncio.to_thread(out.write, data)
        await asyncio.to_thread(out.write, bytes(pending))


async def submit(request: Request) -> Response:
    name, qualifier = split_qualifier(request.path_params["name"])
    query = request.query_params
    principal = current(request)
    batch = _batch(request)
    server_path = query.get("path")
    if server_path is not None and principal.role != "admin":
        raise Forbidden("only admins may name a file on the gateway (?path=); upload it instead")
    fmt = query.get("format")
    if fmt is None:
        named = server_path or query.get("filename")
        if not named:
            raise errors.ValidationError("say the input's format: ?format=csv, jsonl or parquet")
        fmt = format_of(named)
    # Checked before anything is named after them or received.
    check_format(fmt)
    out_path = Path(query["out"]) if server_path is not None and query.get("out") else None
    if out_path is not None and (not out_path.is_absolute() or "\x00" in str(out_path)):
        raise errors.ValidationError("out must be an absolute path on the gateway")
    named_out = format_of(out_path.name) if out_path is not None else None
    output_format = check_format(query.get("output_format") or named_out or fmt)
    shape = query.get("shape")
    if shape is not None and shape not in SHAPES:
        raise errors.ValidationError(f"shape must be one of {', '.join(SHAPES)}")
    parallelism = _number(request, "parallelism")
    job_id, folder = await asyncio.to_thread(batch.new_folder)
    try:
        # An unknown function is refused before a byte of its input is read.
        admitted = await batch.admit(job_id, name, qualifier, principal)
        if server_path is not None:
            source = Path(server_path)
            if not _readable_file(source):
                raise errors.ValidationError(f"no file {server_path!r} on the gateway")
            out_path = out_path or source.with_name(f"{_stem(source)}.results.{output_format}")
        else:
            source = folder / f"input.{fmt}"
            limit = request.app.state.platform.settings.max_bundle_bytes
            await _receive(request, source, limit)
        job = await batch.submit(
            job_id,
            name,
            qualifier,
            principal,
            source,
            fmt,
            output_format,
            out_path,
            parallelism,
            shape,
            admitted,
        )
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, folder, True)
        raise
    return json_response(201, job, {"location": f"/v1/jobs/{job_id}"})


def _readable_file(path: Path) -> bool:
    try:  # a NUL or an overlong name raises instead of answering False
        return path.is_absolute() and path.is_file()
    except (OSError, ValueError):
        return False


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


async def _visible(request: Request) -> dict[str, Any]:
    """The path's job, NOT_FOUND when it does not exist or its function is out of scope."""
    job_id = request.path_params["job_id"]
    found = await asyncio.to_thread(_batch(request).store.get, job_id)
    principal = current(request)
    if found is None or not principal.sees(found["function"]):
        raise errors.NotFound(f"no batch job '{job_id}'")
    return found


async def list_function_jobs(request: Request) -> Response:
    name = split_qualifier(request.path_params["name"])[0]
    await asyncio.to_thread(request.app.state.platform.registry.get_function, name)
    found = await asyncio.to_thread(_batch(request).store.list, name)
    return json_response(200, {"jobs": found})


async def list_jobs(request: Request) -> Response:
    principal = current(request)
    found = await asyncio.to_thread(_batch(request).store.list, None, 1000)
    return json_response(200, {"jobs": [j for j in found if principal.sees(j["function"])][:100]})


async def get_job(request: Request) -> Response:
    return json_response(200, await _visible(request))


async def cancel_job(request: Request) -> Response:
    job = await _visible(request)
    cancelled = await _batch(request).cancel(job["id"])
    return json_response(200, cancelled)


async def _file(request: Request, which: str) -> Response:
    job = await _visible(request)
    if job["state"] != "completed":
        raise errors.Conflict(f"batch job '{job['id']}' is {job['state']}, not completed")
    paths = await asyncio.to_thread(_batch(request).store.paths, job["id"])
    path = Path(paths[which])
    if not path.is_file():
        raise errors.NotFound(f"the {which} file of batch job '{job['id']}' is gone")
    return FileResponse(path, filename=path.name)


async def results(request: Request) -> Response:
    return await _file(request, "output_path")


async def failures(request: Request) -> Response:
    return await _file(request, "errors_path")


def endpoints() -> list[Endpoint]:
    job = "/v1/jobs/{job_id}"
    return [
        Endpoint("/v1/functions/{name}/jobs", submit, "POST", function("invoke")),
        Endpoint("/v1/functions/{name}/jobs", list_function_jobs, "GET", function("read")),
        Endpoint("/v1/jobs", list_jobs, "GET", anyone("read")),
        Endpoint(job, get_job, "GET", anyone("read")),
        Endpoint(job, cancel_job, "DELETE", anyone("invoke", "job.cancel")),
        Endpoint(f"{job}/cancel", cancel_job, "POST", anyone("invoke", "job.cancel")),
        Endpoint(f"{job}/results", results, "GET", anyone("read")),
        Endpoint(f"{job}/errors", failures, "GET", anyone("read")),
    ]
