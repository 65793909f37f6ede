"""``coldbrew secrets set|ls|rm``: named, encrypted values for ``[secrets]`` (docs/DATA.md).

A value is never an argument (argv is visible to every user of the machine in ``ps`` and lands
in shell history): it comes from stdin, a file, or a hidden prompt on a terminal.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import typer
from rich.table import Table

from coldbrew.cli import render
from coldbrew.cli.common import JsonOption, UrlOption, connect, fail, out

secrets_app = typer.Typer(
    no_args_is_help=True, help="Set, list and remove secrets (values never shown)."
)


def _strip_newline(value: bytes) -> bytes:
    """One trailing newline is the file's or echo's, not the secret's."""
    if value.endswith(b"\r\n"):
        return value[:-2]
    return value[:-1] if value.endswith(b"\n") else value


def read_value(from_file: Path | None) -> bytes:
    if from_file is not None:
        try:
            return _strip_newline(from_file.read_bytes())
        except OSError as exc:
            raise fail(f"error: cannot read {from_file}: {exc.strerror}", 2) from None
    if sys.stdin.isatty():
        return typer.prompt("value", hide_input=True).encode()
    return _strip_newline(sys.stdin.buffer.read())


@secrets_app.command("set")
def set_secret(
    name: str,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="Read the value from this file.")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Create or rotate secret NAME; the value comes from stdin (or --from-file).

    Rotating restarts the instances of every version that uses it."""
    value = read_value(from_file)
    if not value:
        raise fail("error: the value is empty (pipe it on stdin or give --from-file)", 2)
    with connect(url) as client:
        done = client.request_json(
            "PUT",
            f"/v1/secrets/{quote(name, safe='')}",
            content=value,
            headers={"content-type": "application/octet-stream"},
        )
    restarted = done.get("restarted") or []
    note = f"; restarted {', '.join(restarted)}" if restarted else ""
    out().print(f"set {done['name']} (generation {done['generation']}){note}", markup=False)


@secrets_app.command("ls")
def list_secrets(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List secrets: names and when they changed, never values."""
    with connect(url) as client:
        rows = client.request_json("GET", "/v1/secrets")["secrets"]
    if as_json:
        render.print_json(out(), rows)
        return
    table = Table("name", "generation", "updated")
    for row in rows:
        table.add_row(row["name"], str(row["generation"]), render.short_time(row["updated_at"]))
    out().print(table)


@secrets_app.command("rm")
def remove_secret(name: str, url: UrlOption = None) -> None:
    """Remove secret NAME (running instances keep the value until they stop)."""
    with connect(url) as client:
        client.request_json("DELETE", f"/v1/secrets/{quote(name, safe='')}")
    out().print(f"deleted {name}", markup=False)
