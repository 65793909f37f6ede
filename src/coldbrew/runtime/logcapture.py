"""Per-invocation log capture inside an instance.

``sys.stdout`` and ``sys.stderr`` are replaced by writers that still go to the function's log
file, and also, while an invocation runs on the current thread, into that invocation's buffer.
That buffer is what the Lambda API's ``X-Amz-Log-Type: Tail`` returns and what ``coldbrew logs``
shows per request. Writes straight to file descriptor 1 or 2 (from C code) reach the log file but
not the buffer.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

MAX_CAPTURED_CHARS = 64 * 1024


class _Buffer:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        while self.size > MAX_CAPTURED_CHARS and len(self.parts) > 1:
            self.size -= len(self.parts.pop(0))

    def text(self) -> str:
        return "".join(self.parts)[-MAX_CAPTURED_CHARS:]


class TeeWriter(io.TextIOBase):
    """Writes to ``target`` and to the current thread's invocation buffer, if any."""

    def __init__(self, target: TextIO, local: threading.local) -> None:
        self.target = target
        self.local = local

    def write(self, text: str) -> int:
        self.target.write(text)
        buffer: _Buffer | None = getattr(self.local, "buffer", None)
        if buffer is not None:
            buffer.add(text)
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")


class LogCapture:
    def __init__(self) -> None:
        self.local = threading.local()

    def install(self) -> None:
        sys.stdout = TeeWriter(sys.__stdout__ or sys.stdout, self.local)
        sys.stderr = TeeWriter(sys.__stderr__ or sys.stderr, self.local)

    @contextmanager
    def capture(self) -> Iterator[_Buffer]:
        buffer = _Buffer()
        self.local.buffer = buffer
        try:
            yield buffer
        finally:
            self.local.buffer = None


LAMBDA_LOG_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``aws_request_id`` to every record, as the Lambda Python runtime's log handler does."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = getattr(self.local, "request_id", None) or "-"
        return True


def install_lambda_logging(request_ids: RequestIdFilter) -> None:
    """A root handler like Lambda's: ``logging.getLogger().info(...)`` after ``setLevel(INFO)``
    reaches the function's log with the request id, instead of vanishing (Python's last-resort
    handler only prints warnings)."""
    handler = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter(LAMBDA_LOG_FORMAT, "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(request_ids)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    if not getattr(root, "_coldbrew_configured", False):
        # Only once per process lineage: a version template's handler module may have set the
        # level at import (logger.setLevel(logging.INFO)), and its forks must keep it.
        root.setLevel(os.environ.get("AWS_LAMBDA_LOG_LEVEL", "WARNING").upper())
        root._coldbrew_configured = True  # type: ignore[attr-defined]
