"""The one place core errors become HTTP: status codes and the JSON error body.

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

log = logging.getLogger("coldbrew.gateway")

STATUS_BY_CODE: dict[str, int] = {
    errors.ValidationError.code: 400,
    errors.NotFound.code: 404,
    errors.Conflict.code: 409,
    errors.PayloadTooLarge.code: 413,
    errors.Throttled.code: 429,
    errors.DeployError.code: 422,
    errors.FunctionError.code: 500,
    errors.InvocationTimeout.code: 504,
    errors.OutOfMemory.code: 502,
    errors.InstanceCrashed.code: 502,
    "ARTIFACT_TAMPERED": 500,
    "MODEL_LOAD_ERROR": 422,
    "METHOD_NOT_ALLOWED": 405,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "RATE_LIMITED": 429,
    "QUOTA_EXCEEDED": 429,
    "DEADLINE_EXCEEDED": 504,
    "UNTRUSTED_ARTIFACT": 422,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}


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
    status = status or STATUS_BY_CODE.get(code, 500)
    return json_response(status, {"error": {"code": code, "message": message, **details}}, headers)


def from_exception(exc: errors.ColdbrewError, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if isinstance(exc, errors.Throttled):
        headers["Retry-After"] = str(exc.retry_after_s)
    return error_response(exc.code, exc.message, headers=headers, **exc.details)


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
