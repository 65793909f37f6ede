"""``coldbrew source ls NAME``: a function's ``[[event_source]]`` tables as the gateway runs
them, with what each did since the gateway started, its lag and its last error
(docs/ASYNC.md). Sources are declared in coldbrew.toml; this command only shows them."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.table import Table

from coldbrew.cli import render
from coldbrew.cli.common import JsonOption, UrlOption, connect, out

source_app = typer.Typer(
    no_args_is_help=True, help="Event sources (S3 prefixes, folders, Redis streams, MQTT)."
)


def _lag(lag: dict[str, int] | None) -> str:
    if not lag:
        return "-"
    return ", ".join(f"{k} {v}" for k, v in lag.items())


def _error(source: dict[str, Any]) -> str:
    if not source.get("last_error"):
        return "-"
    ago = time.time() - (source.get("last_error_at") or time.time())
    return f"{source['last_error'][:70]} ({ago:.0f} s ago)"


@source_app.command("ls")
def source_ls(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List a function's event sources: where they read, counts, lag and last error."""
    with connect(url) as client:
        sources = client.request_json("GET", f"/v1/functions/{name}/sources")["sources"]
    if as_json:
        render.print_json(out(), sources)
        return
    table = Table("kind", "reads", "received", "delivered", "retried", "dead", "lag", "last error")
    for s in sources:
        table.add_row(
            s["kind"],
            s["target"],
            str(s["received"]),
            str(s["delivered"]),
            str(s["retried"]),
            str(s["dead_lettered"]),
            _lag(s.get("lag")),
            _error(s),
        )
    out().print(table)
