"""``/v1/functions/{name}/rollout`` (start, status, pause, resume, abort) and
``/v1/functions/{name}/shadow``: thin REST over ``coldbrew.delivery`` (docs/DELIVERY.md)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.delivery.controller import RolloutController
from coldbrew.delivery.rollout import parse_criteria, parse_duration, parse_steps
from coldbrew.delivery.shadow import ShadowConfig, ShadowMirror, parse_priority
from coldbrew.gateway.auth import current, note_audit
from coldbrew.gateway.errors import json_response
from coldbrew.gateway.policy import Endpoint, function
from coldbrew.registry import names

ROLLOUT = "/v1/functions/{name}/rollout"
SHADOW = "/v1/functions/{name}/shadow"


def _controller(request: Request) -> RolloutController:
    controller = request.app.state.platform.rollouts
    if controller is None:
        raise errors.ValidationError("rollouts are not available on this gateway")
    return controller


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise errors.ValidationError("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise errors.ValidationError("the request body must be a JSON object")
    return body


def _version(value: Any, what: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)
    return names.check_version_number(value) if value is not None else _missing(what)


def _missing(what: str) -> int:
    raise errors.ValidationError(f"a rollout needs '{what}' (the candidate version)")


async def start_rollout(request: Request) -> Response:
    """``{"to": 3, "steps": [5, 25, 50, 100], "step_duration": "10m", "alias": "latest",
    "from": 2, "max_error_rate_delta": 0.01, "max_p95_ratio": 1.2, "min_samples": 100}``."""
    name = request.path_params["name"]
    body = await _json(request)
    candidate = _version(body.get("to"), "to")
    baseline = _version(body["from"], "from") if body.get("from") is not None else None
    alias = names.check_alias_name(body.get("alias") or "latest")
    steps = parse_steps(body.get("steps", [5, 25, 50, 100]))
    duration = parse_duration(body.get("step_duration", "10m"))
    criteria = parse_criteria(body)
    note_audit(request, alias=alias, candidate=candidate, steps=steps, step_duration_s=duration)
    rollout = await _controller(request).begin(
        name, candidate, steps, duration, criteria, alias, baseline, current(request).actor
    )
    return json_response(201, rollout.to_dict())


async def rollout_status(request: Request) -> Response:
    return json_response(200, await _controller(request).status(request.path_params["name"]))


async def _act(request: Request, action: str) -> Response:
    controller = _controller(request)
    actor = current(request).actor
    rollout = await getattr(controller, action)(request.path_params["name"], actor)
    return json_response(200, rollout.to_dict())


async def pause_rollout(request: Request) -> Response:
    return await _act(request, "pause")


async def resume_rollout(request: Request) -> Response:
    return await _act(request, "resume")


async def abort_rollout(request: Request) -> Response:
    return await _act(request, "abort")


def _mirror(request: Request) -> ShadowMirror:
    mirror = request.app.state.platform.shadows
    if mirror is None:
        raise errors.ValidationError("shadow traffic is not available on this gateway")
    return mirror


def _fraction(body: dict[str, Any]) -> float:
    percent = body.get("percent", 100)
    if (
        isinstance(percent, bool)
        or not isinstance(percent, int | float)
        or not math.isfinite(percent)
        or not 0 < percent <= 100
    ):
        raise errors.ValidationError("percent is the share of traffic copied, in (0, 100]")
    return float(percent) / 100


def _tolerance(body: dict[str, Any]) -> float:
    tolerance = body.get("tolerance", 1e-6)
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, int | float)
        or not math.isfinite(tolerance)
        or not 0 <= tolerance <= 1e6
    ):
        raise errors.ValidationError("tolerance is a number in [0, 1000000]")
    return float(tolerance)


def _ignore(body: dict[str, Any]) -> tuple[str, ...]:
    ignore = body.get("ignore") or []
    if (
        not isinstance(ignore, list)
        or len(ignore) > 50
        or not all(isinstance(k, str) and len(k) <= 128 for k in ignore)
    ):
        raise errors.ValidationError("ignore is a list of top-level result keys")
    return tuple(ignore)


async def set_shadow(request: Request) -> Response:
    """``{"version": 3, "alias": "latest", "percent": 10, "tolerance": 1e-6,
    "ignore": ["version"], "priority": "low"}``: copy that share of the alias's traffic to
    version 3."""
    platform = request.app.state.platform
    name = request.path_params["name"]
    body = await _json(request)
    version = _version(body.get("version"), "version")
    alias = names.check_alias_name(body.get("alias") or "latest")
    await asyncio.to_thread(platform.registry.get_alias, name, alias)  # NOT_FOUND
    await asyncio.to_thread(platform.registry.get_version, name, version)
    config = ShadowConfig(
        name, alias, version, _fraction(body), _tolerance(body), _ignore(body), parse_priority(body)
    )
    note_audit(request, alias=alias, version=version, percent=config.fraction * 100)
    mirror = _mirror(request)
    await mirror.put(config)  # in the registry: every gateway sharing it applies it
    return json_response(200, {"shadows": mirror.describe(name)})


async def shadow_status(request: Request) -> Response:
    """The registry's shadows of the function, with this gateway's counts."""
    name = request.path_params["name"]
    await asyncio.to_thread(request.app.state.platform.registry.get_function, name)
    mirror = _mirror(request)
    await mirror.refresh()  # a shadow set through another gateway a moment ago is listed too
    return json_response(200, {"shadows": mirror.describe(name)})


async def stop_shadow(request: Request) -> Response:
    name = request.path_params["name"]
    alias = request.query_params.get("alias")
    gone = await _mirror(request).delete(name, alias)  # from the registry: on every gateway
    if not gone:
        raise errors.NotFound(f"function '{name}' has no shadow traffic", function=name)
    return json_response(200, {"stopped": gone})


def endpoints() -> list[Endpoint]:
    return [
        Endpoint(SHADOW, set_shadow, "PUT", function("deploy", "shadow.set")),
        Endpoint(SHADOW, shadow_status, "GET", function("read")),
        Endpoint(SHADOW, stop_shadow, "DELETE", function("deploy", "shadow.stop")),
        Endpoint(ROLLOUT, start_rollout, "POST", function("deploy", "rollout.start")),
        Endpoint(ROLLOUT, rollout_status, "GET", function("read")),
        Endpoint(f"{ROLLOUT}/pause", pause_rollout, "POST", function("deploy", "rollout.pause")),
        Endpoint(f"{ROLLOUT}/resume", resume_rollout, "POST", function("deploy", "rollout.resume")),
        Endpoint(f"{ROLLOUT}/abort", abort_rollout, "POST", function("deploy", "rollout.abort")),
    ]
