"""API Gateway WebSocket events: what the function receives for $connect, messages and
$disconnect, and how a message picks its route key.

The shapes follow what API Gateway sends a Lambda proxy integration, so a handler written for
it runs unchanged. Differences: header names arrive lower-cased (ASGI normalises them),
``domainName`` includes the port, and ``requestContext.callbackUrl`` (a coldbrew addition) is
the ``@connections`` endpoint, ``http://{domainName}/{stage}`` unless the gateway sits behind TLS.

coldbrew's own credentials never reach the function: ``Authorization`` and ``X-Api-Key`` are
left out of $connect and $disconnect headers, and a ``token`` query parameter (how a browser
passes its key on the handshake) out of $connect's query parameters when it holds a credential
coldbrew would accept (an API key or a JWT); any other ``token`` is the application's own.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import Headers, QueryParams

from coldbrew import errors
from coldbrew.gateway.websocket.connections import Connection
from coldbrew.runtime.config import FunctionConfig
from coldbrew.security import keys

STAGE = "ws"
DEFAULT_EXPRESSION = "$request.body.action"
EXPRESSION_VARIABLE = "WEBSOCKET_ROUTE_SELECTION_EXPRESSION"
ROUTES_VARIABLE = "WEBSOCKET_ROUTES"
_BODY_PREFIX = "request.body."
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})
CREDENTIAL_QUERY = "token"


@dataclass(frozen=True)
class RouteSelector:
    """Picks a message's route key from its JSON body, as ``route_selection_expression`` does.

    ``routes`` are the declared route keys: a selected value that is not one of them goes to
    ``$default``. With no declared routes (the usual case: one function serves every route)
    any string value is its own route key."""

    path: tuple[str, ...] = ("action",)
    routes: frozenset[str] | None = None

    @classmethod
    def parse(cls, expression: str, routes: str | None = None) -> RouteSelector:
        inner = expression.strip()
        if inner.startswith("${") and inner.endswith("}"):
            inner = inner[2:-1]
        inner = inner.removeprefix("$")
        if not inner.startswith(_BODY_PREFIX) or not inner[len(_BODY_PREFIX) :]:
            raise errors.ValidationError(
                f"unsupported route selection expression {expression!r}; use "
                "$request.body.<field>[.<field>...]"
            )
        declared = None
        if routes:
            declared = frozenset(r.strip() for r in routes.split(",") if r.strip())
        return cls(tuple(inner[len(_BODY_PREFIX) :].split(".")), declared)

    @classmethod
    def for_config(cls, config: FunctionConfig) -> RouteSelector:
        """From the function's ``[websocket]`` table; the ``WEBSOCKET_*`` environment variables
        of earlier bundles still override it."""
        env = config.environment
        declared = ",".join(config.websocket.routes) or None
        return cls.parse(
            env.get(EXPRESSION_VARIABLE, config.websocket.route_selection_expression),
            env.get(ROUTES_VARIABLE, declared),
        )

    def select(self, body: str | None) -> str:
        if body is None:
            return "$default"
        try:
            value: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            return "$default"
        for key in self.path:
            if not isinstance(value, dict) or key not in value:
                return "$default"
            value = value[key]
        if not isinstance(value, str) or not value:
            return "$default"
        if self.routes is not None and value not in self.routes:
            return "$default"
        return value


def api_id(function: str) -> str:
    """A stable 10-character id per function, in the place of API Gateway's API id."""
    return hashlib.sha256(function.encode()).hexdigest()[:10]


def request_context(
    connection: Connection, route_key: str, event_type: str, request_id: str
) -> dict[str, Any]:
    now = time.time()
    return {
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "messageDirection": "IN",
        "stage": STAGE,
        "connectedAt": int(connection.connected_at * 1000),
        "requestTimeEpoch": int(now * 1000),
        "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent},
        "requestId": request_id,
        "domainName": connection.domain_name,
        "connectionId": connection.id,
        "apiId": api_id(connection.function.partition(":")[0]),
        "callbackUrl": connection.callback_url,
    }


def _is_credential(value: str) -> bool:
    """What the security middleware would take as a key or a token (see gateway/auth.py)."""
    value = value.strip()
    return keys.looks_like_key(value) or value.count(".") == 2


def _header_fields(headers: Headers) -> dict[str, Any]:
    multi: dict[str, list[str]] = {}
    for key, value in headers.items():
        if key not in CREDENTIAL_HEADERS:
            multi.setdefault(key, []).append(value)
    return {"headers": {k: v[-1] for k, v in multi.items()}, "multiValueHeaders": multi}


def connect_event(
    connection: Connection, request_id: str, headers: Headers, query: QueryParams
) -> dict[str, Any]:
    event: dict[str, Any] = _header_fields(headers)
    multi: dict[str, list[str]] = {}
    for key, value in query.multi_items():
        if not (key == CREDENTIAL_QUERY and _is_credential(value)):
            multi.setdefault(key, []).append(value)
    if multi:
        # As on API Gateway, the query keys appear only when there is a query string.
        event["queryStringParameters"] = {k: v[-1] for k, v in multi.items()}
        event["multiValueQueryStringParameters"] = multi
    event["requestContext"] = request_context(connection, "$connect", "CONNECT", request_id)
    event["isBase64Encoded"] = False
    return event


def message_event(
    connection: Connection, request_id: str, route_key: str, text: str | None, data: bytes | None
) -> dict[str, Any]:
    context = request_context(connection, route_key, "MESSAGE", request_id)
    context["messageId"] = uuid.uuid4().hex[:16]
    if text is not None:
        return {"requestContext": context, "body": text, "isBase64Encoded": False}
    body = base64.b64encode(data or b"").decode()
    return {"requestContext": context, "body": body, "isBase64Encoded": True}


def disconnect_event(
    connection: Connection, request_id: str, headers: Headers, code: int, reason: str
) -> dict[str, Any]:
    context = request_context(connection, "$disconnect", "DISCONNECT", request_id)
    context["disconnectStatusCode"] = code
    context["disconnectReason"] = reason
    return {**_header_fields(headers), "requestContext": context, "isBase64Encoded": False}
