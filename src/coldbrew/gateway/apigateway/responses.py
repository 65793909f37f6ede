"""A handler's answer to an API Gateway event, turned back into HTTP.

A proxy result (``statusCode``, ``headers``, ``multiValueHeaders``, ``body``,
``isBase64Encoded``, and for payload 2.0 ``cookies``) becomes that response, through the same
``gateway/proxy.py`` the native endpoint uses. Anything else is HTTP API 2.0's rule, applied
to both formats: 200 with the return value as a JSON body. (A REST API would answer 502 to
such a return; no caller depends on that, and 200 is what the handler meant.)
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from coldbrew.core.outcome import Outcome
from coldbrew.dataplane.limits import limit_headers
from coldbrew.gateway.errors import error_response
from coldbrew.gateway.proxy import looks_like_proxy, proxy_response


def result_response(body: bytes, headers: dict[str, str]) -> Response:
    """The HTTP response for a handler's JSON-encoded return value."""
    if looks_like_proxy(body):
        result: Any = orjson.loads(body)
        response = proxy_response(result, headers)
        if response is not None:
            for cookie in result.get("cookies") or []:
                response.headers.append("set-cookie", str(cookie))
            return response
    return Response(body, 200, headers, media_type="application/json")


def outcome_response(outcome: Outcome) -> Response:
    """API Gateway hides a failed handler behind a 502; so does coldbrew, with a stable code
    and the request id that finds the invocation in the function's log."""
    headers = {"x-request-id": outcome.request_id, "apigw-requestid": outcome.request_id}
    if outcome.limits is not None:
        headers.update(limit_headers(outcome.limits))
    if outcome.error is not None:
        return error_response(
            outcome.error.code,
            f"the function failed (request id {outcome.request_id}); see its log",
            status=502,
            headers=headers,
        )
    return result_response(outcome.body, headers)
