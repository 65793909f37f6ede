"""``/v1/functions``: deploy, list, inspect and delete functions; manage aliases.

A deploy is either ``multipart/form-data`` (fields ``name``, ``file`` and optional
``description``) or a raw body with ``?name=...&filename=...`` (``filename`` tells a bundle archive
from a bare model file, e.g. ``bundle.tar.gz`` or ``model.onnx``).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.deploy.unpack import unpack_upload
from coldbrew.gateway.auth import current, note_audit
from coldbrew.gateway.body import read_body
from coldbrew.gateway.errors import json_response
from coldbrew.platform import Platform
from coldbrew.security.errors import Forbidden


def _platform(request: Request) -> Platform:
    return request.app.state.platform


def _jsonable(record: Any) -> dict[str, Any]:
    data = asdict(record)
    for key, value in data.items():
        if hasattr(value, "isoformat"):
            data[key] = value.isoformat()
    return data


def _truthy(value: object) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


async def _receive_upload(
    request: Request, platform: Platform, workdir: Path
) -> tuple[str, str, Path, str, bool]:
    """Save the upload to ``workdir``; returns (name, filename, saved path, description,
    trusted)."""
    limit = platform.settings.max_bundle_bytes
    content_type = request.headers.get("content-type", "")
    saved = workdir / "upload"
    if content_type.startswith("multipart/form-data"):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise errors.PayloadTooLarge(f"upload is larger than {limit >> 20} MB")
        form = await request.form(max_files=1, max_fields=10)
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise errors.ValidationError("multipart deploy needs a 'file' part with a filename")
        with saved.open("wb") as out:
            await asyncio.to_thread(shutil.copyfileobj, upload.file, out)
        name = str(form.get("name") or "")
        filename, description = upload.filename, str(form.get("description") or "")
        trusted = _truthy(form.get("trusted"))
    else:
        name = request.query_params.get("name", "")
        filename = request.query_params.get("filename", "")
        description = request.query_params.get("description", "")
        trusted = _truthy(request.query_params.get("trusted"))
        if not filename:
            raise errors.ValidationError(
                "raw deploy needs ?filename= (e.g. bundle.tar.gz or model.onnx)"
            )
        saved.write_bytes(await read_body(request, limit))
    if not name:
        raise errors.ValidationError("deploy needs a function name ('name' field or ?name=)")
    return name, filename, saved, description, trusted


async def deploy(request: Request) -> Response:
    platform = _platform(request)
    workdir = Path(tempfile.mkdtemp(prefix="deploy-", dir=platform.settings.run_dir))
    try:
        name, filename, saved, description, trusted = await _receive_upload(
            request, platform, workdir
        )
        note_audit(request, target=name, filename=filename, trusted=trusted)
        if not current(request).sees(name):
            raise Forbidden(f"this key may not deploy functions named {name!r}")
        bundle, model_file = await asyncio.to_thread(
            unpack_upload, saved, filename, workdir / "bundle"
        )
        result = await platform.deployer.deploy(name, bundle, model_file, description, trusted)
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
            "versions": [
                {k: v for k, v in _jsonable(v).items() if k not in ("manifest", "function_name")}
                for v in versions
            ],
            "pools": platform.scheduler.instances_of(name),
        },
    )


async def delete_function(request: Request) -> Response:
    platform = _platform(request)
    name = request.path_params["name"]
    await asyncio.to_thread(platform.registry.delete_function, name)
    await platform.scheduler.drop_function(name)
    return json_response(200, {"deleted": name})


async def list_versions(request: Request) -> Response:
    platform = _platform(request)
    versions = await asyncio.to_thread(platform.registry.list_versions, request.path_params["name"])
    return json_response(
        200,
        {
            "versions": [
                {k: v for k, v in _jsonable(v).items() if k != "function_name"} for v in versions
            ]
        },
    )


async def list_aliases(request: Request) -> Response:
    platform = _platform(request)
    aliases = await asyncio.to_thread(platform.registry.list_aliases, request.path_params["name"])
    return json_response(200, {"aliases": [_jsonable(a) for a in aliases]})


async def put_alias(request: Request) -> Response:
    platform = _platform(request)
    name, alias = request.path_params["name"], request.path_params["alias"]
    try:
        body = await request.json()
        version = int(body["version"])
    except (ValueError, KeyError, TypeError):
        raise errors.ValidationError('alias body must be {"version": <number>}') from None
    note_audit(request, alias=alias, version=version)
    record = await asyncio.to_thread(platform.registry.set_alias, name, alias, version)
    platform.scheduler.forget(name)
    await platform.scheduler.warm(name)
    return json_response(200, _jsonable(record))


async def delete_alias(request: Request) -> Response:
    platform = _platform(request)
    name, alias = request.path_params["name"], request.path_params["alias"]
    await asyncio.to_thread(platform.registry.delete_alias, name, alias)
    platform.scheduler.forget(name)
    return json_response(200, {"deleted": alias})
