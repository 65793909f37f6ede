"""``/v1/keys`` (create, list, revoke, rotate API keys) and ``/v1/audit``: admin only.

A key's secret is in the response of create and rotate, and nowhere else, ever.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.gateway.auth import note_audit
from coldbrew.gateway.body import parse_json, read_body
from coldbrew.gateway.errors import json_response
from coldbrew.gateway.policy import Endpoint, admin
from coldbrew.security.audit import jsonable
from coldbrew.security.keyring import KeySpec
from coldbrew.security.service import Security

MAX_BODY = 64 * 1024
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _security(request: Request) -> Security:
    return request.app.state.platform.security


async def create_key(request: Request) -> Response:
    raw = await read_body(request, MAX_BODY)
    body = parse_json(raw) if raw else {}
    if not isinstance(body, dict):
        raise errors.ValidationError("expected a JSON object with at least 'role'")
    spec = KeySpec.from_json(body)
    row, token = await asyncio.to_thread(_security(request).keyring.create, spec)
    note_audit(request, target=f"key:{row['id']}", role=row["role"], functions=row["functions"])
    return json_response(201, {**row, "key": token})


async def list_keys(request: Request) -> Response:
    return json_response(200, {"keys": await asyncio.to_thread(_security(request).keyring.list)})


async def revoke_key(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    note_audit(request, target=f"key:{key_id}")
    row = await asyncio.to_thread(_security(request).keyring.revoke, key_id)
    return json_response(200, row)


async def rotate_key(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    note_audit(request, target=f"key:{key_id}")
    row, token = await asyncio.to_thread(_security(request).keyring.rotate, key_id)
    return json_response(200, {**row, "key": token})


def parse_since(text: str | None) -> datetime | None:
    """``24h``, ``30m``, ``7d`` or an ISO 8601 time."""
    if not text:
        return None
    found = _DURATION.match(text.strip())
    if found:
        try:
            return datetime.now(UTC) - timedelta(
                seconds=int(found.group(1)) * _UNITS[found.group(2)]
            )
        except (OverflowError, ValueError):  # 99999999999d: before any date there is
            raise errors.ValidationError(f"since is too long ago: {text[:40]!r}") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise errors.ValidationError(
            f"since must look like 24h, 30m, 7d or ISO 8601: {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def audit_log(request: Request) -> Response:
    query = request.query_params
    try:
        limit = min(int(query.get("limit") or 1000), 10_000)
    except ValueError:
        raise errors.ValidationError("limit must be a number") from None
    rows = await asyncio.to_thread(
        _security(request).store.audit_events,
        parse_since(query.get("since")),
        query.get("actor") or None,
        query.get("action") or None,
        limit,
    )
    return json_response(200, {"events": [jsonable(r) for r in rows]})


def endpoints() -> list[Endpoint]:
    return [
        Endpoint("/v1/keys", list_keys, "GET", admin()),
        Endpoint("/v1/keys", create_key, "POST", admin("key.create")),
        Endpoint("/v1/keys/{key_id}", revoke_key, "DELETE", admin("key.revoke")),
        Endpoint("/v1/keys/{key_id}/rotate", rotate_key, "POST", admin("key.rotate")),
        Endpoint("/v1/audit", audit_log, "GET", admin()),
    ]
