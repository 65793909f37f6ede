"""API Gateway proxy events, built from a Starlette request the way API Gateway builds them.

Payload 1.0 is the REST API (and HTTP API v1) shape: ``headers`` + ``multiValueHeaders``,
``queryStringParameters`` + ``multiValueQueryStringParameters``, ``requestContext.identity``;
absent parts are ``null``. Payload 2.0 is the HTTP API shape: lower-case headers with repeated
values comma-joined, ``cookies`` taken out of the headers, ``requestContext.http``, and absent
parts left out. Bodies that are not text are base64 with ``isBase64Encoded: true``.

coldbrew's own credentials are not the function's business: ``Authorization`` and
``X-Api-Key`` are left out of the event unless the route has ``forward_credentials`` (an
admin's choice), so an admin's key sent to a route never reaches a deployer's code.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

ACCOUNT_ID = "000000000000"
API_ID = "coldbrew"
TEXT_TYPES = (
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-www-form-urlencoded",
    "application/graphql",
    "application/yaml",
)
CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})
"""Headers that carry coldbrew's credentials (bearer keys, JWTs, SigV4 access key ids)."""


@dataclass(frozen=True)
class RouteContext:
    """What the matched route contributes to the event."""

    method: str
    path: str
    """The route's path template, e.g. ``/items/{id}`` (``resource`` / ``routeKey``)."""
    path_parameters: dict[str, str]
    stage: str
    request_id: str
    forward_credentials: bool = False
    """Keep ``Authorization`` and ``X-Api-Key`` in the event (off by default)."""


def event_headers(request: Request, forward_credentials: bool = False) -> list[tuple[str, str]]:
    """The request's headers as the function may see them, repeated ones in order."""
    items = request.headers.items()
    if forward_credentials:
        return list(items)
    return [(k, v) for k, v in items if k not in CREDENTIAL_HEADERS]


def is_text(content_type: str | None, body: bytes) -> bool:
    """Whether API Gateway would pass the body as text rather than base64."""
    if not content_type:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True
    kind = content_type.split(";", 1)[0].strip().lower()
    return (
        kind.startswith("text/")
        or kind in TEXT_TYPES
        or kind.endswith("+json")
        or kind.endswith("+xml")
    )


def _body(request: Request, body: bytes) -> tuple[str | None, bool]:
    if not body:
        return None, False
    if is_text(request.headers.get("content-type"), body):
        return body.decode("utf-8"), False
    return base64.b64encode(body).decode(), True


def _host(request: Request) -> tuple[str, str]:
    host = request.headers.get("host", "localhost").rsplit(":", 1)[0] or "localhost"
    return host, host.split(".", 1)[0]


def _now() -> tuple[str, int]:
    epoch_ms = int(time.time() * 1000)
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch_ms / 1000))
    return stamp, epoch_ms


def _protocol(request: Request) -> str:
    return f"HTTP/{request.scope.get('http_version', '1.1')}"


def _source_ip(request: Request) -> str:
    return request.client.host if request.client else "127.0.0.1"


def rest_event(request: Request, body: bytes, route: RouteContext) -> dict[str, Any]:
    """A REST API proxy event (payload format 1.0)."""
    multi_headers: dict[str, list[str]] = {}
    for key, value in event_headers(request, route.forward_credentials):
        multi_headers.setdefault(key, []).append(value)
    multi_query: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        multi_query.setdefault(key, []).append(value)
    text, encoded = _body(request, body)
    domain, prefix = _host(request)
    stamp, epoch_ms = _now()
    return {
        "resource": route.path,
        "path": request.url.path,
        "httpMethod": request.method,
        "headers": {k: v[-1] for k, v in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": route.path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": domain,
            "domainPrefix": prefix,
            "extendedRequestId": route.request_id,
            "httpMethod": request.method,
            "identity": _identity(request),
            "path": request.url.path,
            "protocol": _protocol(request),
            "requestId": route.request_id,
            "requestTime": stamp,
            "requestTimeEpoch": epoch_ms,
            "resourceId": None,
            "resourcePath": route.path,
            "stage": route.stage,
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def _identity(request: Request) -> dict[str, Any]:
    return {
        "accessKey": None,
        "accountId": None,
        "apiKey": None,
        "apiKeyId": None,
        "caller": None,
        "clientCert": None,
        "cognitoAuthenticationProvider": None,
        "cognitoAuthenticationType": None,
        "cognitoIdentityId": None,
        "cognitoIdentityPoolId": None,
        "principalOrgId": None,
        "sourceIp": _source_ip(request),
        "user": None,
        "userAgent": request.headers.get("user-agent"),
        "userArn": None,
    }


def http_event(request: Request, body: bytes, route: RouteContext) -> dict[str, Any]:
    """An HTTP API proxy event (payload format 2.0)."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for key, value in event_headers(request, route.forward_credentials):
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    query: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        query[key] = f"{query[key]},{value}" if key in query else value
    text, encoded = _body(request, body)
    domain, prefix = _host(request)
    stamp, epoch_ms = _now()
    route_key = f"{route.method} {route.path}"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.url.path,
        "rawQueryString": request.url.query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": domain,
            "domainPrefix": prefix,
            "http": {
                "method": request.method,
                "path": request.url.path,
                "protocol": _protocol(request),
                "sourceIp": _source_ip(request),
                "userAgent": request.headers.get("user-agent", ""),
            },
            "requestId": route.request_id,
            "routeKey": route_key,
            "stage": route.stage,
            "time": stamp,
            "timeEpoch": epoch_ms,
        },
        "isBase64Encoded": encoded,
    }
    # HTTP API leaves out what the request does not have.
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if route.path_parameters:
        event["pathParameters"] = route.path_parameters
    if text is not None:
        event["body"] = text
    return event


def build_event(
    payload_format: str, request: Request, body: bytes, route: RouteContext
) -> dict[str, Any]:
    if payload_format == "1.0":
        return rest_event(request, body, route)
    return http_event(request, body, route)
