"""Lambda's alias and version API, as boto3's ``lambda`` client calls it.

``CreateAlias`` / ``UpdateAlias`` (with ``RoutingConfig.AdditionalVersionWeights``),
``GetAlias``, ``ListAliases``, ``DeleteAlias``, ``PublishVersion`` and
``ListVersionsByFunction`` under ``/2015-03-31/functions/{FunctionName}/...``. coldbrew
versions are immutable and every deploy makes one, so ``PublishVersion`` returns the version
``latest`` points at (as Lambda does when nothing changed since the last publish). The split
itself is applied by the data plane on every protocol (``coldbrew.dataplane.split``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.gateway.auth import note_audit
from coldbrew.gateway.lambda_api.functions import _aws_json, configuration, service_error
from coldbrew.gateway.outcomes import request_id_for
from coldbrew.gateway.policy import Endpoint, function
from coldbrew.gateway.targets import invalid_parameter, parse_function_name
from coldbrew.platform import Platform
from coldbrew.registry import names
from coldbrew.registry.records import AliasRecord
from coldbrew.runtime.config import FunctionConfig
from coldbrew.runtime.context import ARN_PREFIX
from coldbrew.scaling.pool import VersionInfo

BASE = "/2015-03-31/functions/{function}"
_CONFLICT = ("ResourceConflictException", 409)


def alias_configuration(record: AliasRecord) -> dict[str, Any]:
    config: dict[str, Any] = {
        "AliasArn": f"{ARN_PREFIX}{record.function_name}:{record.name}",
        "Name": record.name,
        "FunctionVersion": str(record.version),
        "Description": "",
        "RevisionId": str(int(record.updated_at.timestamp() * 1_000_000)),
    }
    if record.weights:
        config["RoutingConfig"] = {
            "AdditionalVersionWeights": {str(v): w for v, w in record.weights.items()}
        }
    return config


def _error(exc: errors.ColdbrewError, request_id: str) -> Response:
    if isinstance(exc, errors.Conflict):
        body = {"Type": "User", "message": exc.message}
        headers = {"x-amzn-ErrorType": _CONFLICT[0], "x-amzn-RequestId": request_id}
        return _aws_json(_CONFLICT[1], body, headers)
    return service_error(exc, request_id)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise errors.ValidationError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise errors.ValidationError("the request body must be a JSON object")
    return body


def _name(request: Request) -> str:
    return parse_function_name(request.path_params["function"], None)[0]


async def _version_number(platform: Platform, name: str, raw: Any) -> int:
    """``FunctionVersion``: digits, or ``$LATEST`` (the version ``latest`` points at)."""
    if raw == "$LATEST":
        return (await platform.scheduler.resolve(name, None)).number
    if not isinstance(raw, str) or not names.DIGITS_RE.fullmatch(raw) or len(raw) > 10:
        raise invalid_parameter(f"FunctionVersion must be a version number, not {raw!r}")
    return int(raw)


def _weights(body: dict[str, Any]) -> dict[int, float] | None:
    routing = body.get("RoutingConfig")
    if routing is None:
        return None
    weights = routing.get("AdditionalVersionWeights") if isinstance(routing, dict) else None
    if weights is None:
        return None
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and names.DIGITS_RE.fullmatch(k) and len(k) <= 10 for k in weights
    ):
        raise invalid_parameter("AdditionalVersionWeights must map version numbers to weights")
    return {int(k): v for k, v in weights.items()}


async def _set(platform: Platform, name: str, alias: str, version: int, weights: Any, **kw: Any):  # type: ignore[no-untyped-def]
    record = await asyncio.to_thread(
        platform.registry.set_alias, name, alias, version, weights, None, **kw
    )
    platform.scheduler.forget(name)
    await platform.scheduler.warm(name)
    return record


async def create_alias(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    request_id = request_id_for(request)
    try:
        name, body = _name(request), await _body(request)
        alias = body.get("Name")
        if not isinstance(alias, str):
            raise invalid_parameter("Name is required")
        version = await _version_number(platform, name, body.get("FunctionVersion"))
        weights = _weights(body)
        note_audit(request, alias=alias, version=version, weights=weights and str(weights))
        record = await _set(platform, name, alias, version, weights, create_only=True)
    except errors.ColdbrewError as exc:
        return _error(exc, request_id)
    return _aws_json(201, alias_configuration(record), {"x-amzn-RequestId": request_id})


async def update_alias(request: Request) -> Response:
    """Only what the body names changes: without ``FunctionVersion`` the alias keeps its
    version; without ``RoutingConfig`` its split (an empty map removes it)."""
    platform: Platform = request.app.state.platform
    request_id = request_id_for(request)
    try:
        name, alias, body = _name(request), request.path_params["alias"], await _body(request)
        current = await asyncio.to_thread(platform.registry.get_alias, name, alias)
        version = current.version
        if body.get("FunctionVersion") is not None:
            version = await _version_number(platform, name, body["FunctionVersion"])
        weights = current.weights if "RoutingConfig" not in body else _weights(body)
        if weights and version in weights:  # moved onto the version it was splitting to
            weights = {v: w for v, w in weights.items() if v != version} or None
        note_audit(request, alias=alias, version=version, weights=weights and str(weights))
        record = await asyncio.to_thread(
            platform.registry.set_alias, name, alias, version, weights, current.sticky
        )
        platform.scheduler.forget(name)
        await platform.scheduler.warm(name)
    except errors.ColdbrewError as exc:
        return _error(exc, request_id)
    return _aws_json(200, alias_configuration(record), {"x-amzn-RequestId": request_id})


async def get_alias(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    request_id = request_id_for(request)
    try:
        name, alias = _name(request), request.path_params["alias"]
        record = await asyncio.to_thread(platform.registry.get_alias, name, alias)
    except errors.ColdbrewError as exc:
        return _error(exc, request_id)
    return _aws_json(200, alias_configuration(record), {"x-amzn-RequestId": request_id})


def _page(request: Request, items: list[Any]) -> tuple[list[Any], str | None]:
    try:
        start = int(request.query_params.get("Marker") or 0)
        size = min(int(request.query_params.get("MaxItems") or 50), 10_000)
    except ValueError:
        raise invalid_parameter("Marker and MaxItems must be numbers") from None
    start, size = max(0, start), max(1, size)
    more = str(start + size) if start + size < len(items) else None
    return items[start : start + size], more


async def list_aliases(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    request_id = request_id_for(request)
    try:
        name = _name(request)
        aliases = await asyncio.to_thread(platform.registry.list_aliases, name)
        wanted = request.query_params.get("FunctionVersion")
        if wanted:
            aliases = [
                a
                for a in aliases
                if str(a.version) == wanted or str(wanted) in map(str, a.weights or {})
            ]
        page, more = _page(request, aliases)
    except errors.ColdbrewError as exc:
        return _error(exc, request_id)
    body: dict[str, Any] = {"Aliases": [alias_configuration(a) for a in page]}
    if more:
        body["NextMarker"] = more
    return _aws_json(200, body, {"x-amzn-RequestId": request_id})


async def delete_alias(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    request_id = request_id_for(request)
    try:
        name, alias = _name(request), request.path_params["alias"]
        await asyncio.to_thread(platform.registry.delete_alias, name, alias)
        platform.scheduler.forget(name)
    except errors.ColdbrewError as exc:
        return _error(exc, request_id)
    return Response(status_code=204, headers={"x-amzn-RequestId": request_id})


async def _configurations(platform: Platform, name: str) -> list[dict[str, Any]]:
    records = await asyncio.to_thread(platform.registry.list_versions, name)
    out = []
    for record in records:
        # Described from the registry alone: listing versions materialises no bundle.
        config = FunctionConfig.model_validate(record.config)
        info = VersionInfo(name, record.number, record.content_sha256, config, "")
        stamp = record.created_at.strftime("%Y-%m-%dT%H:%M:%S.") + (
            f"{record.created_at.microsecond // 1000:03d}+0000"
        )
        out.append(configuration(info, stamp))
    return out


async def publish_version(request: Request) -> Response:
    """Every deploy already published an immutable version: this returns the one ``latest``
    points at (``CodeSha256``, when given, must match it, as on Lambda)."""
    platform: Platform = request.app.state.platform
    request_id = request_id_for(request)
    try:
        name, body = _name(request), await _body(request)
        note_audit(request)
        latest = await platform.scheduler.resolve(name, None)
        configs = await _configurations(platform, name)
        config = next(c for c in configs if c["Version"] == str(latest.number))
        wanted = body.get("CodeSha256")
        if wanted and wanted != config["CodeSha256"]:
            raise invalid_parameter(
                f"CodeSha256 {wanted} does not match the latest version's ({config['CodeSha256']})"
            )
    except errors.ColdbrewError as exc:
        return _error(exc, request_id)
    return _aws_json(201, config, {"x-amzn-RequestId": request_id})


async def list_versions(request: Request) -> Response:
    """``$LATEST`` first, then every version ascending, as Lambda lists them."""
    platform: Platform = request.app.state.platform
    request_id = request_id_for(request)
    try:
        name = _name(request)
        configs = await _configurations(platform, name)
        latest = await platform.scheduler.resolve(name, None)
        head = next(c for c in configs if c["Version"] == str(latest.number))
        page, more = _page(request, [{**head, "Version": "$LATEST"}, *configs])
    except errors.ColdbrewError as exc:
        return _error(exc, request_id)
    body: dict[str, Any] = {"Versions": page}
    if more:
        body["NextMarker"] = more
    return _aws_json(200, body, {"x-amzn-RequestId": request_id})


def endpoints() -> list[Endpoint]:
    alias = f"{BASE}/aliases/{{alias}}"
    return [
        Endpoint(f"{BASE}/aliases", create_alias, "POST", function("deploy", "alias.create")),
        Endpoint(f"{BASE}/aliases", list_aliases, "GET", function("read")),
        Endpoint(alias, get_alias, "GET", function("read")),
        Endpoint(alias, update_alias, "PUT", function("deploy", "alias.set")),
        Endpoint(alias, delete_alias, "DELETE", function("deploy", "alias.delete")),
        Endpoint(
            f"{BASE}/versions", publish_version, "POST", function("deploy", "version.publish")
        ),
        Endpoint(f"{BASE}/versions", list_versions, "GET", function("read")),
    ]
