"""Cost reports: meter totals turned into cost per function, per prediction and per caller,
compared with an always-on server of a given hourly price. Pure functions over the rows that
``MeterStore.totals`` returns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from coldbrew.core.pricing import PriceTable, always_on_cost


def _row(key: str, totals: dict[str, Any], prices: PriceTable) -> dict[str, Any]:
    invocations = int(totals["invocations"] or 0)
    billed = int(totals["billed_requests"] or 0)
    cost = float(totals["cost_usd"] or 0.0)
    return {
        "key": key,
        "invocations": invocations,
        "billed_requests": billed,
        "errors": int(totals["errors"] or 0),
        "cold_starts": int(totals["cold_starts"] or 0),
        "billed_ms": int(totals["billed_ms"] or 0),
        "gb_seconds": float(totals["gb_seconds"] or 0.0),
        "request_cost_usd": billed * prices.per_request,
        "compute_cost_usd": float(totals["gb_seconds"] or 0.0) * prices.per_gb_second,
        "cost_usd": cost,
        "cost_per_invocation_usd": cost / billed if billed else 0.0,
    }


def cost_report(
    by_function: list[dict[str, Any]],
    by_caller: list[dict[str, Any]],
    prices: PriceTable,
    since: datetime | None,
    until: datetime,
    provisioned_usd: float = 0.0,
    always_on_hourly: float | None = None,
) -> dict[str, Any]:
    functions = [_row(str(t["key"]), t, prices) for t in by_function]
    callers = [_row(str(t["key"] or "anonymous"), t, prices) for t in by_caller]
    starts = [t["first"] for t in by_function if t["first"] is not None]
    start = since or (min(starts) if starts else until)
    seconds = max(0.0, (until - start).total_seconds())
    total_cost = sum(f["cost_usd"] for f in functions) + provisioned_usd
    report: dict[str, Any] = {
        "period": {"since": start.isoformat(), "until": until.isoformat(), "seconds": seconds},
        "prices": prices.model_dump(),
        "functions": functions,
        "callers": callers,
        "total": {
            "invocations": sum(f["invocations"] for f in functions),
            "billed_requests": sum(f["billed_requests"] for f in functions),
            "gb_seconds": sum(f["gb_seconds"] for f in functions),
            "invocation_cost_usd": sum(f["cost_usd"] for f in functions),
            "provisioned_cost_usd": provisioned_usd,
            "cost_usd": total_cost,
        },
    }
    if always_on_hourly is not None:
        server = always_on_cost(always_on_hourly, seconds)
        report["always_on"] = {
            "hourly_usd": always_on_hourly,
            "cost_usd": server,
            "savings_usd": server - total_cost,
            "cheaper": "coldbrew" if total_cost <= server else "always-on",
        }
    return report
