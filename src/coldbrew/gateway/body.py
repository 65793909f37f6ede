"""Reading request bodies without letting a client exhaust memory."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Receive

from coldbrew import errors


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or PAYLOAD_TOO_LARGE as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise too_large(limit)
    return bytes(chunks)


async def receive_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """:func:`read_body` for the raw ASGI paths (the invoke fast path, async submits), which
    have no starlette Request: ``headers`` are the request's, names in lower case."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _gone()
    first: bytes = message.get("body", b"")
    if len(first) > limit:
        raise too_large(limit)
    if not message.get("more_body", False):
        return first  # the usual case: one message, no copy
    body = bytearray(first)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _gone()
        body += message.get("body", b"")
        if len(body) > limit:
            raise too_large(limit)
        if not message.get("more_body", False):
            return bytes(body)


def _gone() -> errors.ValidationError:
    return errors.ValidationError("the client went away before sending the whole body")


def too_large(limit: int) -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge(
        f"request body is larger than the {limit / 1024 / 1024:g} MB limit", limit_bytes=limit
    )


def parse_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON, or VALIDATION_ERROR saying why not."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.ValidationError(f"request body is not valid JSON: {exc}") from None
