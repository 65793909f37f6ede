"""``POST /v1/functions/{name}/invoke``: the native synchronous invocation endpoint.

``name`` may carry a qualifier: ``digits:3`` (version 3) or ``digits:prod`` (alias prod).
``fastpath.InvokeFastPath`` answers the POST itself; this module renders what it does not
stream straight out (errors and proxy-shaped answers).
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from coldbrew.core.outcome import Outcome
from coldbrew.gateway.errors import error_response
from coldbrew.gateway.outcomes import outcome_headers
from coldbrew.gateway.proxy import looks_like_proxy, proxy_response


def render_outcome(outcome: Outcome) -> Response:
    headers = outcome_headers(outcome)
    if outcome.error is not None:
        error = outcome.error
        if error.code == "FUNCTION_ERROR":
            return error_response(
                "FUNCTION_ERROR",
                f"the handler raised {error.type}: {error.message}",
                headers=headers,
                errorType=error.type,
                errorMessage=error.message,
                stackTrace=error.stack,
                requestId=outcome.request_id,
            )
        return error_response(error.code, error.message, headers=headers)
    if looks_like_proxy(outcome.body):
        response = proxy_response(orjson.loads(outcome.body), headers)
        if response is not None:
            return response
    return Response(outcome.body, status_code=200, headers=headers, media_type="application/json")


async def invoke(request: Request) -> Response:
    """Never reached for POST: ``native.fastpath.InvokeFastPath`` answers invocations before
    routing. The route exists so that other methods on the path get 405 like any route."""
    raise RuntimeError("InvokeFastPath answers POST /v1/functions/{name}/invoke")
