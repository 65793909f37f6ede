"""``/v1/routes``: list, add and delete the API Gateway routes that mount functions.

A deployer may mount its own functions on ordinary routes. Two kinds of route reach past the
function's own paths, so they need the admin role: a greedy or catch-all route (it takes
every path under it, mistyped ones included) and one with ``forward_credentials`` (the
caller's coldbrew key then reaches the function's code)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.gateway.apigateway.handler import router_for
from coldbrew.gateway.auth import current, note_audit, require_function
from coldbrew.gateway.body import parse_json, read_body
from coldbrew.gateway.errors import json_response
from coldbrew.gateway.targets import split_qualifier
from coldbrew.registry.routes import is_catch_all, parse_declared_route
from coldbrew.runtime.config import load_config
from coldbrew.security.errors import Forbidden
from coldbrew.security.principal import Principal

MAX_BODY = 64 * 1024


async def list_routes(request: Request) -> Response:
    principal = current(request)
    routes = await asyncio.to_thread(router_for(request).table.list)
    shown = [r.to_json() for r in routes if principal.sees(r.function_name)]
    return json_response(200, {"routes": shown})


def require_route_rights(principal: Principal, route: str, forward_credentials: bool) -> None:
    """FORBIDDEN unless the caller may add this kind of route (see the module docstring)."""
    if principal.can("admin"):
        return
    if is_catch_all(route.strip().partition(" ")[2] or route):
        raise Forbidden(
            f"route '{route}' is greedy (it takes every path under it); only an admin may add "
            "a greedy or catch-all route"
        )
    if forward_credentials:
        raise Forbidden("only an admin may add a route with forward_credentials")


def check_bundle_routes(principal: Principal, bundle: Path, model_file: str | None) -> None:
    """The same rule for the routes a bundle declares (``routes = [...]``), before deploying."""
    if model_file or principal.can("admin"):
        return  # a bare model file declares no routes
    for spec in load_config(bundle).routes:
        method, path, _ = parse_declared_route(spec)
        require_route_rights(principal, f"{method} {path}", False)


async def add_route(request: Request) -> Response:
    """``{"route": "GET /items/{id}", "function": "name[:qualifier]", "payload_format": "2.0",
    "stage": "$default", "forward_credentials": false}`` -> 201 with the route."""
    raw = await read_body(request, MAX_BODY)
    body = parse_json(raw) if raw else None
    if not isinstance(body, dict):
        raise errors.ValidationError("expected a JSON object with 'route' and 'function'")
    route, target = body.get("route"), body.get("function")
    if not isinstance(route, str) or not isinstance(target, str):
        raise errors.ValidationError("'route' and 'function' are required strings")
    payload_format = str(body.get("payload_format") or "2.0")
    stage = str(body.get("stage") or "$default")
    forward = body.get("forward_credentials", False)
    if not isinstance(forward, bool):
        raise errors.ValidationError("'forward_credentials' must be true or false")
    name, qualifier = split_qualifier(target)
    note_audit(request, target=name, route=route, forward_credentials=forward)
    require_function(request, name, "deploy")
    require_route_rights(current(request), route, forward)
    router = router_for(request)
    record = await asyncio.to_thread(
        router.table.add, route, name, qualifier, payload_format, stage, forward
    )
    router.invalidate()
    return json_response(201, record.to_json())


async def delete_route(request: Request) -> Response:
    raw = request.path_params["route_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:  # not "²", fits SQLite
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
