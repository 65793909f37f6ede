"""``coldbrew cost estimate NAME --per-day N``: "N requests a day: what does a month cost?"

Answered from the function's own metered invocations (``GET /v1/usage``: the mean billed
duration, the p50/p95 handler durations and the memory it ran with), or from the
``--duration-ms`` / ``--memory-mb`` given, priced the way Lambda bills (core/pricing.py), with
an always-on machine of ``--always-on-hourly`` dollars an hour beside it. No trace needed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from coldbrew.cli.common import JsonOption, UrlOption, connect, fail, out
from coldbrew.core.pricing import PriceTable, billed_ms, gb_seconds, price_table
from coldbrew.settings import Settings

DAYS_PER_MONTH = 30
DEFAULT_ALWAYS_ON_HOURLY = 0.0416
"""An AWS t3.medium (2 vCPU, 4 GiB) on demand in us-east-1: a small always-on model server."""


def _usd(value: float) -> str:
    from coldbrew.cli.observe import _usd as usd  # one formatting rule for every cost command

    return usd(value)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def measured(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the meter saw of a function: the invocations that ran (billed), their durations."""
    ran = [r for r in rows if int(r.get("billed_ms") or 0) > 0]
    durations = [float(r["duration_ms"]) for r in ran]
    return {
        "invocations": len(ran),
        "mean_billed_ms": sum(int(r["billed_ms"]) for r in ran) / len(ran),
        "p50_ms": _percentile(durations, 50),
        "p95_ms": _percentile(durations, 95),
        # The newest row's memory: the size the function runs with now.
        "memory_mb": int(max(ran, key=lambda r: str(r["started_at"]))["memory_mb"]),
    }


def estimate(
    prices: PriceTable,
    per_day: int,
    mean_billed_ms: float,
    memory_mb: int,
    always_on_hourly: float,
    days: int = DAYS_PER_MONTH,
) -> dict[str, Any]:
    """A month of ``per_day`` invocations, each billed ``mean_billed_ms`` at ``memory_mb``."""
    n = per_day * days
    # Lambda rounds each invocation up to 1 ms; a mean of rounded durations is already rounded.
    gbs = n * gb_seconds(memory_mb, 1) * mean_billed_ms
    requests = n * prices.per_request
    compute = gbs * prices.per_gb_second
    lambda_month = requests + compute
    server_month = always_on_hourly * 24 * days
    return {
        "per_day": per_day,
        "days": days,
        "invocations": n,
        "mean_billed_ms": mean_billed_ms,
        "memory_mb": memory_mb,
        "gb_seconds": gbs,
        "lambda": {
            "prices": prices.name,
            "request_cost_usd": requests,
            "compute_cost_usd": compute,
            "monthly_usd": lambda_month,
            "per_million_usd": lambda_month / n * 1_000_000 if n else 0.0,
        },
        "always_on": {"hourly_usd": always_on_hourly, "monthly_usd": server_month},
        "cheaper": "serverless" if lambda_month <= server_month else "always-on",
        # How busy the function is on average: invocations in flight at once.
        "mean_concurrency": per_day / 86_400 * mean_billed_ms / 1000,
    }


def cost_estimate(
    name: Annotated[str, typer.Argument(help="The function whose measured costs to use.")],
    per_day: Annotated[int, typer.Option("--per-day", min=1, help="Requests a day.")],
    duration_ms: Annotated[
        float | None,
        typer.Option(min=0.001, help="Handler duration (default: the mean metered one)."),
    ] = None,
    memory_mb: Annotated[
        int | None, typer.Option(min=128, help="Memory size (default: the metered one).")
    ] = None,
    since: Annotated[str, typer.Option(help="Window of metered invocations to use.")] = "7d",
    always_on_hourly: Annotated[
        float,
        typer.Option(help="The always-on machine to compare with, $/h (t3.medium: 0.0416)."),
    ] = DEFAULT_ALWAYS_ON_HOURLY,
    budget: Annotated[
        float | None, typer.Option(help="Say whether a month stays under this many dollars.")
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """What a month of N requests a day costs, from the function's measured durations."""
    seen: dict[str, Any] | None = None
    prices = price_table(Settings().price_table)
    if duration_ms is None or memory_mb is None:
        with connect(url) as client:
            client.get_function(name)  # 404 NOT_FOUND for a function that does not exist
            report = client._json("GET", "/v1/cost", params={"function": name, "since": since})
            prices = PriceTable(**report["prices"])  # the server's prices, not this shell's
            rows = client._json(
                "GET", "/v1/usage", params={"function": name, "since": since, "limit": 10_000}
            )["invocations"]
        if not any(int(r.get("billed_ms") or 0) > 0 for r in rows):
            raise fail(
                f"no metered invocation of {name} in the last {since}: invoke it a few times "
                "first, or give both --duration-ms and --memory-mb",
                1,
            )
        seen = measured(rows)
    mean_ms = float(billed_ms(duration_ms)) if duration_ms is not None else seen["mean_billed_ms"]  # type: ignore[index]
    memory = memory_mb if memory_mb is not None else seen["memory_mb"]  # type: ignore[index]
    result = estimate(prices, per_day, mean_ms, memory, always_on_hourly)
    result["function"] = name
    result["measured"] = seen
    result["at"] = datetime.now(UTC).isoformat()
    if budget is not None:
        result["budget_usd"] = budget
        result["within_budget"] = result["lambda"]["monthly_usd"] <= budget
    if as_json:
        from coldbrew.cli import render

        render.print_json(out(), result)
        return
    _print(result)


def _print(r: dict[str, Any]) -> None:
    console = out()
    lam, server, seen = r["lambda"], r["always_on"], r["measured"]
    lines = [f"{r['function']}: {r['per_day']:,} requests a day, {r['days']} days a month"]
    if seen:
        lines.append(
            f"measured over {seen['invocations']:,} invocations at {seen['memory_mb']} MB:"
            f" p50 {seen['p50_ms']:.1f} ms, p95 {seen['p95_ms']:.1f} ms"
        )
    lines += [
        f"billed as {r['mean_billed_ms']:.1f} ms at {r['memory_mb']} MB:"
        f" {r['gb_seconds']:,.1f} GB-s a month; mean concurrency {r['mean_concurrency']:.2f}",
        "",
        f"{'':<26}{'a month':>14}{'per 1M requests':>18}",
        f"{'serverless (' + lam['prices'] + ')':<26}{_usd(lam['monthly_usd']):>14}"
        f"{_usd(lam['per_million_usd']):>18}",
        f"{'  of which requests':<26}{_usd(lam['request_cost_usd']):>14}",
        f"{'  of which compute':<26}{_usd(lam['compute_cost_usd']):>14}",
        f"{'always-on at $' + format(server['hourly_usd'], 'g') + '/h':<26}"
        f"{_usd(server['monthly_usd']):>14}",
        "",
        f"cheaper: {r['cheaper']} (Lambda's free tier not counted)",
    ]
    if "budget_usd" in r:
        verdict = "within" if r["within_budget"] else "OVER"
        lines.append(
            f"budget ${r['budget_usd']:g}/month: {verdict} ({_usd(lam['monthly_usd'])} a month)"
        )
    for line in lines:
        console.print(line, markup=False)


def cost_app() -> typer.Typer:
    """``coldbrew cost`` (the report over a period) with ``estimate`` under it."""
    from coldbrew.cli import observe

    group = typer.Typer(invoke_without_command=True, no_args_is_help=False)
    group.callback()(observe.cost)
    group.command("estimate")(cost_estimate)
    return group
