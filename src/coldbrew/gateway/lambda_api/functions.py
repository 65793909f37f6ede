"""The AWS Lambda Invoke API, as ``boto3.client("lambda", endpoint_url=...)`` calls it.

``POST /2015-03-31/functions/{FunctionName}/invocations`` (Invoke), ``GET
/2015-03-31/functions/{FunctionName}`` (GetFunction) and ``GET /2015-03-31/functions/``
(ListFunctions). Code written against Lambda points its client at coldbrew and changes nothing
else: same headers, same status codes, and service errors in the rest-json shape botocore
parses into ``ClientError.response["Error"]["Code"]`` (it reads ``x-amzn-ErrorType``).

Requests arrive SigV4-signed. With auth on, the whole coldbrew API key is the access key id
(``aws_access_key_id="cb_..."``, any secret access key): the security middleware checks it as
it checks a bearer token; the signature itself is not verified (see docs/SECURITY.md). Bodies
carry no Content-Type.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.core.outcome import Outcome
from coldbrew.dataplane import InvocationRequest
from coldbrew.dataplane.limits import limit_headers
from coldbrew.dataplane.schema import parse_event
from coldbrew.gateway.auth import current
from coldbrew.gateway.body import read_body
from coldbrew.gateway.errors import AWS_ERROR_TYPES
from coldbrew.gateway.outcomes import request_id_for
from coldbrew.gateway.targets import InvalidParameter, invalid_parameter, parse_function_name
from coldbrew.jobs.service import AsyncInvocations
from coldbrew.platform import Platform
from coldbrew.runtime.context import ARN_PREFIX
from coldbrew.scaling.pool import VersionInfo
from coldbrew.security.secrets import redact_environment

ASYNC_MAX_BYTES = 256 * 1024
"""Lambda's limit on an Event (async) payload."""
LOG_TAIL_BYTES = 4096
# Lambda reports these as function errors of the invocation (200 + Unhandled), not as
# service errors: the function ran and failed.
_SANDBOX_ERRORS: dict[str, str] = {
    "TIMEOUT": "Sandbox.Timedout",
    "OUT_OF_MEMORY": "Runtime.OutOfMemory",
    "INSTANCE_CRASHED": "Runtime.ExitError",
}


# --- request parsing ----------------------------------------------------------------------------
def decode_client_context(header: str | None) -> dict[str, Any] | None:
    if not header:
        return None
    try:
        value = orjson.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise errors.ValidationError(
            "Client context must be a valid Base64-encoded JSON object."
        ) from None
    if not isinstance(value, dict):
        raise errors.ValidationError("Client context must be a valid Base64-encoded JSON object.")
    return value


# --- responses ----------------------------------------------------------------------------------
def _aws_json(status: int, body: Any, headers: dict[str, str]) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def service_error(exc: errors.ColdbrewError, request_id: str) -> Response:
    """A Lambda service error: ``x-amzn-ErrorType`` names it, the body is AWS's shape."""
    error_type = AWS_ERROR_TYPES.get(exc.code)
    # An error Lambda has no name for is its ServiceException, a 500, whatever its status.
    status = exc.status if error_type else 500
    error_type = error_type or "ServiceException"
    if isinstance(exc, InvalidParameter):
        error_type = "InvalidParameterValueException"
    body: dict[str, Any] = {"Type": "User" if status < 500 else "Service", "message": exc.message}
    headers = {"x-amzn-ErrorType": error_type, "x-amzn-RequestId": request_id}
    if isinstance(exc, errors.Throttled):
        headers["Retry-After"] = str(exc.retry_after_s)
        body["retryAfterSeconds"] = str(exc.retry_after_s)
        body["Reason"] = "ReservedFunctionConcurrentInvocationLimitExceeded"
    return _aws_json(status, body, headers)


def log_tail(logs: str | None) -> str:
    """The last 4 KB of an invocation's log, base64, cut on a character boundary."""
    raw = (logs or "").encode()[-LOG_TAIL_BYTES:]
    text = raw.decode("utf-8", errors="ignore")
    return base64.b64encode(text.encode()).decode()


def invoke_response(outcome: Outcome, tail: bool) -> Response:
    headers = {
        "x-amzn-RequestId": outcome.request_id,
        "X-Amz-Executed-Version": str(outcome.version),
    }
    if outcome.limits is not None:
        headers.update(limit_headers(outcome.limits))
    if tail:
        headers["X-Amz-Log-Result"] = log_tail(outcome.logs)
    if outcome.error is None:
        return Response(outcome.body, 200, headers, media_type="application/json")
    headers["X-Amz-Function-Error"] = "Unhandled"
    body = {
        "errorMessage": outcome.error.message,
        "errorType": outcome.error.type,
        "requestId": outcome.request_id,
        "stackTrace": list(outcome.error.stack),
    }
    return _aws_json(200, body, headers)


_INIT_ERROR_TYPES = {
    "import": "Runtime.ImportModuleError",
    "load": "Runtime.ImportModuleError",
    "memory": "Runtime.OutOfMemory",
    "crash": "Runtime.ExitError",
}


def init_error(exc: errors.InitError, version: VersionInfo | None, request_id: str) -> Response:
    """The function could not initialise: Lambda answers the invocation itself (200 with
    ``X-Amz-Function-Error: Unhandled``) with the runtime's error, as its Python runtime
    words it (``Runtime.ImportModuleError``, "Unable to import module 'handler': ...")."""
    cause = exc.error_message
    if exc.error_type not in ("ImportError", "ModuleNotFoundError"):
        cause = f"{exc.error_type}: {cause}"  # Lambda says only str(e); the type helps
    if exc.kind == "import":
        message = f"Unable to import module '{exc.module}': {cause}"
    elif exc.kind == "load":  # the model, which coldbrew loads for the handler
        message = f"Unable to load the function's model: {exc.error_message}"
    else:
        message = f"RequestId: {request_id} Error: {exc.error_message}"
    headers = {
        "x-amzn-RequestId": request_id,
        "X-Amz-Function-Error": "Unhandled",
        "Retry-After": str(exc.retry_after_s),
    }
    if version is not None:
        headers["X-Amz-Executed-Version"] = str(version.number)
    body = {
        "errorMessage": message,
        "errorType": _INIT_ERROR_TYPES.get(exc.kind, "Runtime.ImportModuleError"),
        "requestId": request_id,
        "stackTrace": [],
    }
    return _aws_json(200, body, headers)


def sandbox_error(exc: errors.ColdbrewError, version: VersionInfo, request_id: str) -> Response:
    headers = {
        "x-amzn-RequestId": request_id,
        "X-Amz-Executed-Version": str(version.number),
        "X-Amz-Function-Error": "Unhandled",
    }
    body = {
        "errorMessage": f"RequestId: {request_id} Error: {exc.message}",
        "errorType": _SANDBOX_ERRORS[exc.code],
        "requestId": request_id,
        "stackTrace": [],
    }
    return _aws_json(200, body, headers)


# --- endpoints ----------------------------------------------------------------------------------
async def invoke(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    request_id = request_id_for(request)
    kind = request.headers.get("x-amz-invocation-type", "RequestResponse")
    version: VersionInfo | None = None
    try:
        if kind not in ("RequestResponse", "Event", "DryRun"):
            raise invalid_parameter(f"unknown X-Amz-Invocation-Type '{kind}'")
        name, qualifier = parse_function_name(
            request.path_params["function"], request.query_params.get("Qualifier")
        )
        client_context = decode_client_context(request.headers.get("x-amz-client-context"))
        limit = ASYNC_MAX_BYTES if kind == "Event" else platform.settings.max_payload_bytes
        payload = await read_body(request, limit)
        call = InvocationRequest(
            name,
            payload,
            request_id,
            qualifier,
            current(request),
            protocol="lambda",
            kind="async" if kind == "Event" else "sync",
            client_context=client_context,
            want_logs=request.headers.get("x-amz-log-type") == "Tail",
            event=parse_event(payload),
            sticky_key=request.headers.get("x-coldbrew-sticky-key"),
        )
        if kind == "Event":  # admitted (limits charged once) and committed to the durable queue
            jobs: AsyncInvocations = request.app.state.events
            key = request.headers.get("x-coldbrew-idempotency-key")
            first, _created = await jobs.accept(call, key)
            return Response(status_code=202, headers={"x-amzn-RequestId": first})
        admitted = await platform.dataplane.admit(call)
        version = admitted.version
        if kind == "DryRun":
            return Response(status_code=204, headers={"x-amzn-RequestId": request_id})
        outcome = await platform.dataplane.run(call, admitted)
    except errors.ColdbrewError as exc:
        if isinstance(exc, errors.InitError):
            return init_error(exc, version, request_id)
        if version is not None and exc.code in _SANDBOX_ERRORS:
            return sandbox_error(exc, version, request_id)
        return service_error(exc, request_id)
    return invoke_response(outcome, call.want_logs)


def configuration(version: VersionInfo, last_modified: str) -> dict[str, Any]:
    """GetFunction's ``Configuration`` block for one version."""
    config = version.config
    return {
        "FunctionName": version.function_name,
        "FunctionArn": f"{ARN_PREFIX}{version.function_name}",
        "Runtime": "python3.11",
        "Role": "arn:aws:iam::000000000000:role/coldbrew",
        "Handler": config.handler,
        "CodeSize": 0,
        "Description": config.description,
        "Timeout": max(1, round(config.timeout_s)),
        "MemorySize": config.memory_mb,
        "LastModified": last_modified,
        # Lambda's CodeSha256 is the base64 of the digest; coldbrew's hex digest, re-encoded.
        "CodeSha256": base64.b64encode(bytes.fromhex(version.content_sha256)).decode(),
        "Version": str(version.number),
        # Secret-derived variables are not in the config at all; plain ones whose names look
        # like credentials are shown redacted (docs/DATA.md).
        "Environment": {"Variables": redact_environment(config.environment)},
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
    }


async def _describe(platform: Platform, name: str, qualifier: str | None) -> dict[str, Any]:
    version = await platform.scheduler.resolve(name, qualifier)
    record = await asyncio.to_thread(platform.registry.get_version, name, version.number)
    stamp = record.created_at.strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{record.created_at.microsecond // 1000:03d}+0000"
    )
    return configuration(version, stamp)


async def get_function(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    request_id = request_id_for(request)
    try:
        name, qualifier = parse_function_name(
            request.path_params["function"], request.query_params.get("Qualifier")
        )
        config = await _describe(platform, name, qualifier)
    except errors.ColdbrewError as exc:
        return service_error(exc, request_id)
    body = {
        "Configuration": config,
        "Code": {"RepositoryType": "coldbrew", "Location": f"/v1/functions/{name}"},
    }
    return _aws_json(200, body, {"x-amzn-RequestId": request_id})


async def list_functions(request: Request) -> Response:
    """ListFunctions, paginated by ``Marker`` (an offset) and ``MaxItems`` (default 50)."""
    platform: Platform = request.app.state.platform
    request_id = request_id_for(request)
    try:
        start = int(request.query_params.get("Marker") or 0)
        size = min(int(request.query_params.get("MaxItems") or 50), 10_000)
    except ValueError:
        return service_error(invalid_parameter("Marker and MaxItems must be numbers"), request_id)
    principal = current(request)
    functions = [
        f
        for f in await asyncio.to_thread(platform.registry.list_functions)
        if principal.sees(f.name)
    ]
    page = functions[start : start + size]
    configs = []
    for function in page:
        try:
            configs.append(await _describe(platform, function.name, None))
        except errors.NotFound:
            continue  # deleted meanwhile, or no version yet
    body: dict[str, Any] = {"Functions": configs}
    if start + size < len(functions):
        body["NextMarker"] = str(start + size)
    return _aws_json(200, body, {"x-amzn-RequestId": request_id})
