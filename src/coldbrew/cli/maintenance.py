"""``coldbrew gc``: remove the blobs and bundles no version references (store/gc.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from coldbrew.cli import render
from coldbrew.cli.common import JsonOption, UrlOption, connect

KINDS = (("blob", "blob"), ("bundle", "bundle"), ("partial", "partial write"))


def _size(n: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


def summary(report: dict[str, Any]) -> str:
    """One line: what went (or would go), per kind, and what the grace period kept."""
    totals = report["totals"]
    parts = [
        f"{totals[kind]['count']} {label}{'s' if totals[kind]['count'] != 1 else ''} "
        f"({_size(totals[kind]['bytes'])})"
        for kind, label in KINDS
        if kind in totals
    ]
    verb = "would remove" if report["dry_run"] else "removed"
    line = f"{verb} {', '.join(parts)}" if parts else f"{verb} nothing"
    if report["kept_recent"]:
        line += f"; kept {report['kept_recent']} unreferenced but recent (grace period)"
    return line


def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")
    ] = False,
    grace: Annotated[
        float | None,
        typer.Option(
            "--grace",
            min=0,
            help="Spare what was written or used this many seconds ago (default: "
            "COLDBREW_GC_GRACE_S of the server). 0 is only safe when no deploy is running.",
        ),
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove artifact blobs and bundle folders that no version of any function references."""

    params: dict[str, str] = {"dry_run": "true" if dry_run else "false"}
    if grace is not None:
        params["grace_s"] = str(grace)
    with connect(url) as client:
        report = client.request_json("POST", "/v1/gc", params=params)
    out = Console(highlight=False)
    if as_json:
        render.print_json(out, report)
        return
    if dry_run:
        for item in report["removed"]:
            line = f"{item['kind']:8} {_size(item['bytes']):>10}  {item['path']}"
            out.print(line, markup=False, soft_wrap=True)
    out.print(summary(report), markup=False, soft_wrap=True)
