"""Turning what a handler returned into an HTTP response, the way API Gateway does.

A return value shaped like a Lambda proxy response (``statusCode``, ``headers``,
``multiValueHeaders``, ``body``, ``isBase64Encoded``) becomes that response; anything else is
served as a 200 JSON body. This is what lets a handler written for Lambda run unchanged.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from starlette.responses import Response


def looks_like_proxy(body: bytes) -> bool:
    # Cheap pre-check so plain model outputs are never parsed twice.
    return body[:1] == b"{" and b'"statusCode"' in body


def proxy_response(result: Any, extra_headers: dict[str, str]) -> Response | None:
    """The HTTP response for a proxy-shaped result, or None when it is a plain value."""
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
        return None
    status = result["statusCode"]
    if not 100 <= status <= 599:
        return None
    body = result.get("body", "")
    if body is None:
        raw = b""
    elif isinstance(body, str):
        raw = body.encode()
        if result.get("isBase64Encoded"):
            try:
                raw = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                raw = body.encode()
    else:
        raw = orjson.dumps(body)
    response = Response(raw, status_code=status, headers=extra_headers)
    headers = result.get("headers") or {}
    for key, value in headers.items() if isinstance(headers, dict) else []:
        response.headers[str(key)] = str(value)
    multi = result.get("multiValueHeaders") or {}
    for key, values in multi.items() if isinstance(multi, dict) else []:
        for value in values if isinstance(values, list) else [values]:
            response.headers.append(str(key), str(value))
    if "content-type" not in response.headers:
        response.headers["content-type"] = "application/json"
    return response
