"""Lambda's event invoke config API, as boto3's ``put_function_event_invoke_config`` (and get,
update, delete, list) call it: ``/2019-09-25/functions/{FunctionName}/event-invoke-config``.

One config per function: a ``Qualifier`` is accepted and ignored (the config applies to every
version and alias of the function; docs/ASYNC.md). Destinations are ``function:NAME`` or a
Lambda function ARN, an ``http(s)://`` URL, or ``results``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.gateway.body import read_body
from coldbrew.gateway.lambda_api.functions import service_error
from coldbrew.gateway.outcomes import request_id_for
from coldbrew.gateway.policy import Endpoint, function
from coldbrew.gateway.targets import InvalidParameter, parse_function_name
from coldbrew.jobs.policy import EventInvokeConfig
from coldbrew.jobs.service import AsyncInvocations
from coldbrew.runtime.context import function_arn

PATH = "/2019-09-25/functions/{function}/event-invoke-config"
_FIELDS = {
    "MaximumRetryAttempts": "max_retry_attempts",
    "MaximumEventAgeInSeconds": "max_event_age_s",
}


def _jobs(request: Request) -> AsyncInvocations:
    return request.app.state.events  # type: ignore[no-any-return]


def _aws(status: int, body: Any, request_id: str) -> Response:
    content = b"" if body is None else orjson.dumps(body)
    return Response(
        content, status, {"x-amzn-RequestId": request_id}, media_type="application/json"
    )


def render(name: str, config: EventInvokeConfig, updated: datetime) -> dict[str, Any]:
    destinations: dict[str, Any] = {"OnSuccess": {}, "OnFailure": {}}
    if config.on_success:
        destinations["OnSuccess"] = {"Destination": config.on_success}
    if config.on_failure:
        destinations["OnFailure"] = {"Destination": config.on_failure}
    return {
        "LastModified": updated.timestamp(),
        "FunctionArn": function_arn(name, "$LATEST"),
        "MaximumRetryAttempts": config.retries,
        "MaximumEventAgeInSeconds": config.max_age_s,
        "DestinationConfig": destinations,
    }


def parse_changes(body: Any) -> dict[str, Any]:
    """The fields a Put/Update body sets, as ``EventInvokeConfig`` field names."""
    if not isinstance(body, dict):
        raise InvalidParameter("the request body must be a JSON object")
    changes: dict[str, Any] = {}
    for aws, ours in _FIELDS.items():
        if aws in body:
            changes[ours] = body[aws]
    if "DestinationConfig" in body:
        given = body["DestinationConfig"]
        if not isinstance(given, dict):
            raise InvalidParameter("DestinationConfig must be an object")
        for aws, ours in (("OnSuccess", "on_success"), ("OnFailure", "on_failure")):
            if aws in given:
                part = given[aws]
                destination = part.get("Destination") if isinstance(part, dict) else None
                if destination is not None and not isinstance(destination, str):
                    raise InvalidParameter(f"DestinationConfig.{aws}.Destination must be a string")
                changes[ours] = destination or None
    return changes


async def _target(request: Request) -> str:
    name, _qualifier = parse_function_name(
        request.path_params["function"], request.query_params.get("Qualifier")
    )
    await asyncio.to_thread(request.app.state.platform.registry.get_function, name)
    return name


async def _body(request: Request) -> Any:
    raw = await read_body(request, 64 * 1024)
    try:
        return orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        raise InvalidParameter("the request body is not valid JSON") from None


async def _write(request: Request, merge: bool) -> Response:
    request_id = request_id_for(request)
    try:
        name = await _target(request)
        changes = parse_changes(await _body(request))
        store = _jobs(request).configs
        base = EventInvokeConfig()
        if merge:
            found = await asyncio.to_thread(store.get, name)
            if found is None:
                raise errors.NotFound(f"function '{name}' has no event invoke config to update")
            base = found[0]
        try:
            config, updated = await asyncio.to_thread(store.put, name, base.merged(changes))
        except errors.ValidationError as exc:
            raise InvalidParameter(exc.message) from None
    except errors.ColdbrewError as exc:
        return service_error(exc, request_id)
    return _aws(200, render(name, config, updated), request_id)


async def put_config(request: Request) -> Response:
    """PutFunctionEventInvokeConfig: replaces the whole config (unset fields: defaults)."""
    return await _write(request, merge=False)


async def update_config(request: Request) -> Response:
    """UpdateFunctionEventInvokeConfig: changes only the given fields."""
    return await _write(request, merge=True)


async def get_config(request: Request) -> Response:
    request_id = request_id_for(request)
    try:
        name = await _target(request)
        found = await asyncio.to_thread(_jobs(request).configs.get, name)
        if found is None:
            raise errors.NotFound(f"The function {name} doesn't have an EventInvokeConfig")
    except errors.ColdbrewError as exc:
        return service_error(exc, request_id)
    return _aws(200, render(name, *found), request_id)


async def delete_config(request: Request) -> Response:
    request_id = request_id_for(request)
    try:
        name = await _target(request)
        await asyncio.to_thread(_jobs(request).configs.delete, name)
    except errors.ColdbrewError as exc:
        return service_error(exc, request_id)
    return _aws(204, None, request_id)


async def list_configs(request: Request) -> Response:
    request_id = request_id_for(request)
    try:
        name = await _target(request)
        found = await asyncio.to_thread(_jobs(request).configs.get, name)
    except errors.ColdbrewError as exc:
        return service_error(exc, request_id)
    configs = [render(name, *found)] if found else []
    return _aws(200, {"FunctionEventInvokeConfigs": configs}, request_id)


def endpoints() -> list[Endpoint]:
    return [
        Endpoint(PATH, put_config, "PUT", function("deploy", "async.config.set")),
        Endpoint(PATH, update_config, "POST", function("deploy", "async.config.set")),
        Endpoint(PATH, get_config, "GET", function("read")),
        Endpoint(PATH, delete_config, "DELETE", function("deploy", "async.config.delete")),
        Endpoint(f"{PATH}/list", list_configs, "GET", function("read")),
    ]
