"""``/v1/functions``: deploy, list, inspect and delete functions; manage aliases.

A deploy is either ``multipart/form-data`` (fields ``name``, ``file`` and optional
``description``) or a raw body with ``?name=...&filename=...`` (``filename`` tells a bundle archive
from a bare model file, e.g. ``bundle.tar.gz`` or ``model.onnx``). ``model_only=true`` with a
model file keeps the current version's code and config and replaces only its model (``base``:
the qualifier to start from, default ``latest``); a bare model onto a function that runs its own
handler is refused (409 HANDLER_WOULD_BE_REPLACED) unless ``replace_handler=true``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.deploy.unpack import UnpackLimits, unpack_upload
from coldbrew.gateway.apigateway.admin import check_bundle_routes
from coldbrew.gateway.auth import current, note_audit
from coldbrew.gateway.errors import json_response
from coldbrew.gateway.native.uploads import Upload, receive_upload, truthy
from coldbrew.platform import Platform
from coldbrew.registry import names
from coldbrew.security.errors import Forbidden
from coldbrew.security.secrets import redact_config


def _platform(request: Request) -> Platform:
    return request.app.state.platform


def _jsonable(record: Any) -> dict[str, Any]:
    data = asdict(record)
    for key, value in data.items():
        if hasattr(value, "isoformat"):
            data[key] = value.isoformat()
    return data


def _version_json(record: Any, hidden: tuple[str, ...]) -> dict[str, Any]:
    """A version as the API shows it: credential-looking ``[environment]`` values redacted."""
    data = {k: v for k, v in _jsonable(record).items() if k not in hidden}
    if isinstance(data.get("config"), dict):
        data["config"] = redact_config(data["config"])
    return data


async def _receive_upload(request: Request, platform: Platform, workdir: Path) -> Upload:
    """Stream the upload to ``workdir`` (native/uploads.py): its fields and saved path."""
    upload = await receive_upload(request, platform.settings.max_bundle_bytes, workdir / "upload")
    if not upload.name:
        raise errors.ValidationError("deploy needs a function name ('name' field or ?name=)")
    return upload


async def deploy(request: Request) -> Response:
    platform = _platform(request)
    if "name" in request.query_params:  # a raw deploy's name: checked before its body is read
        names.check_function_name(request.query_params["name"])
    workdir = Path(tempfile.mkdtemp(prefix="deploy-", dir=platform.settings.run_dir))
    try:
        upload = await _receive_upload(request, platform, workdir)
        name, filename, saved = upload.name, upload.filename, upload.path
        description, trusted, options = upload.description, upload.trusted, upload.options
        names.check_function_name(name)  # before any unpacking or trial instance
        note_audit(request, target=name, filename=filename, trusted=trusted)
        if not current(request).sees(name):
            raise Forbidden(f"this key may not deploy functions named {name!r}")
        limits = UnpackLimits(
            platform.settings.max_unpacked_bytes, platform.settings.max_bundle_files
        )
        bundle, model_file = await asyncio.to_thread(
            unpack_upload, saved, filename, workdir / "bundle", limits
        )
        check_bundle_routes(current(request), bundle, model_file)  # greedy routes: admin only
        result = await platform.deployer.deploy(
            name,
            bundle,
            model_file,
            description,
            trusted,
            model_only=truthy(options.get("model_only")),
            replace_handler=truthy(options.get("replace_handler")),
            base=options.get("base") or None,
        )
        note_audit(request, version=result.version, content_sha256=result.content_sha256)
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    return json_response(201 if result.created else 200, result.to_dict())


async def list_functions(request: Request) -> Response:
    principal = current(request)
    functions = [
        f
        for f in await asyncio.to_thread(_platform(request).registry.list_functions)
        if principal.sees(f.name)
    ]
    return json_response(
        200,
        {"functions": [{**_jsonable(f), "latest_version": f.latest_version} for f in functions]},
    )


async def get_function(request: Request) -> Response:
    platform = _platform(request)
    name = request.path_params["name"]
    function = await asyncio.to_thread(platform.registry.get_function, name)
    versions = await asyncio.to_thread(platform.registry.list_versions, name)
    return json_response(
        200,
        {
            **_jsonable(function),
            "latest_version": function.latest_version,
            "versions": [_version_json(v, ("manifest", "function_name")) for v in versions],
            "pools": platform.scheduler.instances_of(name),
        },
    )


async def restart_function(request: Request) -> Response:
    """``POST /v1/functions/{name[:qualifier]}/restart``: drain and replace that version's
    instances and version template (for code that reads files at import)."""
    platform = _platform(request)
    name, _, qualifier = request.path_params["name"].partition(":")
    version = await platform.scheduler.resolve(name, qualifier or None)
    done = platform.scheduler.pool_for(version).restart()
    note_audit(request, version=version.number, **done)
    return json_response(200, {"function": name, "version": version.number, **done})


async def delete_function(request: Request) -> Response:
    platform = _platform(request)
    name = request.path_params["name"]
    await asyncio.to_thread(platform.registry.delete_function, name)
    await platform.scheduler.drop_function(name)
    if platform.collector:
        platform.collector.soon()  # its blobs and bundle, unless another version shares them
    return json_response(200, {"deleted": name})


async def list_versions(request: Request) -> Response:
    platform = _platform(request)
    versions = await asyncio.to_thread(platform.registry.list_versions, request.path_params["name"])
    return json_response(
        200,
        {"versions": [_version_json(v, ("function_name",)) for v in versions]},
    )


def alias_json(record: Any) -> dict[str, Any]:
    """An alias as JSON: weights keyed by version strings (JSON keys are strings)."""
    data = _jsonable(record)
    if data.get("weights"):
        data["weights"] = {str(v): w for v, w in data["weights"].items()}
    return data


async def list_aliases(request: Request) -> Response:
    platform = _platform(request)
    aliases = await asyncio.to_thread(platform.registry.list_aliases, request.path_params["name"])
    return json_response(200, {"aliases": [alias_json(a) for a in aliases]})


def parse_weights(raw: Any) -> dict[int, float] | None:
    """``{"2": 0.25}`` -> ``{2: 0.25}``; the registry checks the fractions themselves."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and names.DIGITS_RE.fullmatch(k) and len(k) <= 10 for k in raw
    ):
        raise errors.ValidationError('weights must map version numbers to fractions: {"2": 0.25}')
    return {int(k): v for k, v in raw.items()}


async def put_alias(request: Request) -> Response:
    """``{"version": 1, "weights": {"2": 0.25}, "sticky": "$.user.id"}``: weights and sticky
    are optional; leaving ``weights`` out sends all traffic to ``version``."""
    platform = _platform(request)
    name, alias = request.path_params["name"], request.path_params["alias"]
    try:
        body = await request.json()
        version = int(body["version"])
    except (ValueError, KeyError, TypeError, OverflowError):  # OverflowError: 1e999
        raise errors.ValidationError('alias body must be {"version": <number>}') from None
    weights = parse_weights(body.get("weights"))
    sticky = body.get("sticky")
    note_audit(request, alias=alias, version=version, weights=body.get("weights"), sticky=sticky)
    record = await asyncio.to_thread(
        platform.registry.set_alias, name, alias, version, weights, sticky
    )
    platform.scheduler.forget(name)
    await platform.scheduler.warm(name)
    return json_response(200, alias_json(record))


async def delete_alias(request: Request) -> Response:
    platform = _platform(request)
    name, alias = request.path_params["name"], request.path_params["alias"]
    await asyncio.to_thread(platform.registry.delete_alias, name, alias)
    platform.scheduler.forget(name)
    return json_response(200, {"deleted": alias})
