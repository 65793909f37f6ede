"""``coldbrew route``: mount functions on HTTP routes, API Gateway style."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from coldbrew.cli import render
from coldbrew.cli.common import JsonOption, UrlOption, connect

routes_app = typer.Typer(
    no_args_is_help=True, help="Mount functions on HTTP routes (API Gateway proxy events)."
)


@routes_app.command("add")
def route_add(
    route: Annotated[str, typer.Argument(help='e.g. "GET /items/{id}" or "ANY /{proxy+}"')],
    function: Annotated[str, typer.Argument(help="NAME or NAME:QUALIFIER")],
    payload_format: Annotated[
        str, typer.Option("--payload-format", help="1.0 (REST API) or 2.0 (HTTP API)")
    ] = "2.0",
    stage: Annotated[str, typer.Option(help="Reported as requestContext.stage")] = "$default",
    forward_credentials: Annotated[
        bool,
        typer.Option(
            "--forward-credentials",
            help="Keep the caller's Authorization and X-Api-Key headers in the event (admin only)",
        ),
    ] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mount FUNCTION on ROUTE. Greedy routes ({proxy+}) need an admin key; paths under
    coldbrew's own prefixes (/v1, /v2, /2015-03-31, /ws, ...) are refused."""
    body: dict[str, Any] = {"route": route, "function": function, "payload_format": payload_format}
    body["stage"] = stage
    if forward_credentials:
        body["forward_credentials"] = True
    with connect(url) as client:
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
    with connect(url) as client:
        routes = client._json("GET", "/v1/routes")["routes"]
    out = Console(highlight=False)
    if as_json:
        render.print_json(out, routes)
        return
    table = Table("id", "route", "function", "payload", "stage", "credentials")
    for r in routes:
        target = r["function"] + (f":{r['qualifier']}" if r["qualifier"] else "")
        creds = "forwarded" if r.get("forward_credentials") else "removed"
        table.add_row(str(r["id"]), r["route"], target, r["payload_format"], r["stage"], creds)
    out.print(table)


@routes_app.command("rm")
def route_rm(route_id: int, url: UrlOption = None) -> None:
    """Delete a route by id."""
    with connect(url) as client:
        client._json("DELETE", f"/v1/routes/{route_id}")
    Console(highlight=False).print(f"deleted route {route_id}", markup=False)
