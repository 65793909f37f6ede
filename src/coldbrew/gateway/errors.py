"""The one place errors become HTTP: the JSON error body, with the status each error declares
(``coldbrew.errors``: ``ColdbrewError.status``, ``errors.status_of(code)``).

Every error leaves the gateway as ``{"error": {"code": ..., "message": ...}}`` with a stable code;
an unexpected exception becomes INTERNAL_ERROR with a request id, never a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.dataplane.limits import limit_headers
from coldbrew.security.errors import Forbidden, QuotaExceeded, RateLimited, Unauthorized

log = logging.getLogger("coldbrew.gateway")

# Codes that exist only here (no ColdbrewError raises them) get their status the same way.
errors.declare("METHOD_NOT_ALLOWED", 405)
errors.declare("UNSUPPORTED_MEDIA_TYPE", 415)
# An instance's code: runtime/features.py declares it there too, but the gateway process never
# imports that module, so without this line the caller got a 500 for a feature outage.
errors.declare("FEATURES_UNAVAILABLE", 503)

AWS_ERROR_TYPES: dict[str, str] = {
    errors.NotFound.code: "ResourceNotFoundException",
    errors.Throttled.code: "TooManyRequestsException",
    RateLimited.code: "TooManyRequestsException",
    QuotaExceeded.code: "TooManyRequestsException",
    errors.PayloadTooLarge.code: "RequestEntityTooLargeException",
    errors.ValidationError.code: "InvalidRequestContentException",
    Unauthorized.code: "UnrecognizedClientException",
    Forbidden.code: "AccessDeniedException",
}
"""The AWS error type (``x-amzn-ErrorType``) of a code, on the Lambda API and @connections:
botocore raises its exception class by this name. Any other code is a ``ServiceException``."""


def json_response(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content), status_code=status, headers=headers, media_type="application/json"
    )


def error_response(
    code: str,
    message: str,
    status: int | None = None,
    headers: dict[str, str] | None = None,
    **details: Any,
) -> Response:
    status = status or errors.status_of(code)
    return json_response(status, {"error": {"code": code, "message": message, **details}}, headers)


def from_exception(exc: errors.ColdbrewError, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if isinstance(exc, errors.Throttled | errors.InitError):
        headers["Retry-After"] = str(exc.retry_after_s)
    decision = getattr(exc, "decision", None)
    if decision is not None:  # a refused rate limit or quota: say where the caller stands
        headers.update(limit_headers(decision))
    return error_response(exc.code, exc.message, exc.status, headers, **exc.details)


async def handle_coldbrew_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.ColdbrewError)
    return from_exception(exc)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response("NOT_FOUND", f"no route for {request.method} {request.url.path}")
    if exc.status_code == 405:
        return error_response(
            "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {request.url.path}", 405
        )
    return error_response("HTTP_ERROR", str(exc.detail), exc.status_code)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(
        "INTERNAL_ERROR", "the platform hit an unexpected error; it has been logged", 500
    )


EXCEPTION_HANDLERS = {
    errors.ColdbrewError: handle_coldbrew_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
