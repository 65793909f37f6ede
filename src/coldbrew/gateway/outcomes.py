"""What every protocol says about an invocation besides its body: the request id (the caller's
``X-Request-Id`` when sane) and the ``x-coldbrew-*`` headers of an :class:`Outcome`."""

from __future__ import annotations

import re

from starlette.requests import Request

from coldbrew.core.outcome import Outcome
from coldbrew.dataplane.limits import limit_headers
from coldbrew.ids import new_request_id

REQUEST_ID_SHAPE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_from(given: str | None) -> str:
    """The caller's ``X-Request-Id`` when it is a sane one, else a fresh uuid4."""
    if given and REQUEST_ID_SHAPE.match(given):
        return given
    return new_request_id()


def request_id_for(request: Request) -> str:
    return request_id_from(request.headers.get("x-request-id"))


def outcome_headers(outcome: Outcome) -> dict[str, str]:
    headers = {
        "x-request-id": outcome.request_id,
        "x-coldbrew-executed-version": str(outcome.version),
        "x-coldbrew-cold-start": "true" if outcome.cold_start else "false",
        "x-coldbrew-duration-ms": f"{outcome.duration_ms:.3f}",
        "x-coldbrew-billed-duration-ms": str(outcome.billed_duration_ms),
        "x-coldbrew-batch-size": str(outcome.batch_size),
        "x-coldbrew-queue-ms": f"{outcome.queue_ms:.3f}",
    }
    start = outcome.start
    if start is not None:
        headers["x-coldbrew-start-source"] = start.source
        headers["x-coldbrew-fork-ms"] = f"{start.fork_ms:.3f}"
        headers["x-coldbrew-start-ms"] = f"{start.start_ms:.3f}"
    if outcome.init_ms is not None:
        headers["x-coldbrew-init-duration-ms"] = f"{outcome.init_ms:.3f}"
    if outcome.limits is not None:
        headers.update(limit_headers(outcome.limits))
    return headers
