"""Plain, frozen values the registry returns: no session, no lazy loading, safe to share
between threads and to hand to the gateway after the transaction is over."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

LATEST = "latest"
"""The alias every deploy moves to the version it returns."""


@dataclass(frozen=True)
class FunctionRecord:
    name: str
    description: str
    created_at: datetime
    updated_at: datetime
    aliases: dict[str, int]
    """Alias name -> the version it points at (its main version, ignoring any split)."""

    @property
    def latest_version(self) -> int | None:
        """The version ``latest`` points at, or None for a function with no version yet."""
        return self.aliases.get(LATEST)


@dataclass(frozen=True)
class VersionRecord:
    function_name: str
    number: int
    content_sha256: str
    config: dict[str, Any]
    manifest: dict[str, str]
    description: str
    created_at: datetime


@dataclass(frozen=True)
class AliasRecord:
    function_name: str
    name: str
    version: int
    weights: dict[int, float] | None
    """Traffic split: ``{other version: fraction}``; ``version`` gets the remainder."""
    updated_at: datetime
    sticky: str | None = None
    """JSON path of the event field that keeps one caller on one version of the split."""


@dataclass(frozen=True)
class Resolution:
    """What an invocation of ``name[:qualifier]`` may run: the main version and, for a
    weighted alias, the other versions with their fractions (the data plane draws one)."""

    main: VersionRecord
    weighted: tuple[tuple[float, VersionRecord], ...] = ()
    sticky: str | None = None
    alias: str | None = None
