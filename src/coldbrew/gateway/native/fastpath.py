"""A raw ASGI path for ``POST /v1/functions/{target}/invoke``, the one request that is hot.

Starlette's router, Request and Response objects cost tens of microseconds per request; for
small models that is a large share of the whole invocation. This middleware answers invocations
straight from the ASGI scope and passes every other request on unchanged. It shares the
helpers of ``gateway/outcomes.py`` and ``invoke.py`` (request ids, headers, rendering) and
``gateway/errors.py``, so its answers are those of every other endpoint.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from coldbrew import errors
from coldbrew.dataplane import InvocationRequest
from coldbrew.gateway.auth import principal_of_scope
from coldbrew.gateway.body import receive_body
from coldbrew.gateway.errors import from_exception
from coldbrew.gateway.native import async_api
from coldbrew.gateway.native.invoke import render_outcome
from coldbrew.gateway.outcomes import outcome_header_pairs, request_id_from
from coldbrew.gateway.proxy import looks_like_proxy
from coldbrew.gateway.targets import split_qualifier

PREFIX = "/v1/functions/"
SUFFIX = "/invoke"
JSON_HEADERS = [(b"content-type", b"application/json")]
ASYNC_HEADER = b"x-coldbrew-invocation-type"
STICKY_HEADER = b"x-coldbrew-sticky-key"


class InvokeFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(PREFIX) and path.endswith(SUFFIX):
                target = path[len(PREFIX) : -len(SUFFIX)]
                if target and "/" not in target:
                    await self.invoke(target, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def invoke(self, target: str, scope: Scope, receive: Receive, send: Send) -> None:
        platform = scope["app"].state.platform
        headers = dict(scope["headers"])
        # Async invocations (?async=1 or X-Coldbrew-Invocation-Type: Event) go to the durable
        # queue (native/async_api.py, jobs/); one substring test and one dict lookup here.
        if b"async=1" in scope["query_string"] or headers.get(ASYNC_HEADER) == b"Event":
            await async_api.accept(target, scope, receive, send)
            return
        given = headers.get(b"x-request-id")
        request_id = request_id_from(given.decode("latin-1") if given else None)
        try:
            name, qualifier = split_qualifier(target)
            payload = await receive_body(receive, headers, platform.settings.max_payload_bytes)
            principal = principal_of_scope(scope)
            call = InvocationRequest(name, payload, request_id, qualifier, principal)
            sticky = headers.get(STICKY_HEADER)  # keeps a caller on one version of a split
            if sticky is not None:
                call.sticky_key = sticky.decode("latin-1")
            outcome = await platform.dataplane.invoke(call)
        except errors.ColdbrewError as exc:
            await from_exception(exc, {"x-request-id": request_id})(scope, receive, send)
            return
        if outcome.error is None and not looks_like_proxy(outcome.body):
            # A content-length: without one uvicorn falls back to chunked transfer encoding.
            response_headers = [
                *JSON_HEADERS,
                (b"content-length", b"%d" % len(outcome.body)),
                *outcome_header_pairs(outcome),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": response_headers})
            await send({"type": "http.response.body", "body": outcome.body})
            return
        await render_outcome(outcome)(scope, receive, send)
