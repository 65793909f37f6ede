"""Who this gateway is, and the namespace of the platform it belongs to."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GatewayIdentity:
    node: str
    """The machine (its host name): gateways of one node share its CPU and memory."""
    pid: int
    id: str
    """Unique for this process's life; a restarted worker is a new gateway."""
    worker: int | None = None
    """Its index under ``coldbrew serve --workers N``; None when started alone."""
    started_at: float = field(default_factory=time.time)

    @classmethod
    def here(cls) -> GatewayIdentity:
        node, pid = socket.gethostname(), os.getpid()
        index = os.environ.get("COLDBREW_WORKER_INDEX")
        worker = int(index) if index and index.isdigit() else None
        return cls(node, pid, f"{node}-{pid}-{secrets.token_hex(3)}", worker)


def namespace(registry_url: str) -> str:
    """Redis key prefix of one platform: gateways sharing a registry share their state, and two
    platforms sharing one Redis do not meet."""
    return "coldbrew:" + hashlib.sha256(registry_url.encode()).hexdigest()[:12]
