"""A raw ASGI path for ``POST /v1/functions/{target}/invoke``, the one request that is hot.

Starlette's router, Request and Response objects cost tens of microseconds per request; for
small models that is a large share of the whole invocation. This middleware answers invocations
straight from the ASGI scope and passes every other request on unchanged. Behaviour (status
codes, headers, error bodies) is exactly that of ``invoke.invoke``; both share its helpers.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from coldbrew import errors
from coldbrew.gateway.errors import STATUS_BY_CODE
from coldbrew.gateway.invoke import (
    REQUEST_ID_SHAPE,
    check_schema,
    outcome_headers,
    parse_event,
    render_outcome,
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
        request_id = _request_id(headers)
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
            await _send_error(send, exc, request_id)
            return
        if outcome.error is None and not looks_like_proxy(outcome.body):
            response_headers = JSON_HEADERS + [
                (k.encode(), v.encode()) for k, v in outcome_headers(outcome).items()
            ]
            await send({"type": "http.response.start", "status": 200, "headers": response_headers})
            await send({"type": "http.response.body", "body": outcome.body})
            return
        await render_outcome(outcome)(scope, receive, send)


def _request_id(headers: dict[bytes, bytes]) -> str:
    given = headers.get(b"x-request-id")
    if given:
        text = given.decode("latin-1")
        if REQUEST_ID_SHAPE.match(text):
            return text
    import uuid

    return str(uuid.uuid4())


async def _read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise errors.ValidationError("the client went away before sending the whole body")
        body += message.get("body", b"")
        if len(body) > limit:
            raise _too_large(limit)
        if not message.get("more_body", False):
            return body


def _too_large(limit: int) -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge(
        f"request body is larger than the {limit / 1024 / 1024:g} MB limit", limit_bytes=limit
    )


async def _send_error(send: Send, exc: errors.ColdbrewError, request_id: str) -> None:
    headers: list[tuple[bytes, bytes]] = [*JSON_HEADERS, (b"x-request-id", request_id.encode())]
    if isinstance(exc, errors.Throttled):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    body: dict[str, Any] = {"error": exc.to_dict()}
    await send(
        {
            "type": "http.response.start",
            "status": STATUS_BY_CODE.get(exc.code, 500),
            "headers": headers,
        }
    )
    await send({"type": "http.response.body", "body": orjson.dumps(body)})
