"""``GET /openapi.json``: an OpenAPI 3.1 document of coldbrew's own REST API.

The paths, methods and path parameters come from the app's own route table (so a route cannot
be served without being listed); what a route takes and answers comes from ``OPERATIONS``, an
explicit table kept next to nothing else, so the schema is read in one place rather than
scattered over docstrings. ``tests/reliability/test_openapi_fuzz.py`` checks both directions
(every served route is in the document, every row of the table is a served route) and runs
schemathesis against the document of a live server.

Left out on purpose (``EXCLUDED``): WebSocket routes (``/ws/{name}``, ``/stream/{name}``; not
HTTP operations, see docs/WEBSOCKET.md) and the API Gateway catch-all ``/{path}``, whose paths
are the routes users add. The AWS Lambda API (``/2015-03-31``, ``/2019-09-25``) and the Open
Inference Protocol v2 (``/v2``) are listed with their path parameters only: their bodies are
AWS's and KServe's specifications (``FOREIGN``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.convertors import FloatConvertor, IntegerConvertor, UUIDConvertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from coldbrew import __version__
from coldbrew.gateway.errors import json_response

CATCH_ALL = "/{path}"
EXCLUDED = {
    "websocket": "WebSocket routes are not HTTP operations: see docs/WEBSOCKET.md",
    CATCH_ALL: "the API Gateway catch-all serves the routes users add (GET /v1/routes)",
}
FOREIGN: dict[str, tuple[str, str, str]] = {
    "/2015-03-31": (
        "lambda",
        "https://docs.aws.amazon.com/lambda/latest/api/",
        "AWS Lambda Invoke API (Invoke, GetFunction, ListFunctions) as AWS documents it; "
        "see docs/LAMBDA.md",
    ),
    "/2019-09-25": (
        "lambda",
        "https://docs.aws.amazon.com/lambda/latest/api/",
        "AWS Lambda event invoke configuration as AWS documents it; see docs/LAMBDA.md",
    ),
    "/v2": (
        "open-inference-v2",
        "https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/",
        "Open Inference Protocol v2 as KServe specifies it; see docs/OPEN_INFERENCE.md",
    ),
}

_FUNCTION_NAME = {"type": "string", "minLength": 1, "maxLength": 64}
_TARGET = {
    "type": "string",
    "minLength": 1,
    "description": "a function name, optionally with a qualifier: `name:3` (version 3) or "
    "`name:prod` (alias prod)",
}
_ALIAS = {"type": "string", "minLength": 1, "maxLength": 64}
_ANY_JSON: dict[str, Any] = {}
_OBJECT: dict[str, Any] = {"type": "object"}
_BATCH_FORMATS = ["csv", "jsonl", "parquet"]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable, machine-readable"},
                "message": {"type": "string", "description": "for people"},
            },
            "additionalProperties": True,
        }
    },
}
ERRORS: dict[int, str] = {
    400: "VALIDATION_ERROR: the request is malformed or breaks a rule",
    401: "UNAUTHORIZED: credentials missing or invalid (auth on)",
    403: "FORBIDDEN: the key's role may not do this",
    404: "NOT_FOUND: no such function, version, alias, route or key (or not in the key's scope)",
    405: "METHOD_NOT_ALLOWED",
    408: "the request was not sent in time (COLDBREW_HEADER_TIMEOUT_S / BODY_TIMEOUT_S)",
    409: "CONFLICT, ROUTE_RESERVED or HANDLER_WOULD_BE_REPLACED",
    413: "PAYLOAD_TOO_LARGE or BUNDLE_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "DEPLOY_ERROR, MODEL_LOAD_ERROR or UNTRUSTED_ARTIFACT: the bundle was refused",
    429: "THROTTLED, RATE_LIMITED or QUOTA_EXCEEDED (see Retry-After)",
    431: "too many or too large request headers",
    500: "FUNCTION_ERROR: the handler raised (its type, message and stack trace)",
    502: "INSTANCE_CRASHED, OUT_OF_MEMORY or INIT_ERROR: the instance died or cannot start",
    504: "TIMEOUT: the handler ran past timeout_s",
}
COMMON = (401, 403, 429)
"""What any authenticated endpoint may answer (missing key, wrong role, rate limit)."""


@dataclass(frozen=True)
class Op:
    """What one operation takes and answers, beyond its path."""

    summary: str
    ok: int = 200
    ok_schema: dict[str, Any] = field(default_factory=lambda: dict(_OBJECT))
    errors: tuple[int, ...] = ()
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    """``{media type: schema}``; None when the operation reads no body."""
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Schemas of path parameters, by name (else a plain string)."""
    open: bool = False


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": schema}


_BOOL_TEXT = {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]}
_DEPLOY_FIELDS = {
    "name": {**_FUNCTION_NAME, "description": "function name (1-64 letters, digits, - or _)"},
    "description": {"type": "string"},
    "trusted": {**_BOOL_TEXT, "description": "allow pickle-based models (joblib)"},
    "model_only": {**_BOOL_TEXT, "description": "replace only the model of version `base`"},
    "replace_handler": {**_BOOL_TEXT, "description": "a bare model may replace a handler"},
    "base": {"type": "string", "description": "qualifier model_only starts from"},
}
_DEPLOY_MULTIPART = {
    "type": "object",
    "required": ["name", "file"],
    "properties": {
        **_DEPLOY_FIELDS,
        "file": {
            "type": "string",
            "format": "binary",
            "description": "a bundle (.tar.gz, .zip) or a bare model file (.onnx, .joblib ...)",
        },
    },
}
_DEPLOY_QUERY = {
    **{key: value for key, value in _DEPLOY_FIELDS.items() if key != "name"},
    "name": {**_DEPLOY_FIELDS["name"], "description": "function name (raw deploy)"},
    "filename": {
        "type": "string",
        "description": "raw deploy: tells a bundle from a bare model (bundle.tar.gz, model.onnx)",
    },
}
_DEPLOY_RESULT = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "integer"},
        "content_sha256": {"type": "string"},
    },
}
_ROUTE_BODY = {
    "type": "object",
    "required": ["route", "function"],
    "properties": {
        "route": {"type": "string", "description": "`GET /items/{id}`, `ANY /{proxy+}` (admin)"},
        "function": {**_TARGET},
        "payload_format": {"type": "string", "enum": ["1.0", "2.0"]},
        "stage": {"type": "string"},
        "forward_credentials": {"type": "boolean", "description": "admin only"},
    },
}
_KEY_BODY = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["admin", "deployer", "invoker", "viewer"]},
        "functions": {
            "description": "names or patterns the key may reach: `*`, `alpha,beta`, [..]",
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        },
        "name": {"type": "string"},
        "rate_per_s": {"type": "number", "exclusiveMinimum": 0},
        "burst": {"type": "integer", "minimum": 0},
        "daily_quota": {"type": "integer", "minimum": 0},
        "monthly_quota": {"type": "integer", "minimum": 0},
        "ip_allowlist": {
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
        },
    },
}
_STR = {"type": "string"}
_LIMIT = {"limit": {"type": "integer", "minimum": 1, "maximum": 1000}}
_TIME = {"type": "string", "description": "a duration before now (30s, 10m, 24h, 7d) or ISO 8601"}
_INVOKE_ERRORS = (400, 404, 413, 429, 500, 502, 504)

OPERATIONS: dict[tuple[str, str], Op] = {
    ("GET", "/healthz"): Op("Liveness: the gateway answers", open=True),
    ("GET", "/openapi.json"): Op("This document", open=True),
    ("GET", "/v1/info"): Op("What this coldbrew is: version, backend, isolation, memory"),
    ("GET", "/v1/nodes"): Op("Nodes and their gateways: pid, uptime, instances, templates"),
    ("GET", "/v1/functions"): Op("Functions the caller's key can see"),
    ("POST", "/v1/functions"): Op(
        "Deploy a function: multipart (name + file) or a raw body (?name=&filename=); "
        "201 for a new version, 200 when the content is unchanged",
        ok=201,
        ok_schema=_DEPLOY_RESULT,
        errors=(400, 409, 413, 415, 422),
        query=_DEPLOY_QUERY,
        body={
            "multipart/form-data": _DEPLOY_MULTIPART,
            "application/octet-stream": {"type": "string", "format": "binary"},
        },
    ),
    ("GET", "/v1/functions/{name}"): Op(
        "A function, its versions and its live pools", errors=(404,), params={"name": _TARGET}
    ),
    ("DELETE", "/v1/functions/{name}"): Op(
        "Delete a function, its versions, aliases and instances", errors=(404,)
    ),
    ("POST", "/v1/functions/{name}/restart"): Op(
        "Replace a version's instances and version template",
        errors=(404,),
        params={"name": _TARGET},
    ),
    ("GET", "/v1/functions/{name}/versions"): Op("A function's versions", errors=(404,)),
    ("GET", "/v1/functions/{name}/aliases"): Op("A function's aliases", errors=(404,)),
    ("PUT", "/v1/functions/{name}/aliases/{alias}"): Op(
        "Point an alias at a version",
        errors=(400, 404, 409),
        body=_json(
            {
                "type": "object",
                "required": ["version"],
                "properties": {
                    "version": {"type": "integer", "minimum": 1},
                    "weights": {
                        "type": "object",
                        "description": "other versions' shares, e.g. 2: 0.25 (docs/DELIVERY.md)",
                        "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                    "sticky": {"type": "string", "description": "JSON path: $.user.id"},
                },
            }
        ),
        params={"alias": _ALIAS},
    ),
    ("POST", "/v1/functions/{name}/rollout"): Op(
        "Start a rollout of an alias to a candidate version (docs/DELIVERY.md)",
        ok=201,
        errors=(400, 404, 409),
        body=_json(
            {
                "type": "object",
                "required": ["to"],
                "properties": {
                    "to": {"type": "integer", "minimum": 1},
                    "from": {"type": "integer", "minimum": 1},
                    "alias": _ALIAS,
                    "steps": {"type": "array", "items": {"type": "number"}},
                    "step_duration": {"type": "string", "description": "10m, 30s, 1h"},
                    "max_error_rate_delta": {"type": "number"},
                    "max_p95_ratio": {"type": "number"},
                    "min_samples": {"type": "integer"},
                    "min_accuracy": {"type": "number", "minimum": 0, "maximum": 1},
                    "max_accuracy_drop": {"type": "number", "minimum": 0, "maximum": 1},
                    "min_feedback": {"type": "integer", "minimum": 1},
                },
            }
        ),
    ),
    ("GET", "/v1/functions/{name}/rollout"): Op(
        "The active rollout (else the last), with both versions' live stats", errors=(404,)
    ),
    ("POST", "/v1/functions/{name}/rollout/pause"): Op("Pause the rollout", errors=(404, 409)),
    ("POST", "/v1/functions/{name}/rollout/resume"): Op("Resume the rollout", errors=(404, 409)),
    ("POST", "/v1/functions/{name}/rollout/abort"): Op(
        "Stop the rollout; the alias goes back to the baseline", errors=(404, 409)
    ),
    ("PUT", "/v1/functions/{name}/shadow"): Op(
        "Copy a share of an alias's traffic to a candidate version (docs/DELIVERY.md)",
        errors=(400, 404),
        body=_json(
            {
                "type": "object",
                "required": ["version"],
                "properties": {
                    "version": {"type": "integer", "minimum": 1},
                    "alias": _ALIAS,
                    "percent": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
                    "tolerance": {"type": "number", "minimum": 0},
                    "ignore": {"type": "array", "items": {"type": "string"}},
                    "priority": {"type": "string", "enum": ["low", "normal"]},
                },
            }
        ),
    ),
    ("GET", "/v1/functions/{name}/shadow"): Op(
        "Shadows of a function: counts, agreement, errors, p95", errors=(404,)
    ),
    ("DELETE", "/v1/functions/{name}/shadow"): Op(
        "Stop shadowing", errors=(404,), query={"alias": _ALIAS}
    ),
    ("DELETE", "/v1/functions/{name}/aliases/{alias}"): Op(
        "Delete an alias", errors=(400, 404, 409), params={"alias": _ALIAS}
    ),
    ("POST", "/v1/functions/{name}/invoke"): Op(
        "Invoke synchronously: the body is the handler's event; the answer is the handler's "
        "result. `?async=1` or `X-Coldbrew-Invocation-Type: Event` queues it (202)",
        ok_schema=_ANY_JSON,
        errors=_INVOKE_ERRORS,
        query={"async": {**_BOOL_TEXT, "description": "queue the invocation (202)"}},
        body=_json(_ANY_JSON),
        params={"name": _TARGET},
    ),
    ("GET", "/v1/functions/{name}/logs"): Op(
        "A function's log lines (`?follow=true` streams them as text/plain)",
        errors=(400, 404),
        query={
            "since": _TIME,
            "tail": {"type": "integer", "minimum": 0},
            "request_id": {"type": "string"},
        },
    ),
    ("GET", "/v1/routes"): Op("API Gateway routes the caller's key can see"),
    ("POST", "/v1/routes"): Op(
        "Mount a function on an API Gateway route",
        ok=201,
        errors=(400, 404, 409, 413),
        body=_json(_ROUTE_BODY),
    ),
    ("DELETE", "/v1/routes/{route_id}"): Op("Remove a route", errors=(404,)),
    ("GET", "/v1/keys"): Op("API keys (admin; never their secrets)"),
    ("POST", "/v1/keys"): Op(
        "Create an API key (admin); the secret is in this answer only",
        ok=201,
        errors=(400, 413),
        body=_json(_KEY_BODY),
    ),
    ("DELETE", "/v1/keys/{key_id}"): Op("Revoke a key (admin)", errors=(404,)),
    ("POST", "/v1/keys/{key_id}/rotate"): Op("New secret for a key (admin)", errors=(404,)),
    ("GET", "/v1/secrets"): Op("Secret names and generations (admin; never values)"),
    ("POST", "/v1/functions/{name}/feedback"): Op(
        "True labels (or values) of logged predictions, by request id (docs/DATA.md)",
        errors=(400, 404, 413),
        body=_json(
            {
                "type": "object",
                "properties": {
                    "request_id": {"type": "string"},
                    "label": {"type": ["string", "number", "boolean"]},
                    "items": {"type": "array", "maxItems": 10000},
                },
            }
        ),
    ),
    ("GET", "/v1/functions/{name}/quality"): Op(
        "Accuracy, MAE, confusion matrix and calibration (ECE, Brier, reliability table) per"
        " version and day from feedback, and input drift (PSI per feature; max_psi: alert bound)",
        errors=(400, 404),
        query={"since": _TIME},
    ),
    ("GET", "/v1/functions/{name}/predictions"): Op(
        "The prediction log as JSON lines, oldest first (deploy permission; docs/DATA.md)",
        errors=(400, 404),
        query={
            "since": _TIME,
            "until": _TIME,
            "limit": {"type": "integer", "minimum": 1},
        },
    ),
    ("PUT", "/v1/secrets/{name}"): Op(
        "Set or rotate a secret (admin): the raw body is the value (docs/DATA.md)",
        errors=(400, 413),
        body={"application/octet-stream": {"type": "string", "format": "binary"}},
    ),
    ("DELETE", "/v1/secrets/{name}"): Op("Remove a secret (admin)", errors=(400, 404)),
    ("GET", "/v1/audit"): Op(
        "The audit log (admin)",
        errors=(400,),
        query={
            "since": _TIME,
            "actor": {"type": "string"},
            "action": {"type": "string"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 10000},
        },
    ),
    ("POST", "/v1/gc"): Op(
        "Collect unreferenced blobs and bundles (admin)",
        errors=(400, 404),
        query={"dry_run": _BOOL_TEXT, "grace_s": {"type": "number", "minimum": 0}},
    ),
    ("GET", "/metrics"): Op("Prometheus exposition (text/plain)", ok_schema={"type": "string"}),
    ("GET", "/ui"): Op("The dashboard (text/html)", ok_schema={"type": "string"}),
    ("GET", "/v1/stats"): Op(
        "What the dashboard shows",
        errors=(400,),
        query={"seconds": {"type": "number", "minimum": 10, "maximum": 900}},
    ),
    ("GET", "/v1/alerts"): Op("Active and recent alerts"),
    ("GET", "/v1/usage"): Op(
        "Metered invocations",
        errors=(400,),
        query={
            "function": {"type": "string"},
            "since": _TIME,
            "until": _TIME,
            "limit": {"type": "integer", "minimum": 1, "maximum": 10000},
        },
    ),
    ("GET", "/v1/cost"): Op(
        "Cost by function and by caller",
        errors=(400,),
        query={
            "function": {"type": "string"},
            "since": _TIME,
            "until": _TIME,
            "always_on_hourly": {"type": "number", "minimum": 0},
        },
    ),
    # Async invocations (docs/ASYNC.md)
    ("GET", "/v1/functions/{name}/events"): Op(
        "A function's async invocations",
        errors=(400, 404),
        query={"state": {"type": "string", "enum": ["queued", "succeeded", "failed"]}, **_LIMIT},
    ),
    ("GET", "/v1/functions/{name}/events/{request_id}"): Op("One async invocation", errors=(404,)),
    ("GET", "/v1/functions/{name}/dlq"): Op("Dead letters", errors=(400, 404), query=_LIMIT),
    ("DELETE", "/v1/functions/{name}/dlq"): Op("Purge the dead letters", errors=(404,)),
    ("POST", "/v1/functions/{name}/dlq/redrive"): Op(
        "Queue dead letters again (all of the function's, or `request_ids`)",
        errors=(400, 404, 413),
        body=_json(
            {"type": "object", "properties": {"request_ids": {"type": "array", "items": _STR}}}
        ),
    ),
    ("GET", "/v1/functions/{name}/results"): Op(
        "Results kept by the `results` destination",
        errors=(400, 404),
        query={"after": {"type": "integer", "minimum": 0}, **_LIMIT},
    ),
    ("GET", "/v1/functions/{name}/sources"): Op(
        "A function's event sources as this gateway runs them (counts, lag, last error)",
        errors=(404,),
    ),
    ("POST", "/v1/functions/{name}/schedules"): Op(
        "Invoke on a schedule: `rate(5 minutes)`, `cron(...)`",
        ok=201,
        errors=(400, 404, 409, 413),
        body=_json(
            {
                "type": "object",
                "required": ["name", "expression"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
                    "expression": _STR,
                    "input": {},
                    "timezone": _STR,
                },
            }
        ),
    ),
    ("POST", "/v1/functions/{name}/jobs"): Op(
        "Submit a batch job: the body is the input file (CSV with a header, JSON Lines or "
        "Parquet), streamed; every record is checked first (400 with the line of the first bad "
        "one). Admins may name a file on the gateway instead (docs/ASYNC.md)",
        ok=201,
        errors=(400, 403, 404, 413),
        query={
            "format": {"type": "string", "enum": _BATCH_FORMATS},
            "output_format": {"type": "string", "enum": _BATCH_FORMATS},
            "filename": {"type": "string", "description": "tells the format by its suffix"},
            "parallelism": {"type": "integer", "minimum": 1, "maximum": 64},
            "shape": {"type": "string", "enum": ["packed", "instances", "record"]},
        },
        body={"application/octet-stream": {"type": "string", "format": "binary"}},
        params={"name": _TARGET},
    ),
    ("GET", "/v1/functions/{name}/jobs"): Op("A function's batch jobs, newest first"),
    ("GET", "/v1/jobs"): Op("Batch jobs of the functions the caller sees, newest first"),
    ("GET", "/v1/jobs/{job_id}"): Op("A batch job: state, counts, rows/s, ETA"),
    ("DELETE", "/v1/jobs/{job_id}"): Op("Cancel a batch job"),
    ("POST", "/v1/jobs/{job_id}/cancel"): Op("Cancel a batch job"),
    ("GET", "/v1/jobs/{job_id}/results"): Op(
        "The results file of a completed batch job (its output format)",
        ok_schema={"type": "string", "format": "binary"},
        errors=(409,),
    ),
    ("GET", "/v1/jobs/{job_id}/errors"): Op(
        "The errors file of a completed batch job (its output format)",
        ok_schema={"type": "string", "format": "binary"},
        errors=(409,),
    ),
}


def _param_schema(route: Route, name: str, op: Op | None) -> dict[str, Any]:
    if op is not None and name in op.params:
        return op.params[name]
    convertor = route.param_convertors.get(name)
    if isinstance(convertor, IntegerConvertor):
        return {"type": "integer", "minimum": 0}
    if isinstance(convertor, FloatConvertor):
        return {"type": "number", "minimum": 0}
    if isinstance(convertor, UUIDConvertor):
        return {"type": "string", "format": "uuid"}
    return {"type": "string", "minLength": 1}


def _foreign(path: str) -> tuple[str, str, str] | None:
    for prefix, pointer in FOREIGN.items():
        if path == prefix or path.startswith(prefix + "/"):
            return pointer
    return None


def _error_responses(codes: Iterable[int]) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Error"}
    return {
        str(code): {"description": ERRORS[code], "content": {"application/json": {"schema": ref}}}
        for code in sorted(set(codes))
    }


def _operation(route: Route, method: str, op: Op | None) -> dict[str, Any]:
    foreign = _foreign(route.path_format)
    summary = op.summary if op else (foreign[2] if foreign else f"{method} {route.path_format}")
    ok_media = "application/json"
    if route.path_format in ("/metrics", "/ui"):
        ok_media = "text/plain" if route.path_format == "/metrics" else "text/html"
    ok = op.ok if op else 200
    ok_schema = op.ok_schema if op else _OBJECT
    document: dict[str, Any] = {
        "operationId": f"{method.lower()}{route.path_format}".replace("/", "_"),
        "summary": summary,
        "tags": [foreign[0] if foreign else "coldbrew"],
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": _param_schema(route, name, op)}
            for name in route.param_convertors
        ],
        "responses": {
            str(ok): {"description": "success", "content": {ok_media: {"schema": ok_schema}}}
        },
    }
    if op is not None:
        document["parameters"] += [
            {"name": key, "in": "query", "required": False, "schema": schema}
            for key, schema in op.query.items()
        ]
        if op.body is not None:
            document["requestBody"] = {
                "required": False,
                "content": {media: {"schema": schema} for media, schema in op.body.items()},
            }
    if op is not None and op.open:
        document["security"] = []
    elif not foreign or op is not None:
        errors = (*COMMON, *(op.errors if op else ()))
        if route.param_convertors:
            errors = (*errors, 404)
        document["responses"].update(_error_responses(errors))
    if foreign:
        document["externalDocs"] = {"description": foreign[2], "url": foreign[1]}
    return document


def served(routes: Iterable[BaseRoute]) -> list[tuple[str, Route]]:
    """(method, route) for every HTTP operation the document covers, in route order."""
    found: list[tuple[str, Route]] = []
    for route in routes:
        if isinstance(route, WebSocketRoute) or not isinstance(route, Route):
            continue
        if route.path_format == CATCH_ALL:
            continue
        for method in sorted(route.methods or ()):
            if method != "HEAD":  # Starlette adds HEAD to every GET
                found.append((method, route))
    return found


def build(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, route in served(routes):
        op = OPERATIONS.get((method, route.path_format))
        paths.setdefault(route.path_format, {})[method.lower()] = _operation(route, method, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "coldbrew",
            "version": __version__,
            "description": "coldbrew's own REST API. Excluded: "
            + "; ".join(f"{key}: {why}" for key, why in EXCLUDED.items())
            + ". Lambda and Open Inference v2 paths are listed with a pointer to their specs.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "API key or JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths,
    }


async def openapi_json(request: Request) -> Response:
    document = getattr(request.app.state, "openapi", None)
    if document is None:  # built once: the route table does not change while serving
        document = build(request.app.routes)
        request.app.state.openapi = document
    return json_response(200, document)
