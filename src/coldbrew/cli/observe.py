"""``coldbrew logs``, ``coldbrew alerts`` and ``coldbrew cost``: rich tables over the server's
observability endpoints (docs/OBSERVABILITY.md)."""

from __future__ import annotations

import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from coldbrew.cli import render
from coldbrew.cli.common import JsonOption, UrlOption, connect, fail
from coldbrew.settings import Settings

SinceOption = Annotated[str | None, typer.Option("--since", help="e.g. 30s, 10m, 24h, 7d.")]


def _out() -> Console:
    return Console(highlight=False)


def _usd(value: float) -> str:
    """Dollars that stay readable when tiny: a per-prediction cost of $0.0000021 keeps its
    significant digits instead of printing as $0.000000."""
    if value == 0:
        return "$0"
    if abs(value) >= 0.01:
        return f"${value:,.4f}" if abs(value) < 100 else f"${value:,.2f}"
    decimals = min(12, 2 - math.floor(math.log10(abs(value))))  # three significant digits
    return f"${value:.{decimals}f}"


def logs(
    name: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    since: SinceOption = None,
    request_id: Annotated[str | None, typer.Option("--request-id")] = None,
    tail: Annotated[int | None, typer.Option("--tail", "-n", help="Only the last N lines.")] = None,
    url: UrlOption = None,
) -> None:
    """Print a function's log: its handlers' output between START and REPORT lines."""
    params = {
        k: v
        for k, v in (("since", since), ("request_id", request_id), ("tail", tail))
        if v is not None
    }
    if not follow:
        with connect(url) as client:
            answer = client._json("GET", f"/v1/functions/{name}/logs", params=params)
        for line in answer["lines"]:
            sys.stdout.write(line + "\n")
        return
    base = url or Settings().url
    try:
        with httpx.stream(
            "GET",
            f"{base}/v1/functions/{name}/logs",
            params={**params, "follow": "1"},
            timeout=None,
        ) as response:
            if response.status_code != 200:
                response.read()
                raise fail(f"error HTTP_{response.status_code}: {response.text[:300]}")
            for chunk in response.iter_text():
                sys.stdout.write(chunk)
                sys.stdout.flush()
    except httpx.TransportError:
        raise fail(f"cannot reach the coldbrew server at {base}", 2) from None
    except KeyboardInterrupt:
        return


def alerts(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Show firing alerts and the recent fired/resolved events."""
    with connect(url) as client:
        answer = client._json("GET", "/v1/alerts")
    if as_json:
        render.print_json(_out(), answer)
        return
    table = Table("state", "rule", "function", "since", "message", title="alerts")
    for event in answer["active"]:
        table.add_row(
            "[red]firing[/red]",
            event["rule"],
            event["function"],
            _when(event.get("since")),
            event["message"],
        )
    for event in answer["recent"]:
        if event["state"] == "resolved":
            table.add_row(
                "[green]resolved[/green]",
                event["rule"],
                event["function"],
                _when(event.get("at")),
                event["message"],
            )
    _out().print(table if table.row_count else "no alerts: every rule is quiet")


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else "-"


def cost(
    ctx: typer.Context,
    since: SinceOption = "24h",
    function: Annotated[str | None, typer.Option("--function")] = None,
    always_on_hourly: Annotated[
        float | None, typer.Option("--always-on-hourly", help="Compare with a server at $/h.")
    ] = None,
    what_if: Annotated[bool, typer.Option("--what-if", help="Answer from a trace.")] = False,
    trace: Annotated[
        Path | None, typer.Option(help="Trace folder for --what-if (default: the sample).")
    ] = None,
    duration_ms: Annotated[float, typer.Option(help="Handler duration for --what-if.")] = 100.0,
    memory: Annotated[str, typer.Option(help="Memory sizes for --what-if.")] = "128,512,1024,2048",
    provisioned: Annotated[str, typer.Option(help="Provisioned counts for --what-if.")] = "0,1,2",
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cost per function, per prediction and per caller over a period; or --what-if a trace;
    or `coldbrew cost estimate NAME --per-day N` for a month."""
    if ctx.invoked_subcommand:  # `coldbrew cost estimate ...`: that command answers
        return
    if what_if:
        _what_if(trace, duration_ms, memory, provisioned)
        return
    params: dict[str, Any] = {"since": since}
    if function:
        params["function"] = function
    if always_on_hourly is not None:
        params["always_on_hourly"] = always_on_hourly
    with connect(url) as client:
        report = client._json("GET", "/v1/cost", params=params)
    if as_json:
        render.print_json(_out(), report)
        return
    out = _out()
    for title, rows in (("per function", report["functions"]), ("per caller", report["callers"])):
        table = Table(
            title,
            "invocations",
            "errors",
            "cold",
            "GB-s",
            "cost",
            "per 1M predictions",
            title=f"cost {title} since {report['period']['since'][:19]}",
        )
        for row in rows:
            table.add_row(
                row["key"],
                str(row["invocations"]),
                str(row["errors"]),
                str(row["cold_starts"]),
                f"{row['gb_seconds']:.3f}",
                _usd(row["cost_usd"]),
                _usd(row["cost_per_invocation_usd"] * 1_000_000),
            )
        out.print(table)
    total = report["total"]
    out.print(
        f"total {_usd(total['cost_usd'])} (invocations {_usd(total['invocation_cost_usd'])}"
        f", provisioned {_usd(total['provisioned_cost_usd'])})",
        markup=False,
    )
    if "always_on" in report:
        a = report["always_on"]
        out.print(
            f"an always-on server at ${a['hourly_usd']}/h costs {_usd(a['cost_usd'])} over "
            f"the period: {a['cheaper']} is cheaper by {_usd(abs(a['savings_usd']))}",
            markup=False,
        )


def _what_if(trace: Path | None, duration_ms: float, memory: str, provisioned: str) -> None:
    from coldbrew.core.pricing import price_table
    from coldbrew.scaling.simulate import (
        default_candidates,
        format_report,
        load_trace,
        simulate_trace,
    )
    from coldbrew.scaling.simulate.costs import TierCosts
    from coldbrew.scaling.simulate.trace import SAMPLE_TRACE
    from coldbrew.scaling.simulate.whatif import memory_scenarios, provisioned_scenarios

    trace = trace or SAMPLE_TRACE  # 8 functions x one day, shipped with the package
    if not trace.is_dir():
        raise fail(f"no trace folder at {trace} (a folder with *inv*.csv)", 2)
    settings = Settings()
    prices = price_table(settings.price_table)
    loaded = load_trace(trace)
    sizes = [int(x) for x in memory.split(",") if x]
    counts = [int(x) for x in provisioned.split(",") if x]
    out = _out()
    table = Table(
        "scenario",
        "invocations",
        "GB-s",
        "cost",
        "cold starts (est.)",
        title=f"what if: {loaded.invocations} invocations over {loaded.minutes} min, "
        f"{duration_ms:g} ms each ({prices.name} prices)",
    )
    for s in memory_scenarios(loaded, prices, duration_ms, sizes) + provisioned_scenarios(
        loaded, prices, duration_ms, sizes[0] if sizes else 512, counts
    ):
        cold = "-" if s.cold_starts is None else str(s.cold_starts)
        table.add_row(s.label, str(s.invocations), f"{s.gb_seconds:.1f}", _usd(s.cost_usd), cold)
    out.print(table)
    out.print("\n[bold]keep-alive policies[/bold] (coldbrew simulate)")
    out.print(
        format_report(simulate_trace(loaded, default_candidates(), TierCosts())), markup=False
    )
