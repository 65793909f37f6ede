"""``POST /v1/functions/{name}/invoke``: the native synchronous invocation endpoint.

``name`` may carry a qualifier: ``digits:3`` (version 3) or ``digits:prod`` (alias prod).
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import orjson
from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.gateway.body import parse_json
from coldbrew.gateway.errors import error_response
from coldbrew.gateway.proxy import looks_like_proxy, proxy_response
from coldbrew.ids import new_request_id
from coldbrew.scaling.pool import VersionInfo
from coldbrew.scaling.scheduler import Outcome

REQUEST_ID_SHAPE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_validators: dict[str, jsonschema.protocols.Validator] = {}


def split_qualifier(target: str) -> tuple[str, str | None]:
    name, _, qualifier = target.partition(":")
    return name, (qualifier or None)


def request_id_from(given: str | None) -> str:
    """The caller's ``X-Request-Id`` when it is a sane one, else a fresh uuid4."""
    if given and REQUEST_ID_SHAPE.match(given):
        return given
    return new_request_id()


def request_id_for(request: Request) -> str:
    return request_id_from(request.headers.get("x-request-id"))


def parse_event(payload: bytes) -> Any:
    if not payload.strip():
        return {}
    return parse_json(payload)


def check_schema(version: VersionInfo, event: Any) -> None:
    schema = version.config.event_schema
    if schema is None:
        return
    validator = _validators.get(version.content_sha256)
    if validator is None:
        cls = jsonschema.validators.validator_for(schema)
        validator = _validators[version.content_sha256] = cls(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(event))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise errors.ValidationError(
            f"event does not match the function's schema at {where}: {error.message}", path=where
        )


def outcome_headers(outcome: Outcome) -> dict[str, str]:
    headers = {
        "x-request-id": outcome.request_id,
        "x-coldbrew-executed-version": str(outcome.version),
        "x-coldbrew-cold-start": "true" if outcome.cold_start else "false",
        "x-coldbrew-duration-ms": f"{outcome.duration_ms:.3f}",
        "x-coldbrew-billed-duration-ms": str(outcome.billed_duration_ms),
        "x-coldbrew-batch-size": str(outcome.batch_size),
        "x-coldbrew-queue-ms": f"{outcome.queue_ms:.3f}",
    }
    if outcome.start:
        headers["x-coldbrew-start-source"] = str(outcome.start["source"])
        headers["x-coldbrew-fork-ms"] = f"{outcome.start['fork_ms']:.3f}"
        headers["x-coldbrew-start-ms"] = f"{outcome.start['start_ms']:.3f}"
    if outcome.init_ms is not None:
        headers["x-coldbrew-init-duration-ms"] = f"{outcome.init_ms:.3f}"
    return headers


def render_outcome(outcome: Outcome) -> Response:
    headers = outcome_headers(outcome)
    if outcome.error is not None:
        error = outcome.error
        if error.code == "FUNCTION_ERROR":
            return error_response(
                "FUNCTION_ERROR",
                f"the handler raised {error.type}: {error.message}",
                headers=headers,
                errorType=error.type,
                errorMessage=error.message,
                stackTrace=error.stack,
                requestId=outcome.request_id,
            )
        return error_response(error.code, error.message, headers=headers)
    if looks_like_proxy(outcome.body):
        response = proxy_response(orjson.loads(outcome.body), headers)
        if response is not None:
            return response
    return Response(outcome.body, status_code=200, headers=headers, media_type="application/json")


async def invoke(request: Request) -> Response:
    """Never reached for POST: ``gateway.fastpath.InvokeFastPath`` answers invocations before
    routing. The route exists so that other methods on the path get 405 like any route."""
    raise RuntimeError("InvokeFastPath answers POST /v1/functions/{name}/invoke")
