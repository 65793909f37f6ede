"""The catch-all route: a request no other route took is served by the function mounted on
its API Gateway route, or answered with the usual JSON NOT_FOUND.

A path under one of coldbrew's own prefixes (``/v1``, ``/2015-03-31``...) that no coldbrew
endpoint took is a mistake of the caller's (``/v1/functoins``): it is NOT_FOUND, never a
function's event, whatever routes exist."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.dataplane import InvocationRequest
from coldbrew.gateway.apigateway.events import RouteContext, build_event
from coldbrew.gateway.apigateway.responses import outcome_response
from coldbrew.gateway.apigateway.routing import Router
from coldbrew.gateway.auth import current
from coldbrew.gateway.body import read_body
from coldbrew.gateway.errors import error_response, from_exception
from coldbrew.gateway.outcomes import request_id_for
from coldbrew.platform import Platform
from coldbrew.registry.routes import RouteTable, reserved_prefix

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def router_for(request: Request) -> Router:
    """The app's one Router, made on first use (the registry exists only after start-up)."""
    router = getattr(request.app.state, "api_router", None)
    if router is None:
        platform: Platform = request.app.state.platform
        router = request.app.state.api_router = Router(RouteTable(platform.registry))
    return router


async def serve(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    request_id = request_id_for(request)
    path = request.url.path
    found = None if reserved_prefix(path) else await router_for(request).match(request.method, path)
    if found is None:
        return error_response(
            "NOT_FOUND",
            f"no route for {request.method} {request.url.path}",
            headers={"x-request-id": request_id},
        )
    route, params = found
    if not current(request).sees(route.function_name):  # as if the route did not exist
        return error_response(
            "NOT_FOUND",
            f"no route for {request.method} {request.url.path}",
            headers={"x-request-id": request_id},
        )
    try:
        body = await read_body(request, platform.settings.max_payload_bytes)
        context = RouteContext(
            route.method, route.path, params, route.stage, request_id, route.forward_credentials
        )
        event = build_event(route.payload_format, request, body, context)
        outcome = await platform.dataplane.invoke(
            InvocationRequest(
                route.function_name,
                orjson.dumps(event),
                request_id,
                route.qualifier,
                current(request),
                protocol="apigateway",
                event=event,
                check_schema=False,  # the event is API Gateway's envelope (docs/APIGATEWAY.md)
            )
        )
    except errors.ColdbrewError as exc:
        return from_exception(exc, {"x-request-id": request_id})
    response = outcome_response(outcome)
    if request.method == "HEAD":
        response.body = b""
    return response
