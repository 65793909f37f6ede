"""Per-invocation log capture inside an instance.

``sys.stdout`` and ``sys.stderr`` are replaced by writers that still go to the function's log
file, and also, while an invocation runs on the current thread, into that invocation's buffer.
That buffer is what the Lambda API's ``X-Amz-Log-Type: Tail`` returns and what ``coldbrew logs``
shows per request. Writes straight to file descriptor 1 or 2 (from C code) reach the log file but
not the buffer.
"""

from __future__ import annotations

import io
import sys
import threading
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
