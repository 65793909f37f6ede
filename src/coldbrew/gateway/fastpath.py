"""A raw ASGI path for ``POST /v1/functions/{target}/invoke``, the one request that is hot.

Starlette's router, Request and Response objects cost tens of microseconds per request; for
small models that is a large share of the whole invocation. This middleware answers invocations
straight from the ASGI scope and passes every other request on unchanged. It shares
the helpers of ``invoke.py`` (request ids, schemas, headers, rendering) and ``errors.py``, so
its answers are those of every other endpoint.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from coldbrew import errors
from coldbrew.gateway.body import too_large
from coldbrew.gateway.errors import from_exception
from coldbrew.gateway.invoke import (
    check_schema,
    outcome_headers,
    parse_event,
    render_outcome,
    request_id_from,
    split_qualifier,
)
from coldbrew.gateway.proxy import looks_like_proxy

PREFIX = "/v1/functions/"
SUFFIX = "/invoke"
JSON_HEADERS = [(b"content-type", b"application/json")]


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
        given = headers.get(b"x-request-id")
        request_id = request_id_from(given.decode("latin-1") if given else None)
        try:
            name, qualifier = split_qualifier(target)
            payload = await _read_body(receive, headers, platform.settings.max_payload_bytes)
            version = await platform.scheduler.resolve(name, qualifier)
            if version.config.event_schema is not None:
                check_schema(version, parse_event(payload))
            elif payload[:1] not in (b"{", b"[") and payload.strip():
                parse_event(payload)  # reject garbage here, before it costs an instance
            outcome = await platform.scheduler.invoke(
                version, payload, request_id, qualifier=qualifier
            )
        except errors.ColdbrewError as exc:
            await from_exception(exc, {"x-request-id": request_id})(scope, receive, send)
            return
        if outcome.error is None and not looks_like_proxy(outcome.body):
            # A content-length: without one uvicorn falls back to chunked transfer encoding.
            response_headers = [
                *JSON_HEADERS,
                (b"content-length", b"%d" % len(outcome.body)),
                *[(k.encode(), v.encode()) for k, v in outcome_headers(outcome).items()],
            ]
            await send({"type": "http.response.start", "status": 200, "headers": response_headers})
            await send({"type": "http.response.body", "body": outcome.body})
            return
        await render_outcome(outcome)(scope, receive, send)


async def _read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise errors.ValidationError("the client went away before sending the whole body")
        body += message.get("body", b"")
        if len(body) > limit:
            raise too_large(limit)
        if not message.get("more_body", False):
            return body
