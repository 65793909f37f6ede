"""Reading request bodies without letting a client exhaust memory."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

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
