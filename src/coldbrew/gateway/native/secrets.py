"""``/v1/secrets``: set (and rotate), list and remove secrets; admin only (docs/DATA.md).

``PUT /v1/secrets/{name}`` takes the value as the raw request body; no answer, listing, audit
event or log line ever carries it back. Setting an existing secret is a rotation: every running
version of this gateway whose ``[secrets]`` names it drops its warm instances and its version
template (``Pool.restart``), so the next instances start with the new value.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from coldbrew.gateway.auth import note_audit
from coldbrew.gateway.body import read_body
from coldbrew.gateway.errors import json_response
from coldbrew.gateway.policy import Endpoint, admin
from coldbrew.security.audit import jsonable
from coldbrew.security.secrets import MAX_VALUE_BYTES, Secrets, check_name


def _secrets(request: Request) -> Secrets:
    return request.app.state.platform.secrets


async def set_secret(request: Request) -> Response:
    name = check_name(request.path_params["name"])
    note_audit(request, target=f"secret:{name}")
    value = await read_body(request, MAX_VALUE_BYTES)
    done = await asyncio.to_thread(_secrets(request).set, name, value)
    restarted = _restart_users(request, name)
    note_audit(request, generation=done["generation"], restarted=restarted)
    return json_response(200, {**done, "restarted": restarted})


def _restart_users(request: Request, name: str) -> list[str]:
    """Replace the instances of every live version that reads this secret."""
    restarted = []
    for pool in list(request.app.state.platform.scheduler.pools.values()):
        if name in pool.config.secrets.values() and not pool.closed:
            pool.restart()
            restarted.append(pool.version.key)
    return sorted(restarted)


async def list_secrets(request: Request) -> Response:
    rows = await asyncio.to_thread(_secrets(request).list)
    return json_response(200, {"secrets": [jsonable(row) for row in rows]})


async def delete_secret(request: Request) -> Response:
    name = check_name(request.path_params["name"])
    note_audit(request, target=f"secret:{name}")
    await asyncio.to_thread(_secrets(request).remove, name)
    return json_response(200, {"deleted": name})


def endpoints() -> list[Endpoint]:
    return [
        Endpoint("/v1/secrets", list_secrets, "GET", admin()),
        Endpoint("/v1/secrets/{name}", set_secret, "PUT", admin("secret.set")),
        Endpoint("/v1/secrets/{name}", delete_secret, "DELETE", admin("secret.delete")),
    ]
