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
    return {k.decode(): v.decode() for k, v in outcome_header_pairs(outcome)}


def outcome_header_pairs(outcome: Outcome) -> list[tuple[bytes, bytes]]:
    """The headers as raw ASGI pairs: built as bytes, for the invoke fast path, where encoding
    each name and value once more per call showed in profiles."""
    headers = [
        (b"x-request-id", outcome.request_id.encode()),
        (b"x-coldbrew-executed-version", b"%d" % outcome.version),
        (b"x-coldbrew-cold-start", b"true" if outcome.cold_start else b"false"),
        (b"x-coldbrew-duration-ms", b"%.3f" % outcome.duration_ms),
        (b"x-coldbrew-billed-duration-ms", b"%d" % outcome.billed_duration_ms),
        (b"x-coldbrew-batch-size", b"%d" % outcome.batch_size),
        (b"x-coldbrew-queue-ms", b"%.3f" % outcome.queue_ms),
    ]
    start = outcome.start
    if start is not None:
        headers.append((b"x-coldbrew-start-source", start.source.encode()))
        headers.append((b"x-coldbrew-fork-ms", b"%.3f" % start.fork_ms))
        headers.append((b"x-coldbrew-start-ms", b"%.3f" % start.start_ms))
    if outcome.init_ms is not None:
        headers.append((b"x-coldbrew-init-duration-ms", b"%.3f" % outcome.init_ms))
    if outcome.limits is not None:
        headers.extend((k.encode(), v.encode()) for k, v in limit_headers(outcome.limits))
    return headers
