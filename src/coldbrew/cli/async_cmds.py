"""``coldbrew dlq``, ``coldbrew schedule``, ``coldbrew events`` and ``coldbrew results``: async
invocations (docs/ASYNC.md). ``coldbrew invoke NAME --async`` lives with ``invoke`` in
``main.py``."""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from coldbrew.cli import render
from coldbrew.cli.common import JsonOption, UrlOption, connect, out

dlq_app = typer.Typer(no_args_is_help=True, help="Dead letters of async invocations.")
schedule_app = typer.Typer(
    no_args_is_help=True, help='Invoke functions on a schedule ("rate(5 minutes)", "cron(...)").'
)


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return "-"
    return f"{error.get('type') or error.get('code')}: {error.get('message', '')}"[:80]


# -- dlq ---------------------------------------------------------------------------------------


@dlq_app.command("ls")
def dlq_ls(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List a function's dead letters, oldest first."""
    with connect(url) as client:
        letters = client.request_json("GET", f"/v1/functions/{name}/dlq")["dead_letters"]
    if as_json:
        render.print_json(out(), letters)
        return
    table = Table("request id", "reason", "attempts", "failed at", "error")
    for d in letters:
        table.add_row(
            d["request_id"],
            d["reason"],
            str(d["attempts"]),
            render.short_time(d["failed_at"]),
            _error_text(d["error"]),
        )
    out().print(table)


@dlq_app.command("show")
def dlq_show(name: str, request_id: str, url: UrlOption = None) -> None:
    """One dead letter with its event and its last error, as JSON."""
    with connect(url) as client:
        letter = client.request_json("GET", f"/v1/functions/{name}/dlq/{request_id}")
    with contextlib.suppress(ValueError, TypeError):
        letter["payload"] = json.loads(letter["payload"])
    render.print_json(out(), letter)


@dlq_app.command("redrive")
def dlq_redrive(
    name: str,
    request_ids: Annotated[
        list[str] | None, typer.Argument(help="Request ids to redrive (default: all).")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Queue dead letters again, under their own request ids, with fresh retries."""
    body = {"request_ids": request_ids} if request_ids else {}
    with connect(url) as client:
        moved = client.request_json("POST", f"/v1/functions/{name}/dlq/redrive", json=body)
    out().print(f"redriven: {len(moved['redriven'])} event(s)", markup=False)


@dlq_app.command("purge")
def dlq_purge(name: str, url: UrlOption = None) -> None:
    """Delete every dead letter of a function."""
    with connect(url) as client:
        purged = client.request_json("DELETE", f"/v1/functions/{name}/dlq")
    out().print(f"purged: {purged['purged']} dead letter(s)", markup=False)


# -- schedule ----------------------------------------------------------------------------------


@schedule_app.command("add")
def schedule_add(
    name: Annotated[str, typer.Argument(help="The function to invoke.")],
    expression: Annotated[str, typer.Argument(help='"rate(5 minutes)" or "cron(0 12 * * ? *)"')],
    schedule: Annotated[
        str | None, typer.Option("--name", help="Schedule name (default: from the expression).")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--input", "-d", help="Event JSON (default: EventBridge's scheduled event)."),
    ] = None,
    timezone: Annotated[str, typer.Option(help="Timezone of cron() expressions.")] = "UTC",
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Invoke NAME asynchronously at each tick of EXPRESSION."""
    body: dict[str, Any] = {
        "name": schedule or _default_name(expression),
        "expression": expression,
        "timezone": timezone,
    }
    if data is not None:
        try:
            body["input"] = json.loads(data)
        except ValueError as exc:
            Console(stderr=True).print(f"--input is not JSON: {exc}", markup=False)
            raise typer.Exit(2) from None
    with connect(url) as client:
        added = client.request_json("POST", f"/v1/functions/{name}/schedules", json=body)
    if as_json:
        render.print_json(out(), added)
        return
    out().print(
        f"schedule {added['name']} of {name}: {added['expression']} "
        f"(next {render.short_time(added['next_tick'])} UTC)",
        markup=False,
    )


def _default_name(expression: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in expression).strip("-")
    while "--" in cleaned:
        cleaned = cleaned.replace("--", "-")
    return cleaned[:64] or "schedule"


@schedule_app.command("ls")
def schedule_ls(
    name: Annotated[str | None, typer.Argument(help="A function (default: all).")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """List schedules with their last and next ticks."""
    path = f"/v1/functions/{name}/schedules" if name else "/v1/schedules"
    with connect(url) as client:
        schedules = client.request_json("GET", path)["schedules"]
    if as_json:
        render.print_json(out(), schedules)
        return
    table = Table("function", "name", "expression", "source", "last tick", "next tick", "last run")
    for s in schedules:
        table.add_row(
            s["function"],
            s["name"],
            s["expression"] + ("" if s["timezone"] == "UTC" else f" [{s['timezone']}]"),
            s["source"],
            render.short_time(s["last_tick"]),
            render.short_time(s["next_tick"]),
            s["last_request_id"] or "-",
        )
    out().print(table)


@schedule_app.command("history")
def schedule_history(
    name: str, schedule: str, url: UrlOption = None, as_json: JsonOption = False
) -> None:
    """The runs of schedule SCHEDULE of NAME, newest first: tick, request id, state."""
    with connect(url) as client:
        runs = client.request_json("GET", f"/v1/functions/{name}/schedules/{schedule}/runs")
    if as_json:
        render.print_json(out(), runs["runs"])
        return
    table = Table("tick", "request id", "state", "attempts", "finished", "last error")
    for r in runs["runs"]:
        table.add_row(
            render.short_time(r["tick"]),
            r["request_id"],
            r["state"],
            str(r["attempts"]),
            render.short_time(r["finished_at"]),
            _error_text(r["last_error"]),
        )
    out().print(table)


@schedule_app.command("rm")
def schedule_rm(name: str, schedule: str, url: UrlOption = None) -> None:
    """Delete schedule SCHEDULE of function NAME."""
    with connect(url) as client:
        client.request_json("DELETE", f"/v1/functions/{name}/schedules/{schedule}")
    out().print(f"deleted schedule {schedule} of {name}", markup=False)


# -- results -----------------------------------------------------------------------------------


def results(
    name: str,
    after: Annotated[int, typer.Option(help="Only records after this id (for paging).")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many (1-1000).")] = 100,
    purge: Annotated[bool, typer.Option("--purge", help="Delete them all instead.")] = False,
    url: UrlOption = None,
) -> None:
    """Destination records kept by the ``results`` destination, as JSON, oldest first."""
    with connect(url) as client:
        if purge:
            done = client.request_json("DELETE", f"/v1/functions/{name}/results")
            out().print(f"purged: {done['purged']} record(s)", markup=False)
            return
        params = {"after": after, "limit": limit}
        found = client.request_json("GET", f"/v1/functions/{name}/results", params=params)
    render.print_json(out(), found["results"])


# -- events ------------------------------------------------------------------------------------


def events(
    name: str,
    request_id: Annotated[str | None, typer.Argument(help="One event's request id.")] = None,
    state: Annotated[
        str | None, typer.Option(help="queued, succeeded or failed (default: all).")
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Async invocations of a function: state, attempts, last error."""
    with connect(url) as client:
        if request_id:
            render.print_json(
                out(), client.request_json("GET", f"/v1/functions/{name}/events/{request_id}")
            )
            return
        params = {"state": state} if state else {}
        found = client.request_json("GET", f"/v1/functions/{name}/events", params=params)
    if as_json:
        render.print_json(out(), found["events"])
        return
    table = Table("request id", "state", "attempts", "accepted", "finished", "last error")
    for e in found["events"]:
        table.add_row(
            e["request_id"],
            e["state"],
            str(e["attempts"]),
            render.short_time(e["created_at"]),
            render.short_time(e["finished_at"]),
            _error_text(e["last_error"]),
        )
    out().print(table)
