"""``POST /v1/gc``: collect the blobs and bundles no version references (admin only).

Query parameters: ``dry_run=true`` lists what would go without removing anything;
``grace_s=<seconds>`` overrides ``COLDBREW_GC_GRACE_S`` for this pass (0 also collects what a
deploy in flight may be about to reference: only for a quiet server).
"""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.gateway.errors import json_response
from coldbrew.gateway.native.uploads import truthy


def _grace(raw: str | None) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise errors.ValidationError(f"grace_s must be a number of seconds >= 0, not {raw!r}")
    return value


async def collect_garbage(request: Request) -> Response:
    platform = request.app.state.platform
    if platform.collector is None:
        raise errors.NotFound("garbage collection is not available on this server")
    query = request.query_params
    report = await platform.collector.collect(
        dry_run=truthy(query.get("dry_run")), grace_s=_grace(query.get("grace_s"))
    )
    return json_response(200, report.to_dict())
