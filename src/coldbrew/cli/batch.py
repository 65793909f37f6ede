"""``coldbrew batch``: run a CSV, JSON Lines or Parquet file through a function (docs/ASYNC.md
"Batch jobs").

``submit`` uploads the file (streamed from disk) and the server keeps the job; ``--wait`` (or
``wait`` later) shows a live progress bar and, when the job completes, downloads the results
(input order, one request id per row) and the errors file beside the input or to ``--out``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column, Table

from coldbrew.cli import render
from coldbrew.cli.client import ColdbrewClient, ServerUnreachable, error_from_response
from coldbrew.cli.common import JsonOption, UrlOption, connect, err, fail, out

batch_app = typer.Typer(
    no_args_is_help=True, help="Batch jobs: a CSV, JSON Lines or Parquet file through a function."
)
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
FINAL = ("completed", "failed", "cancelled")
POLL_S = 0.5

OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Results file (.csv, .jsonl or .parquet; default: INPUT.results.<same kind>, beside "
        "the input); errors go beside it as NAME.errors.<kind>.",
    ),
]


def _format(path: Path) -> str:
    found = SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise fail(f"error: {path.name}: name it .csv, .jsonl (or .ndjson) or .parquet", 2)
    return found


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(path.suffix)] if path.suffix else name


def errors_path(results: Path) -> Path:
    """``results.csv`` -> ``results.errors.csv`` (``x.results.csv`` -> ``x.errors.csv``)."""
    stem = _stem(results)
    stem = stem[: -len(".results")] if stem.endswith(".results") else stem
    return results.with_name(f"{stem}.errors{results.suffix}")


@batch_app.command("submit")
def submit(
    name: Annotated[str, typer.Argument(help="Function, optionally NAME:ALIAS or NAME:VERSION.")],
    input_file: Annotated[
        Path, typer.Argument(metavar="INPUT", help="A .csv, .jsonl or .parquet file.")
    ],
    results: OutOption = None,
    parallelism: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Chunks run at once (default: up to 4, by capacity)."),
    ] = None,
    shape: Annotated[
        str | None,
        typer.Option(
            help="How records become events: 'packed' (a chunk's rows as one "
            '{"instances": [...]} invocation, split back per row; the default for model '
            "functions), 'instances' ({\"instances\": [row]} per row) or 'record' (the record "
            "as it is, per row; the default for handlers)."
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job and download.")] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Submit INPUT as a batch job of NAME; prints the job id (and follows it with --wait)."""
    if not input_file.is_file():
        raise fail(f"error: no file {input_file}", 2)
    input_format = _format(input_file)
    results = results or input_file.with_name(f"{_stem(input_file)}.results{input_file.suffix}")
    params: dict[str, Any] = {
        "format": input_format,
        "output_format": _format(results),
        "filename": input_file.name,
    }
    if parallelism:
        params["parallelism"] = parallelism
    if shape:
        params["shape"] = shape
    with connect(url) as client, input_file.open("rb") as body:
        headers = {"content-type": "application/octet-stream"}
        job = client.request_json(
            "POST", f"/v1/functions/{name}/jobs", params=params, content=body, headers=headers
        )
        if as_json and not wait:
            render.print_json(out(), job)
            return
        err().print(f"job {job['id']}: {job['total_rows']} rows", markup=False)
        if not wait:
            out().print(job["id"], markup=False)
            return
        _follow_and_fetch(client, job["id"], results, as_json)


@batch_app.command("wait")
def wait_job(
    job_id: str,
    results: OutOption = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Follow a job with a progress bar; when it completes, download its results and errors
    (default: JOB_ID.results.<kind> here)."""
    with connect(url) as client:
        _follow_and_fetch(client, job_id, results, as_json)


@batch_app.command("status")
def status(job_id: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """A job's state, counts, throughput and ETA."""
    with connect(url) as client:
        job = client.request_json("GET", f"/v1/jobs/{job_id}")
    if as_json:
        render.print_json(out(), job)
        return
    for key in ("id", "function", "state", "total_rows", "rows_succeeded", "rows_failed"):
        out().print(f"{key:15} {job[key]}", markup=False)
    out().print(f"{'chunks':15} {job['chunks_done']}/{job['chunks_total']}", markup=False)
    out().print(f"{'rows/s':15} {_num(job['rows_per_s'])}   eta {_eta(job)}", markup=False)
    if job.get("error"):
        out().print(f"{'error':15} {job['error']['code']}: {job['error']['message']}", markup=False)
    if job.get("output_uri"):  # an S3 source's job: its files go beside the input object
        uploaded = job.get("uploaded_at") or ("pending" if job["state"] == "completed" else "-")
        out().print(f"{'output':15} {job['output_uri']}", markup=False)
        out().print(f"{'errors file':15} {job['errors_uri']}", markup=False)
        out().print(f"{'uploaded':15} {uploaded}", markup=False)
        if job.get("upload_error"):
            out().print(f"{'upload error':15} {job['upload_error']} (retried)", markup=False)


@batch_app.command("ls")
def ls(
    name: Annotated[str | None, typer.Argument(help="Only this function's jobs.")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Batch jobs, newest first."""
    path = f"/v1/functions/{name}/jobs" if name else "/v1/jobs"
    with connect(url) as client:
        jobs = client.request_json("GET", path)["jobs"]
    if as_json:
        render.print_json(out(), jobs)
        return
    table = Table("function", "state", "rows", "failed", "rows/s", "created")
    table.columns.insert(0, Column("job", no_wrap=True))  # ids are copied into other commands
    for job in jobs:
        table.add_row(
            job["id"],
            job["function"],
            job["state"],
            f"{job['rows_done']}/{job['total_rows']}",
            str(job["rows_failed"]),
            _num(job["rows_per_s"]),
            render.short_time(job["created_at"]),
        )
    out().print(table)


@batch_app.command("cancel")
def cancel(job_id: str, url: UrlOption = None) -> None:
    """Stop a job: no further chunk is started or recorded; it ends cancelled."""
    with connect(url) as client:
        job = client.request_json("POST", f"/v1/jobs/{job_id}/cancel")
    out().print(f"job {job['id']}: {job['state']}", markup=False)


# -- following and downloading -------------------------------------------------------------------


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _eta(job: dict[str, Any]) -> str:
    eta = job.get("eta_s")
    return "-" if eta is None else f"{eta:.0f} s"


def _follow(client: ColdbrewClient, job_id: str) -> dict[str, Any]:
    job = client.request_json("GET", f"/v1/jobs/{job_id}")
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows  {task.fields[rate]} rows/s  eta {task.fields[eta]}  {task.fields[bad]}"),
    )
    with Progress(*columns, console=err(), transient=False) as progress:
        task = progress.add_task(job["state"], total=job["total_rows"], rate="-", eta="-", bad="")
        while True:
            failed = f"{job['rows_failed']} failed" if job["rows_failed"] else ""
            progress.update(
                task,
                description=job["state"],
                completed=job["rows_done"],
                rate=_num(job["rows_per_s"]),
                eta=_eta(job),
                bad=failed,
            )
            if job["state"] in FINAL:
                return job
            time.sleep(POLL_S)
            job = client.request_json("GET", f"/v1/jobs/{job_id}")


def _download(client: ColdbrewClient, path: str, to: Path) -> None:
    partial = to.with_name(to.name + ".partial")
    try:
        with client._http.stream("GET", path) as response:
            if response.is_error:
                response.read()
                raise error_from_response(response)
            with partial.open("wb") as file:
                for data in response.iter_bytes():
                    file.write(data)
        partial.replace(to)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise ServerUnreachable(client.url, str(exc)) from None
    except OSError as exc:
        raise fail(f"error: cannot write {to}: {exc.strerror or exc}", 1) from None


def _follow_and_fetch(
    client: ColdbrewClient, job_id: str, results: Path | None, as_json: bool
) -> None:
    job = _follow(client, job_id)
    if job["state"] != "completed":
        if as_json:
            render.print_json(out(), job)
        reason = f": {job['error']['code']}: {job['error']['message']}" if job.get("error") else ""
        raise fail(f"job {job_id} {job['state']}{reason}", 1)
    results = results or Path(f"{job_id}.results.{job['output_format']}")
    failures = errors_path(results)
    _download(client, f"/v1/jobs/{job_id}/results", results)
    _download(client, f"/v1/jobs/{job_id}/errors", failures)
    if as_json:
        render.print_json(out(), {**job, "results": str(results), "errors": str(failures)})
        return
    out().print(
        f"job {job_id} completed: {job['rows_succeeded']} rows -> {results}, "
        f"{job['rows_failed']} failed -> {failures}",
        markup=False,
    )
