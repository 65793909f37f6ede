"""Open Inference Protocol v2 (KServe v2 / Triton REST) endpoints for model functions.

Health and metadata answer from the registry; ``infer`` turns the input tensors into the
built-in model handler's ``{"instances": rows}`` event, invokes the function through the
scheduler like any other invocation (same limits, cold starts, metering), and turns the answer
back into tensors. Errors follow the protocol: ``{"error": "<message>"}`` with the status the
rest of the gateway would use for the same failure (400 bad tensors, 404 unknown model, 429
throttled with Retry-After, 5xx platform failures).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from coldbrew import __version__, errors
from coldbrew.core.outcome import Outcome
from coldbrew.dataplane import InvocationRequest
from coldbrew.dataplane.limits import limit_headers
from coldbrew.gateway.auth import current
from coldbrew.gateway.body import read_body
from coldbrew.gateway.errors import json_response
from coldbrew.gateway.oip.catalog import catalog_for
from coldbrew.gateway.oip.model import (
    event_for,
    outputs_from_result,
    rows_from_inputs,
    select_outputs,
)
from coldbrew.gateway.oip.protocol import (
    HEADER_LENGTH,
    InferRequest,
    decompress,
    encode_infer_response,
    parse_infer_request,
)
from coldbrew.gateway.outcomes import outcome_headers, request_id_for
from coldbrew.gateway.policy import OPEN, Endpoint, anyone, function
from coldbrew.platform import Platform

EXTENSIONS = ["binary_tensor_data"]


def oip_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


def from_exception(exc: errors.ColdbrewError, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if isinstance(exc, errors.Throttled):
        headers["Retry-After"] = str(exc.retry_after_s)
    decision = getattr(exc, "decision", None)
    if decision is not None:
        headers.update(limit_headers(decision))
    return oip_error(exc.status, exc.message, headers)


async def server_metadata(request: Request) -> Response:
    return json_response(
        200, {"name": "coldbrew", "version": __version__, "extensions": EXTENSIONS}
    )


async def server_live(request: Request) -> Response:
    return json_response(200, {"live": True})


async def server_ready(request: Request) -> Response:
    # Functions start on demand, so a running gateway is ready for every model it has.
    return json_response(200, {"ready": True})


async def model_metadata(request: Request) -> Response:
    catalog = catalog_for(request.app)
    try:
        version, function, _ = await catalog.resolve(
            request.path_params["name"], request.path_params.get("version")
        )
        signature = await catalog.signature(version)
        versions = await catalog.versions(function)
        platform = version.config.resolved_model_format()
    except errors.ColdbrewError as exc:
        return from_exception(exc)
    return json_response(
        200,
        {
            "name": function,
            "versions": versions,
            "platform": platform,
            "inputs": signature.inputs(),
            "outputs": signature.outputs,
        },
    )


async def model_ready(request: Request) -> Response:
    catalog = catalog_for(request.app)
    try:
        _, function, _ = await catalog.resolve(
            request.path_params["name"], request.path_params.get("version")
        )
    except errors.ColdbrewError as exc:
        return from_exception(exc)
    return json_response(200, {"name": function, "ready": True})


async def infer(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    request_id = request_id_for(request)
    limit = platform.settings.max_payload_bytes
    try:
        # Resolved here too: a function that is not a model is no v2 model at all (NOT_FOUND).
        _, function, qualifier = await catalog_for(request.app).resolve(
            request.path_params["name"], request.path_params.get("version")
        )
        body = decompress(
            await read_body(request, limit), request.headers.get("content-encoding"), limit
        )
        parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
        payload = event_for(rows_from_inputs(parsed.inputs))
        outcome = await platform.dataplane.invoke(
            InvocationRequest(
                function, payload, request_id, qualifier, current(request), protocol="oip"
            )
        )
    except errors.ColdbrewError as exc:
        return from_exception(exc, {"x-request-id": request_id})
    return render(outcome, parsed, function)


def render(outcome: Outcome, request: InferRequest, function: str) -> Response:
    """The v2 response for an invocation's outcome."""
    headers = outcome_headers(outcome)
    if outcome.error is not None:
        message = f"the handler raised {outcome.error.type}: {outcome.error.message}"
        return oip_error(errors.status_of(outcome.error.code), message, headers)
    result = orjson.loads(outcome.body)
    refused = _refusal(result)
    if refused is not None:
        return oip_error(refused[0], refused[1], headers)
    try:
        tensors = select_outputs(outputs_from_result(result), _wanted(request))
        header: dict[str, Any] = {"model_name": function, "model_version": str(outcome.version)}
        if request.id is not None:
            header["id"] = request.id
        body, header_length = encode_infer_response(header, tensors, request)
    except errors.ColdbrewError as exc:
        return from_exception(exc, headers)
    except ValueError as exc:
        return oip_error(500, f"the model answered something that is not a prediction: {exc}")
    if header_length is None:
        return Response(body, 200, headers, media_type="application/json")
    headers["Inference-Header-Content-Length"] = str(header_length)
    return Response(body, 200, headers, media_type="application/octet-stream")


def _wanted(request: InferRequest) -> list[str] | None:
    return None if request.outputs is None else [o.name for o in request.outputs]


def _refusal(result: Any) -> tuple[int, str] | None:
    """(status, message) when the handler answered with a non-2xx proxy response (the built-in
    handler's 400 for rows of the wrong width, say)."""
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
        return None
    status = result["statusCode"]
    if 200 <= status < 300:
        return None
    message = str(result.get("body", ""))
    try:
        body = orjson.loads(message)
        message = body["error"]["message"] if isinstance(body.get("error"), dict) else message
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        pass
    return status, message


def endpoints() -> list[Endpoint]:
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    return [
        Endpoint("/v2", server_metadata, "GET", anyone("read")),
        Endpoint("/v2/health/live", server_live, "GET", OPEN),
        Endpoint("/v2/health/ready", server_ready, "GET", OPEN),
        Endpoint(model, model_metadata, "GET", function("read")),
        Endpoint(f"{model}/ready", model_ready, "GET", function("read")),
        Endpoint(f"{model}/infer", infer, "POST", function("invoke")),
        Endpoint(versioned, model_metadata, "GET", function("read")),
        Endpoint(f"{versioned}/ready", model_ready, "GET", function("read")),
        Endpoint(f"{versioned}/infer", infer, "POST", function("invoke")),
    ]
