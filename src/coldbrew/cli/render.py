"""How CLI answers look: rich tables for people, plain JSON for scripts.

Tables go to stdout; diagnostics go to stderr so ``coldbrew invoke ... | jq`` stays clean.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from coldbrew.runtime.config import BUILTIN_MODEL_HANDLER


def short_time(value: str | None) -> str:
    """``2026-11-23T03:24:18.123+00:00`` -> ``2026-11-23 03:24:18``: seconds are enough to tell
    deploys apart, and the full ISO form is what ``--json`` is for."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def short_sha(digest: str, length: int = 12) -> str:
    return f"{digest[:length]}…" if len(digest) > length else digest


def format_aliases(aliases: dict[str, int]) -> str:
    """``latest`` first, the rest by name, as ``alias→version``."""
    order = sorted(aliases, key=lambda a: (a != "latest", a))
    return ", ".join(f"{alias}→{aliases[alias]}" for alias in order) or "-"


def print_json(console: Console, data: Any) -> None:
    """Machine output: plain text, never wrapped or coloured, whatever the terminal."""
    console.file.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def functions_table(functions: list[dict[str, Any]]) -> Table:
    table = Table(title=None, box=None, header_style="bold")
    for column in ("NAME", "LATEST", "ALIASES", "UPDATED", "DESCRIPTION"):
        table.add_column(column, overflow="fold")
    for f in functions:
        latest = f.get("latest_version")
        table.add_row(
            f["name"],
            "-" if latest is None else str(latest),
            format_aliases(f.get("aliases") or {}),
            short_time(f.get("updated_at")),
            f.get("description") or "",
        )
    return table


def versions_table(versions: list[dict[str, Any]], aliases: dict[str, int]) -> Table:
    by_version: dict[int, list[str]] = {}
    for alias, number in aliases.items():
        by_version.setdefault(number, []).append(alias)
    table = Table(box=None, header_style="bold")
    for column in ("VERSION", "SHA256", "HANDLER", "ALIASES", "CREATED", "DESCRIPTION"):
        table.add_column(column, overflow="fold")
    for v in sorted(versions, key=lambda v: v["number"]):
        config = v.get("config") or {}
        handler = config.get("handler") or "-"
        if handler == BUILTIN_MODEL_HANDLER:  # a bare model: its file says more than our handler
            handler = config.get("model") or handler
        table.add_row(
            str(v["number"]),
            short_sha(v["content_sha256"]),
            handler,
            ", ".join(sorted(by_version.get(v["number"], []))) or "-",
            short_time(v.get("created_at")),
            v.get("description") or "",
        )
    return table


def instances_table(pools: list[dict[str, Any]]) -> Table | None:
    """One row per live instance, or None when the function is scaled to zero."""
    rows = [(pool, inst) for pool in pools for inst in pool.get("instances", [])]
    if not rows:
        return None
    table = Table(box=None, header_style="bold")
    for column in (
        "VERSION",
        "INSTANCE",
        "PID",
        "STATE",
        "INFLIGHT",
        "INVOCATIONS",
        "IDLE S",
        "INIT MS",
    ):
        table.add_column(column)
    for pool, inst in rows:
        table.add_row(
            str(pool.get("version")),
            str(inst.get("id")),
            str(inst.get("pid")),
            str(inst.get("state")),
            str(inst.get("inflight")),
            str(inst.get("invocations")),
            _number(inst.get("idle_s")),
            _number(inst.get("init_ms")),
        )
    return table


def format_split(alias: dict[str, Any]) -> str:
    """``version 1`` or ``v1: 75%, v2: 25% (sticky $.user.id)``."""
    weights = alias.get("weights") or {}
    if not weights:
        return f"version {alias.get('version')}"
    shares = {str(alias.get("version")): 1 - sum(weights.values()), **weights}
    text = ", ".join(f"v{v}: {round(w * 100, 2):g}%" for v, w in shares.items())
    return text + (f" (sticky {alias['sticky']})" if alias.get("sticky") else "")


def aliases_table(aliases: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("ALIAS", "VERSION", "SPLIT", "UPDATED"):
        table.add_column(column)
    for a in sorted(aliases, key=lambda a: (a["name"] != "latest", a["name"])):
        split = format_split(a) if a.get("weights") else "-"
        table.add_row(a["name"], str(a["version"]), split, short_time(a.get("updated_at")))
    return table


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return "-" if value is None else str(value)
