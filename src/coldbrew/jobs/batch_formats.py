"""The files of a batch job: reading CSV, JSON Lines and Parquet input record by record, turning
a record into an event, and writing results and errors in any of the three formats.

- **CSV**: a header line, then one record per line (RFC 4180 quoting, UTF-8). A field is a
  number when it reads as one, ``null`` when empty, else a string. A record is the object
  ``{column: value}`` (in column order).
- **JSON Lines** (``.jsonl``, ``.ndjson``): one JSON value per line; blank lines are skipped.
- **Parquet**: each row is the object ``{column: value}`` (pyarrow).

Input is checked completely at submit (:func:`count_records`): the first line that is not
parseable is a ``VALIDATION_ERROR`` naming it, before any row runs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from coldbrew import errors

FORMATS = ("csv", "jsonl", "parquet")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
RESULT_COLUMNS = ("row", "request_id", "output")
ERROR_COLUMNS = ("row", "line", "request_id", "code", "message")
MAX_LINE_BYTES = 16 * 1024 * 1024
"""One record larger than this is refused (a file without newlines would be read whole)."""


@dataclass(frozen=True, slots=True)
class Record:
    row: int
    """0-based position among the file's records: the order of the output."""
    line: int | None
    """1-based line of the input (CSV, JSON Lines) where the record ends; None for Parquet."""
    value: Any


def format_of(filename: str) -> str:
    """``csv``, ``jsonl`` or ``parquet`` from a file name, or VALIDATION_ERROR."""
    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise errors.ValidationError(
            f"cannot tell the format of {filename!r}: name it .csv, .jsonl (or .ndjson) or .parquet"
        )
    return SUFFIXES[suffix]


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise errors.ValidationError(f"format must be one of {', '.join(FORMATS)}, not {name!r}")
    return name


def _bad(line: int | None, message: str) -> errors.ValidationError:
    if line is None:
        return errors.ValidationError(f"input is not parseable: {message}")
    return errors.ValidationError(f"input is not parseable: line {line}: {message}", line=line)


# -- reading ---------------------------------------------------------------------------------


def _text_lines(binary: Iterable[bytes]) -> Iterator[str]:
    """UTF-8 lines, with the number of the line that is not UTF-8 (or too long) in the error."""
    for number, raw in enumerate(binary, start=1):
        if len(raw) > MAX_LINE_BYTES:
            raise _bad(number, f"longer than {MAX_LINE_BYTES // (1024 * 1024)} MB")
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise _bad(number, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None


def _scalar(text: str) -> Any:
    """A CSV field as JSON: a number when it reads as one (finite), null when empty, else the
    text. One ``float()`` for every field: this runs for every cell of the file."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    if value - value != 0:  # inf or nan: not JSON numbers
        return text
    if value.is_integer() and text.lstrip("+-").isdigit():
        return int(text)
    return value


def _csv_records(path: Path, parse: bool) -> Iterator[Record]:
    with path.open("rb") as file:
        reader = csv.reader(_text_lines(file), strict=True)
        try:
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise _bad(1, "a CSV input starts with a header line naming its columns")
            if len(set(header)) != len(header):
                raise _bad(1, "the header names a column twice")
            row = 0
            for fields in reader:
                if not fields:
                    continue  # a blank line
                if len(fields) != len(header):
                    raise _bad(
                        reader.line_num, f"{len(fields)} fields, the header has {len(header)}"
                    )
                value = dict(zip(header, map(_scalar, fields), strict=True)) if parse else None
                yield Record(row, reader.line_num, value)
                row += 1
        except csv.Error as exc:
            raise _bad(reader.line_num, str(exc)) from None


def _jsonl_records(path: Path, parse: bool) -> Iterator[Record]:
    row = 0
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise _bad(number, f"longer than {MAX_LINE_BYTES // (1024 * 1024)} MB")
            if not raw.strip():
                continue
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise _bad(number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            yield Record(row, number, value if parse else None)
            row += 1


def _parquet_file(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise _bad(None, f"not a Parquet file ({exc})") from None


def _parquet_records(path: Path, batch_rows: int) -> Iterator[Record]:
    import pyarrow as pa

    row = 0
    try:
        for batch in _parquet_file(path).iter_batches(batch_size=batch_rows):
            for value in batch.to_pylist():
                yield Record(row, None, value)
                row += 1
    except pa.ArrowException as exc:
        raise _bad(None, f"Parquet row {row} cannot be read ({exc})") from None


def records(path: Path, fmt: str, parse: bool = True, batch_rows: int = 1024) -> Iterator[Record]:
    """Every record of the file, in order. ``parse=False`` checks the syntax but leaves
    ``value`` None (what counting and skipping need)."""
    if fmt == "csv":
        return _csv_records(path, parse)
    if fmt == "jsonl":
        return _jsonl_records(path, parse)
    return _parquet_records(path, batch_rows)


def count_records(path: Path, fmt: str) -> int:
    """How many records the file holds, having checked every one: VALIDATION_ERROR with the
    line of the first that is not parseable, or when there is none."""
    try:
        if fmt == "parquet":
            total = int(_parquet_file(path).metadata.num_rows)
        else:
            total = sum(1 for _ in records(path, fmt, parse=False))
    except OSError as exc:  # a server-side input the gateway may not read
        raise _bad(None, f"it cannot be read ({exc.strerror or exc})") from None
    if total == 0:
        raise _bad(None, "it holds no records")
    return total


def chunks(path: Path, fmt: str, size: int, skip: set[int]) -> Iterator[tuple[int, list[Record]]]:
    """``(chunk index, its records)`` in order, leaving out the chunks in ``skip`` (done)."""
    chunk: list[Record] = []
    for record in records(path, fmt, batch_rows=size):
        index = record.row // size
        if index in skip:
            continue
        if chunk and chunk[0].row // size != index:
            yield chunk[0].row // size, chunk
            chunk = []
        chunk.append(record)
    if chunk:
        yield chunk[0].row // size, chunk


# -- events ------------------------------------------------------------------------------------

_INPUT_KEYS = ("instances", "inputs")
WHOLE_KEYS = frozenset({"classes"})
"""Lists of the built-in model handler's answer that describe the model, not the rows (a chunk
of two rows of a two-class model must not split its class labels)."""


def to_event(value: Any, shape: str) -> bytes:
    """The event one record becomes. ``record``: the record itself. ``instances`` (the
    built-in model handler): one feature row, ``{"instances": [[...]]}``; a JSON object that
    already has ``instances`` (or ``inputs``) is sent as it is."""
    if shape == "instances":
        if isinstance(value, dict):
            if any(key in value for key in _INPUT_KEYS):
                return orjson.dumps(value, default=str)
            value = list(value.values())
        elif not isinstance(value, list):
            value = [value]
        return orjson.dumps({"instances": [value]}, default=str)
    return orjson.dumps(value, default=str)


def feature_row(value: Any) -> list[Any] | None:
    """A record as one feature row of a packed ``{"instances": [...]}`` event, or None when it
    is not one (an object that holds its own ``instances``)."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return None if any(key in value for key in _INPUT_KEYS) else list(value.values())
    return [value]


def split_answer(body: bytes, rows: int) -> list[bytes] | None:
    """A packed answer cut into one answer per row: each list as long as the chunk contributes
    its item (as a list of one: the shape a one-row event gets back), anything else (and
    ``classes``) is kept whole. None when nothing in it is per row."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    per_row = [
        k
        for k, v in answer.items()
        if isinstance(v, list) and len(v) == rows and k not in WHOLE_KEYS
    ]
    if not per_row:
        return None
    return [
        orjson.dumps({k: [v[i]] if k in per_row else v for k, v in answer.items()})
        for i in range(rows)
    ]


# -- writing -----------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    """A CSV or Parquet cell: JSON text for anything that is not a plain scalar."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return orjson.dumps(value).decode()


class TableWriter:
    """Rows of fixed columns into one CSV, JSON Lines or Parquet file."""

    def __init__(self, path: Path, fmt: str, columns: tuple[str, ...]) -> None:
        self.path, self.fmt, self.columns = path, fmt, columns
        self._file: Any = None
        self._pending: list[dict[str, Any]] = []
        self._parquet: Any = None
        if fmt == "csv":
            self._file = path.open("w", newline="", encoding="utf-8")
            self._csv = csv.writer(self._file)
            self._csv.writerow(columns)
        elif fmt == "jsonl":
            self._file = path.open("wb")

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.fmt == "jsonl":
            self._file.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        elif self.fmt == "csv":
            self._csv.writerows([[_cell(r.get(c)) for c in self.columns] for r in rows])
        else:
            self._pending.extend(rows)
            if len(self._pending) >= 65536:
                self._flush_parquet()

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        strings = {c for c in self.columns if c not in ("row", "line")}
        arrays = {
            c: pa.array(
                [_text(r.get(c)) if c in strings else r.get(c) for r in self._pending],
                type=pa.string() if c in strings else pa.int64(),
            )
            for c in self.columns
        }
        table = pa.table(arrays)
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.path, table.schema)
        self._parquet.write_table(table)
        self._pending = []

    def close(self) -> None:
        if self.fmt == "parquet":
            if self._pending or self._parquet is None:
                self._flush_parquet()
            self._parquet.close()
        else:
            self._file.close()


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def read_table(path: Path, fmt: str) -> list[dict[str, Any]]:
    """A results or errors file as rows (for tests and small files)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(path).to_pylist())
    if fmt == "jsonl":
        return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
