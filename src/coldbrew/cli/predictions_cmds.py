"""``coldbrew predictions NAME --since 1h --out file.parquet|jsonl|csv`` (docs/DATA.md).

The server streams JSON lines; this command writes them as they come, in the format the
output's suffix names (``--format`` to say it otherwise), so an export never holds the whole
log in memory: Parquet is written in row groups of ``GROUP`` rows.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import httpx
import orjson
import typer

from coldbrew.cli.client import ServerUnreachable, error_from_response
from coldbrew.cli.common import UrlOption, connect, err, fail

COLUMNS = [
    "request_id",
    "function_name",
    "version",
    "caller",
    "at",
    "latency_ms",
    "status",
    "input",
    "input_sha256",
    "output",
]
FORMATS = ("jsonl", "csv", "parquet")
GROUP = 10_000


def _format(out: Path | None, given: str | None) -> str:
    if given:
        if given not in FORMATS:
            raise fail(f"error: --format is one of {', '.join(FORMATS)}", 2)
        return given
    if out is None:
        return "jsonl"
    suffix = out.suffix.lower().lstrip(".")
    found = {"jsonl": "jsonl", "ndjson": "jsonl", "json": "jsonl", "csv": "csv"}.get(suffix)
    if suffix in ("parquet", "pq"):
        found = "parquet"
    if found is None:
        raise fail(f"error: cannot tell the format of {out.name}; use --format", 2)
    return found


def write_jsonl(lines: Iterator[bytes], out: TextIO) -> int:
    count = 0
    for line in lines:
        out.write(line.decode() + "\n")
        count += 1
    return count


def write_csv(lines: Iterator[bytes], out: TextIO) -> int:
    writer = csv.DictWriter(out, COLUMNS, extrasaction="ignore")
    writer.writeheader()
    count = 0
    for line in lines:
        writer.writerow(orjson.loads(line))
        count += 1
    return count


def write_parquet(lines: Iterator[bytes], path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("request_id", pa.string()),
            ("function_name", pa.string()),
            ("version", pa.int64()),
            ("caller", pa.string()),
            ("at", pa.timestamp("us", tz="UTC")),
            ("latency_ms", pa.float64()),
            ("status", pa.string()),
            ("input", pa.string()),
            ("input_sha256", pa.string()),
            ("output", pa.string()),
        ]
    )
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        group: list[dict[str, Any]] = []
        for line in lines:
            row = orjson.loads(line)
            row["at"] = datetime.fromisoformat(row["at"])
            group.append(row)
            if len(group) >= GROUP:
                writer.write_table(pa.Table.from_pylist(group, schema))
                count, group = count + len(group), []
        if group or count == 0:
            writer.write_table(pa.Table.from_pylist(group, schema))
            count += len(group)
    return count


def predictions(
    name: str,
    since: Annotated[
        str | None, typer.Option(help="From when: 1h, 30m, 7d or an ISO 8601 time.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Until when (same forms).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many rows.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File: .parquet, .jsonl or .csv.")
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl, csv or parquet.")] = None,
    url: UrlOption = None,
) -> None:
    """Export the prediction log of NAME (what log_predictions sampled), oldest first."""
    chosen = _format(out, fmt)
    if chosen == "parquet" and out is None:
        raise fail("error: Parquet needs --out FILE", 2)
    params = {k: v for k, v in (("since", since), ("until", until), ("limit", limit)) if v}
    with connect(url) as client:
        try:
            with client._http.stream(
                "GET", f"/v1/functions/{name}/predictions", params=params
            ) as r:
                if r.is_error:
                    r.read()
                    raise error_from_response(r)
                lines = (line.encode() for line in r.iter_lines() if line)
                count = _write(chosen, lines, out)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServerUnreachable(client.url, str(exc)) from None
        except OSError as exc:
            raise fail(f"error: cannot write {out}: {exc.strerror or exc}", 1) from None
    if out is not None:
        err().print(f"wrote {count} predictions to {out}", markup=False)


def _write(chosen: str, lines: Iterator[bytes], out: Path | None) -> int:
    if chosen == "parquet":
        assert out is not None
        return write_parquet(lines, out)
    writer = write_csv if chosen == "csv" else write_jsonl
    if out is None:
        return writer(lines, sys.stdout)
    with out.open("w", newline="") as file:
        return writer(lines, file)
