"""``coldbrew route``: mount functions on HTTP routes, API Gateway style."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from coldbrew.cli import render
from coldbrew.cli.client import ApiError, ColdbrewClient, ServerUnreachable
from coldbrew.settings import Settings

routes_app = typer.Typer(
    no_args_is_help=True, help="Mount functions on HTTP routes (API Gateway proxy events)."
)
UrlOption = Annotated[str | None, typer.Option("--url", help="Where the coldbrew server listens.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]


@contextlib.contextmanager
def _connect(url: str | None) -> Iterator[ColdbrewClient]:
    # Same exit codes as every other command: 1 refused, 2 unreachable.
    try:
        with ColdbrewClient(url or Settings().url) as client:
            yield client
    except ServerUnreachable as exc:
        Console(stderr=True, highlight=False).print(str(exc), markup=False)
        raise typer.Exit(2) from None
    except ApiError as exc:
        Console(stderr=True, highlight=False).print(str(exc), markup=False)
        raise typer.Exit(1) from None


@routes_app.command("add")
def route_add(
    route: Annotated[str, typer.Argument(help='e.g. "GET /items/{id}" or "ANY /{proxy+}"')],
    function: Annotated[str, typer.Argument(help="NAME or NAME:QUALIFIER")],
    payload_format: Annotated[
        str, typer.Option("--payload-format", help="1.0 (REST API) or 2.0 (HTTP API)")
    ] = "2.0",
    stage: Annotated[str, typer.Option(help="Reported as requestContext.stage")] = "$default",
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mount FUNCTION on ROUTE."""
    body = {"route": route, "function": function, "payload_format": payload_format}
    body["stage"] = stage
    with _connect(url) as client:
        added: dict[str, Any] = client._json("POST", "/v1/routes", json=body)
    if as_json:
        render.print_json(Console(highlight=False), added)
    else:
        Console(highlight=False).print(
            f"route {added['id']}: {added['route']} -> {function} "
            f"(payload {added['payload_format']})",
            markup=False,
        )


@routes_app.command("ls")
def route_ls(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List the routes."""
    with _connect(url) as client:
        routes = client._json("GET", "/v1/routes")["routes"]
    out = Console(highlight=False)
    if as_json:
        render.print_json(out, routes)
        return
    table = Table("id", "route", "function", "payload", "stage")
    for r in routes:
        target = r["function"] + (f":{r['qualifier']}" if r["qualifier"] else "")
        table.add_row(str(r["id"]), r["route"], target, r["payload_format"], r["stage"])
    out.print(table)


@routes_app.command("rm")
def route_rm(route_id: int, url: UrlOption = None) -> None:
    """Delete a route by id."""
    with _connect(url) as client:
        client._json("DELETE", f"/v1/routes/{route_id}")
    Console(highlight=False).print(f"deleted route {route_id}", markup=False)
