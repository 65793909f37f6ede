"""On-success and on-failure destinations: Lambda's destination record, and its delivery.

A destination (parsed by ``coldbrew.core.destinations``) is one of:

- ``function:NAME`` (or a Lambda function ARN): the record is queued as an async invocation of
  that function, as Lambda does;
- ``http://...`` / ``https://...``: the record is POSTed as JSON (a webhook);
- ``results``: the record is kept in the function's queue of results
  (``GET /v1/functions/{name}/results``).

The record (Lambda's)::

    {"version": "1.0", "timestamp": "...Z",
     "requestContext": {"requestId", "functionArn", "condition", "approximateInvokeCount"},
     "requestPayload": <the event>,
     "responseContext": {"statusCode", "executedVersion", "functionError"?},
     "responsePayload": <what the handler returned, or its error>}
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from coldbrew.runtime.context import function_arn


def _timestamp(at: datetime | None = None) -> str:
    at = (at or datetime.now(UTC)).astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _json_or_text(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace")


def record(
    *,
    request_id: str,
    function: str,
    qualifier: str | None,
    condition: str,
    attempts: int,
    payload: bytes,
    executed_version: int | None = None,
    response: bytes | None = None,
    function_error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Lambda's destination record. ``condition`` is ``Success``, ``RetriesExhausted`` or
    ``EventAgeExceeded``; the response parts are left out when the function never answered."""
    body: dict[str, Any] = {
        "version": "1.0",
        "timestamp": _timestamp(),
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn(function, qualifier or "$LATEST"),
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "requestPayload": _json_or_text(payload),
    }
    if executed_version is None:
        return body
    context: dict[str, Any] = {"statusCode": 200, "executedVersion": str(executed_version)}
    if function_error is not None:
        context["functionError"] = "Unhandled"
        body["responsePayload"] = {
            "errorMessage": function_error.get("message", ""),
            "errorType": function_error.get("type", function_error.get("code", "Error")),
            "stackTrace": function_error.get("stack", []),
        }
    else:
        body["responsePayload"] = _json_or_text(response or b"")
    body["responseContext"] = context
    return body
