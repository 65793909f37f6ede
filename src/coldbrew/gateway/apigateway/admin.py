"""``/v1/routes``: list, add and delete the API Gateway routes that mount functions."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.gateway.apigateway.handler import router_for
from coldbrew.gateway.auth import current, note_audit, require_function
from coldbrew.gateway.body import parse_json, read_body
from coldbrew.gateway.errors import json_response
from coldbrew.gateway.invoke import split_qualifier

MAX_BODY = 64 * 1024


async def list_routes(request: Request) -> Response:
    principal = current(request)
    routes = await asyncio.to_thread(router_for(request).table.list)
    shown = [r.to_json() for r in routes if principal.sees(r.function_name)]
    return json_response(200, {"routes": shown})


async def add_route(request: Request) -> Response:
    """``{"route": "GET /items/{id}", "function": "name[:qualifier]", "payload_format": "2.0",
    "stage": "$default"}`` -> 201 with the route."""
    raw = await read_body(request, MAX_BODY)
    body = parse_json(raw) if raw else None
    if not isinstance(body, dict):
        raise errors.ValidationError("expected a JSON object with 'route' and 'function'")
    route, target = body.get("route"), body.get("function")
    if not isinstance(route, str) or not isinstance(target, str):
        raise errors.ValidationError("'route' and 'function' are required strings")
    payload_format = str(body.get("payload_format") or "2.0")
    stage = str(body.get("stage") or "$default")
    name, qualifier = split_qualifier(target)
    note_audit(request, target=name, route=route)
    require_function(request, name, "deploy")
    router = router_for(request)
    record = await asyncio.to_thread(
        router.table.add, route, name, qualifier, payload_format, stage
    )
    router.invalidate()
    return json_response(201, record.to_json())


async def delete_route(request: Request) -> Response:
    raw = request.path_params["route_id"]
    if not raw.isdigit():
        raise errors.NotFound(f"no route with id {raw}")
    router = router_for(request)
    routes = await asyncio.to_thread(router.table.list)
    found = next((r for r in routes if r.id == int(raw)), None)
    if found is None or not current(request).sees(found.function_name):
        raise errors.NotFound(f"no route with id {raw}")
    note_audit(request, target=found.function_name, route=found.route_key)
    await asyncio.to_thread(router.table.delete, int(raw))
    router.invalidate()
    return json_response(200, {"deleted": int(raw)})
