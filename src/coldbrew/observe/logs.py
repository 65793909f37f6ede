"""Gateway logs (one structured line per invocation) and reading the functions' own logs.

``COLDBREW_LOG_FORMAT=json`` makes every gateway log record one JSON object per line (stdlib
logging, no extra dependency); ``text`` keeps the human format. The access line is logged by
:func:`access_log` under ``coldbrew.access`` with the invocation's fields as ``extra``.

Handler output is appended by the instances to ``$COLDBREW_HOME/logs/functions/<name>.log``
between Lambda's ``START RequestId`` and ``REPORT RequestId`` lines. Those lines carry no
timestamps, so ``since`` is answered by joining request ids with the meter's start times.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from coldbrew.observe.usage import Usage

ACCESS = logging.getLogger("coldbrew.access")
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
START = re.compile(r"^START RequestId: (\S+)")
REPORT = re.compile(r"^REPORT RequestId: (\S+)")
DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
MAX_READ_BYTES = 16 * 1024 * 1024
"""Only the last 16 MB of a function's log are scanned per request."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def configure(level: str, fmt: str) -> None:
    """Configure the root logger once, for ``coldbrew serve``."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def access_log(usage: Usage) -> None:
    """The access line of one invocation."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    ACCESS.info(
        "invoke %s:%s %s %.1f ms%s",
        usage.function,
        usage.version,
        usage.status,
        usage.wall_ms,
        " cold" if usage.cold_start else "",
        extra={
            "request_id": usage.request_id,
            "function": usage.function,
            "version": usage.version,
            "qualifier": usage.qualifier,
            "cold_start": usage.cold_start,
            "duration_ms": round(usage.duration_ms, 3),
            "billed_ms": usage.billed_ms,
            "init_ms": None if usage.init_ms is None else round(usage.init_ms, 3),
            "wall_ms": round(usage.wall_ms, 3),
            "status": usage.status,
            "cost_usd": usage.cost_usd,
        },
    )


def parse_since(text: str | None) -> float | None:
    """``10m``, ``2h``, ``30s``, ``1d`` -> that many seconds; None for no limit."""
    if not text:
        return None
    match = DURATION.match(text.strip())
    if not match:
        raise ValueError(f"bad duration {text!r}; use e.g. 30s, 10m, 2h, 1d")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@dataclass
class LogBlock:
    """The lines of one invocation (``request_id``), or output between invocations (None)."""

    request_id: str | None
    lines: list[str] = field(default_factory=list)


def function_log_path(logs_dir: Path, name: str) -> Path:
    return logs_dir / "functions" / f"{name}.log"


def read_tail(path: Path, offset: int = 0) -> tuple[str, int]:
    """Text from ``offset`` (or the last MAX_READ_BYTES) to the end, and the new end offset."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, 2)
            start = max(offset, end - MAX_READ_BYTES) if offset <= end else 0
            f.seek(start)
            data = f.read(end - start)
    except FileNotFoundError:
        return "", 0
    return data.decode("utf-8", errors="replace"), start + len(data)


def blocks(text: str) -> list[LogBlock]:
    out: list[LogBlock] = []
    current: LogBlock | None = None
    for line in text.splitlines():
        start = START.match(line)
        if start:
            current = LogBlock(start.group(1))
            out.append(current)
        elif current is None:
            current = LogBlock(None)
            out.append(current)
        current.lines.append(line)
        if REPORT.match(line):
            current = None
    return out


def select_lines(
    text: str,
    request_id: str | None = None,
    request_ids: set[str] | None = None,
    tail: int | None = None,
) -> list[str]:
    """Lines of the invocations asked for: one request id, a set of them (from ``since``), or
    all; then the last ``tail`` lines."""
    lines: list[str] = []
    for block in blocks(text):
        if request_id is not None and block.request_id != request_id:
            continue
        if request_ids is not None and block.request_id not in request_ids:
            continue
        lines += block.lines
    return lines[-tail:] if tail else lines
