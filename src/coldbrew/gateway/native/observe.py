"""HTTP endpoints of observability: /metrics, logs, alerts, usage, cost, stats and the /ui
dashboard. All read what ``coldbrew.observe`` keeps; none touches the invocation path."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from coldbrew import errors
from coldbrew.gateway.errors import json_response
from coldbrew.gateway.policy import GLOBAL_READ, Endpoint, function
from coldbrew.observe import logs as flogs
from coldbrew.observe.hub import Observability
from coldbrew.observe.report import cost_report
from coldbrew.observe.window import summarize
from coldbrew.platform import Platform

FOLLOW_POLL_S = 0.25
FOLLOW_MAX_S = 3600.0


def _platform(request: Request) -> tuple[Platform, Observability]:
    platform: Platform = request.app.state.platform
    assert platform.observe is not None
    return platform, platform.observe


def _time(value: str | None, now: datetime) -> datetime | None:
    """``24h``-style durations before now, or ISO-8601 times."""
    if not value:
        return None
    try:
        seconds = flogs.parse_since(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise errors.ValidationError(
                f"bad time {value!r}: use a duration (30s, 10m, 24h, 7d) or ISO-8601"
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    try:
        return now - timedelta(seconds=seconds or 0)
    except OverflowError:  # 99999999999d: before any date there is
        raise errors.ValidationError(f"bad time {value!r}: that is too long ago") from None


def _float(request: Request, key: str) -> float | None:
    value = request.query_params.get(key)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):  # inf/nan would be a 500 where callers take int() of it
        raise errors.ValidationError(f"{key} must be a finite number, got {value!r}")
    return number


async def metrics(request: Request) -> Response:
    _, observe = _platform(request)
    return Response(observe.metrics.exposition(), media_type="text/plain; version=0.0.4")


async def alerts(request: Request) -> Response:
    _, observe = _platform(request)
    return json_response(200, observe.alerts.snapshot())


async def usage(request: Request) -> Response:
    _, observe = _platform(request)
    now = datetime.now(UTC)
    q = request.query_params
    limit = int(_float(request, "limit") or 1000)
    await observe.writer.flush()
    rows = await asyncio.to_thread(
        observe.store.records,
        q.get("function"),
        _time(q.get("since"), now),
        _time(q.get("until"), now),
        min(limit, 10_000),
    )
    for row in rows:
        row["started_at"] = row["started_at"].isoformat()
    return json_response(200, {"invocations": rows, "count": len(rows)})


async def cost(request: Request) -> Response:
    _, observe = _platform(request)
    now = datetime.now(UTC)
    q = request.query_params
    function, since = q.get("function"), _time(q.get("since"), now)
    until = _time(q.get("until"), now) or now
    await observe.writer.flush()
    by_function = await asyncio.to_thread(observe.store.totals, "function", function, since, until)
    by_caller = await asyncio.to_thread(observe.store.totals, "caller", function, since, until)
    report = cost_report(
        by_function,
        by_caller,
        observe.prices,
        since,
        until,
        observe.metrics.provisioned_total_usd if function is None else 0.0,
        _float(request, "always_on_hourly"),
    )
    return json_response(200, report)


async def stats(request: Request) -> Response:
    """Everything the dashboard shows, in one JSON document polled every second."""
    platform, observe = _platform(request)
    seconds = int(min(max(_float(request, "seconds") or 120, 10), 900))
    now = time.time()
    observe.window.trim(now)
    recent = observe.window.since(now - seconds)
    functions = []
    records = await asyncio.to_thread(platform.registry.list_functions)
    splits = await asyncio.to_thread(_splits, platform.registry, [r.name for r in records])
    for record in records:
        mine = [u for u in recent if u.function == record.name]
        s = summarize(mine)
        functions.append(
            {
                "name": record.name,
                "splits": splits.get(record.name, {}),
                "versions": _per_version(mine),
                "aliases": getattr(record, "aliases", {}),
                "last_version": getattr(record, "last_version", None),
                "invocations": s.invocations,
                "errors": s.errors,
                "throttles": s.throttles,
                "cold_starts": s.cold_starts,
                "p50_ms": s.p50_ms,
                "p95_ms": s.p95_ms,
                "p99_ms": s.p99_ms,
                "cost_usd": s.cost_usd,
                "pools": platform.scheduler.instances_of(record.name),
            }
        )
    total = summarize(recent)
    all_time = summarize(observe.window.all())
    return json_response(
        200,
        {
            "now": now,
            "window_s": seconds,
            "totals": {**total.__dict__, "rate_per_s": total.invocations / seconds},
            "since_start": {**all_time.__dict__, "started_at": observe.started_at},
            "series": observe.window.series(now, seconds),
            "functions": functions,
            "alerts": observe.alerts.snapshot()["active"],
            "rollouts": await _rollouts(platform),
            "provisioned_cost_usd": observe.metrics.provisioned_total_usd,
            "async": _async_snapshot(request),
        },
    )


def _async_snapshot(request: Request) -> dict[str, dict[str, float]]:
    """Per function: async queue depth, oldest event age, outcome counts (jobs/metrics.py)."""
    events = getattr(request.app.state, "events", None)
    return events.metrics.snapshot() if events is not None else {}


async def _rollouts(platform: Platform) -> list[dict[str, Any]]:
    """Rollouts in progress, and those that ended in the last hour (a rollback shows)."""
    if platform.rollouts is None:
        return []
    since = datetime.now(UTC) - timedelta(hours=1)
    found = await asyncio.to_thread(platform.rollouts.store.recent, since)
    keep = ("function_name", "alias", "baseline", "candidate", "state", "step", "steps", "reason")
    return [{k: v for k, v in r.to_dict().items() if k in keep or k == "fraction"} for r in found]


def _splits(registry: Any, names: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Weighted aliases: ``{function: {alias: {version: share}}}`` (the main one included)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        try:
            aliases = registry.list_aliases(name)
        except errors.NotFound:
            continue  # deleted meanwhile
        for a in aliases:
            if a.weights:
                shares = {str(a.version): 1 - sum(a.weights.values())}
                shares.update({str(v): w for v, w in a.weights.items()})
                out.setdefault(name, {})[a.name] = shares
    return out


def _per_version(usages: list[Any]) -> list[dict[str, Any]]:
    """Each version's error rate and p95 side by side, when more than one version ran."""
    versions = sorted({u.version for u in usages})
    if len(versions) < 2:
        return []
    rows = []
    for version in versions:
        s = summarize(u for u in usages if u.version == version)
        rows.append(
            {
                "version": version,
                "invocations": s.invocations,
                "errors": s.errors,
                "error_rate": s.error_rate,
                "p95_ms": s.p95_ms,
            }
        )
    return rows


async def function_logs(request: Request) -> Response:
    platform, observe = _platform(request)
    name = request.path_params["name"]
    await asyncio.to_thread(platform.registry.get_function, name)  # NOT_FOUND if unknown
    q = request.query_params
    request_id = q.get("request_id") or None
    tail = int(_float(request, "tail") or 0) or None
    ids: set[str] | None = None
    if q.get("since"):
        since = _time(q.get("since"), datetime.now(UTC))
        start = since.timestamp() if since else 0.0
        ids = {u.request_id for u in observe.window.since(start, name)}
        oldest = observe.window.oldest() or time.time()
        if start < oldest:  # older than the in-memory window: ask the meter too
            await observe.writer.flush()
            rows = await asyncio.to_thread(observe.store.records, name, since, None, 100_000)
            ids |= {r["request_id"] for r in rows}
    path = flogs.function_log_path(platform.settings.logs_dir, name)
    text, offset = await asyncio.to_thread(flogs.read_tail, path)
    lines = flogs.select_lines(text, request_id, ids, tail)
    if q.get("follow") in ("1", "true", "yes"):
        return StreamingResponse(
            _follow(request, path, lines, offset, request_id), media_type="text/plain"
        )
    return json_response(200, {"function": name, "lines": lines})


async def _follow(
    request: Request, path: Any, first: list[str], offset: int, request_id: str | None
) -> AsyncIterator[bytes]:
    """Lines so far, then new complete lines as they are appended (polling the file)."""
    if first:
        yield ("\n".join(first) + "\n").encode()
    deadline = time.monotonic() + FOLLOW_MAX_S
    partial = ""
    while time.monotonic() < deadline and not await request.is_disconnected():
        await asyncio.sleep(FOLLOW_POLL_S)
        text, offset = await asyncio.to_thread(flogs.read_tail, path, offset)
        text = partial + text
        complete, _, partial = text.rpartition("\n")
        if complete:
            lines = flogs.select_lines(complete, request_id)
            if lines:
                yield ("\n".join(lines) + "\n").encode()


async def ui(request: Request) -> Response:
    page = resources.files("coldbrew.observe").joinpath("ui/index.html").read_bytes()
    return Response(page, media_type="text/html; charset=utf-8")


def endpoints() -> list[Endpoint]:
    return [
        Endpoint("/metrics", metrics, "GET", GLOBAL_READ),
        Endpoint("/ui", ui, "GET", GLOBAL_READ),
        Endpoint("/v1/stats", stats, "GET", GLOBAL_READ),
        Endpoint("/v1/alerts", alerts, "GET", GLOBAL_READ),
        Endpoint("/v1/usage", usage, "GET", GLOBAL_READ),
        Endpoint("/v1/cost", cost, "GET", GLOBAL_READ),
        Endpoint("/v1/functions/{name}/logs", function_logs, "GET", function("read")),
    ]
