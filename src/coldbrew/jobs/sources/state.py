"""What one running event source did lately, for ``coldbrew source ls`` and the logs."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SourceState:
    """Counters and the last error of one source on this gateway (since it started)."""

    function: str
    kind: str
    target: str
    """Where it reads: ``s3://bucket/prefix``, a folder, ``redis://host/0 stream``, a topic."""
    received: int = 0
    """Messages or new objects seen."""
    delivered: int = 0
    """Handed to the function: committed to the async queue, or (redis) acknowledged."""
    dropped: int = 0
    """Refused for good (not JSON, schema, an unknown alias); logged with the reason."""
    retried: int = 0
    dead_lettered: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_event_at: float | None = None
    started_at: float = field(default_factory=time.time)

    def error(self, message: str) -> None:
        self.last_error = message[:500]
        self.last_error_at = time.time()

    def event(self, n: int = 1) -> None:
        self.received += n
        self.last_event_at = time.time()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
