"""Where instances run. A backend turns an ``InstanceSpec`` into a live process with a channel.

Backend (Protocol)
└── LocalBackend   processes forked from a template server on this machine (default)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from coldbrew.backends.process import Process


@dataclass(frozen=True)
class InstanceSpec:
    """Everything needed to start one instance of one version."""

    instance_id: str
    function_name: str
    version: str
    bundle_dir: str
    config: dict[str, Any]
    memory_mb: int
    environment: dict[str, str] = field(default_factory=dict)
    run_validation: bool = False
    template_key: str | None = None
    """Fork from this version's template when one is running (see ``start_version_template``)."""


@dataclass
class SpawnedInstance:
    """A started process and its channel. ``reader``/``writer`` carry length-prefixed frames."""

    instance_id: str
    pid: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    source: str = "runtime-template"
    """Where the process came from: ``runtime-template`` or ``version-template``, with
    ``+spare`` when a spare forked ahead of demand was used."""
    process: Process | None = None
    """The handle on the process (backends/process.py); None where the backend has no direct
    hold on it (a Ray node's agent owns it)."""


class Backend(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def spawn(self, spec: InstanceSpec) -> SpawnedInstance: ...

    async def start_version_template(self, key: str, spec: InstanceSpec) -> float:
        """Load ``spec``'s version into a template under ``key``; returns its load time (ms)."""

    def stop_version_template(self, key: str) -> None: ...

    def has_version_template(self, key: str) -> bool: ...

    def version_template_pid(self, key: str) -> int | None:
        """The process id of the version template under ``key``, if it is running."""

    def kill(self, instance_id: str) -> None:
        """Stop the instance's process now (SIGKILL): used for timeouts and scale-down."""

    def release(self, instance_id: str) -> None:
        """Forget an instance that has gone (free its cgroup and bookkeeping)."""

    def exceeded_memory(self, instance_id: str) -> bool:
        """Whether the instance was killed, or must be killed, for exceeding memory_mb."""
