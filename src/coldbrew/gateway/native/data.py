"""The data layer's endpoints (docs/DATA.md): the prediction log's export, feedback, quality.

``GET /v1/functions/{name}/predictions?since=1h&until=...&limit=N`` streams JSON lines, oldest
first, paged from the registry so an export of millions of rows holds neither memory nor a
transaction. It needs the ``deploy`` permission: logged events are the callers' data.

``POST /v1/functions/{name}/feedback`` (invoke permission) takes ``{"request_id": ...,
"label": ...}`` or ``{"items": [...]}`` (``value`` for ``label`` reads better for regression);
``GET /v1/functions/{name}/quality?since=30d`` reports accuracy, MAE, confusion matrices,
calibration and input drift (observe/quality.py; what drift is measured against is
observe/reference.py's, loaded through the platform).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from coldbrew import errors
from coldbrew.gateway.body import parse_json, read_body
from coldbrew.gateway.errors import json_response
from coldbrew.gateway.native.keys import parse_since
from coldbrew.gateway.policy import Endpoint, function
from coldbrew.observe.quality import MAX_ITEMS

PAGE = 1000


def _limit(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise errors.ValidationError(f"limit must be a whole number, not {raw[:20]!r}") from None
    if value < 1:
        raise errors.ValidationError("limit must be at least 1")
    return value


def _line(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row) + b"\n"  # datetimes as RFC 3339


async def export_predictions(request: Request) -> Response:
    platform = request.app.state.platform
    name = request.path_params["name"]
    await asyncio.to_thread(platform.registry.get_function, name)  # NOT_FOUND for a stranger
    query = request.query_params
    since, until = parse_since(query.get("since")), parse_since(query.get("until"))
    rows = platform.observe.prediction_store.rows(name, since, until, _limit(query.get("limit")))
    await platform.observe.predictions.flush()  # what was sampled a moment ago is included

    async def body(rows: Iterator[dict[str, Any]]) -> AsyncIterator[bytes]:
        while True:
            page = await asyncio.to_thread(lambda: list(itertools.islice(rows, PAGE)))
            if not page:
                return
            yield b"".join(_line(row) for row in page)

    return StreamingResponse(body(rows), media_type="application/x-ndjson")


def _items(body: Any) -> list[dict[str, Any]]:
    raw = body.get("items", [body]) if isinstance(body, dict) else None
    if not isinstance(raw, list) or not raw:
        raise errors.ValidationError(
            'send {"request_id": "...", "label": ...} or {"items": [{"request_id": ...}, ...]}'
        )
    if len(raw) > MAX_ITEMS:
        raise errors.ValidationError(f"at most {MAX_ITEMS} items per request")
    items = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("request_id"), str):
            raise errors.ValidationError(f"item {index} needs a request_id string")
        label = item.get("label", item.get("value", _NONE))
        if label is _NONE or label is None or isinstance(label, dict | list):
            raise errors.ValidationError(
                f"item {index} needs a label (or value): a string, number or boolean"
            )
        items.append({"request_id": item["request_id"], "label": label})
    return items


_NONE = object()


async def feedback(request: Request) -> Response:
    platform = request.app.state.platform
    name = request.path_params["name"]
    await asyncio.to_thread(platform.registry.get_function, name)  # NOT_FOUND, not "unmatched"
    items = _items(parse_json(await read_body(request, 8 * 1024 * 1024)))
    versions = await asyncio.to_thread(platform.registry.list_versions, name)
    configs = {v.number: v.config for v in versions}
    await platform.observe.predictions.flush()  # feedback right after the call still matches
    done = await asyncio.to_thread(platform.observe.quality.submit, name, items, configs)
    return json_response(200, done)


async def quality(request: Request) -> Response:
    platform = request.app.state.platform
    name = request.path_params["name"]
    await asyncio.to_thread(platform.registry.get_function, name)
    since = parse_since(request.query_params.get("since", "30d"))
    await platform.observe.predictions.flush()
    versions = await asyncio.to_thread(platform.registry.list_versions, name)
    configs = {v.number: v.config for v in versions}  # [quality] paths, for calibration
    report = await asyncio.to_thread(platform.observe.quality.report, name, since, None, configs)
    return json_response(200, report)


def endpoints() -> list[Endpoint]:
    base = "/v1/functions/{name}"
    return [
        Endpoint(f"{base}/predictions", export_predictions, "GET", function("deploy")),
        Endpoint(f"{base}/feedback", feedback, "POST", function("invoke")),
        Endpoint(f"{base}/quality", quality, "GET", function("read")),
    ]
