"""Native REST of async invocations (docs/ASYNC.md).

- ``POST /v1/functions/{name}/invoke?async=1`` (or header ``X-Coldbrew-Invocation-Type:
  Event``): reached from ``fastpath.InvokeFastPath``; 202 ``{"request_id", "status"}`` once the
  event is committed. ``X-Coldbrew-Idempotency-Key`` makes a retried submit a no-op that
  answers the first request id (``"status": "duplicate"``).
- ``GET /v1/functions/{name}/events[?state=]`` and ``.../events/{request_id}``: what happened.
- ``GET|DELETE /v1/functions/{name}/dlq``, ``GET .../dlq/{request_id}``, ``POST
  .../dlq/redrive``: the dead-letter store.
- ``GET|DELETE /v1/functions/{name}/results``: the ``results`` destination.
- ``GET|POST /v1/functions/{name}/schedules``, ``DELETE .../schedules/{schedule}``,
  ``GET .../schedules/{schedule}/runs`` (run history), ``GET /v1/schedules``.
- ``GET /v1/functions/{name}/sources``: its ``[[event_source]]`` tables as this gateway runs
  them (counts, lag, last error; ``coldbrew source ls``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from coldbrew import errors
from coldbrew.dataplane import InvocationRequest
from coldbrew.gateway.auth import current, principal_of_scope
from coldbrew.gateway.body import parse_json, read_body, receive_body
from coldbrew.gateway.errors import from_exception, json_response
from coldbrew.gateway.outcomes import request_id_from
from coldbrew.gateway.policy import Endpoint, anyone, function
from coldbrew.gateway.targets import split_qualifier
from coldbrew.jobs.service import AsyncInvocations

log = logging.getLogger("coldbrew.async")
ASYNC_MAX_BYTES = 256 * 1024
"""Lambda's limit on an async event payload."""
IDEMPOTENCY_HEADER = b"x-coldbrew-idempotency-key"
SCHEDULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _jobs(request: Request | Scope) -> AsyncInvocations:
    app = request["app"] if isinstance(request, dict) else request.app
    return app.state.events  # type: ignore[no-any-return]


# -- accepting (from the fast path) ------------------------------------------------------------


async def accept(target: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer an async native invoke: 202 once committed, or the error of the refusal."""
    headers = dict(scope["headers"])
    given = headers.get(b"x-request-id")
    request_id = request_id_from(given.decode("latin-1") if given else None)
    key = headers.get(IDEMPOTENCY_HEADER)
    try:
        name, qualifier = split_qualifier(target)
        payload = await receive_body(receive, headers, ASYNC_MAX_BYTES)
        call = InvocationRequest(
            name, payload, request_id, qualifier, principal_of_scope(scope), kind="async"
        )
        first, created = await _jobs(scope).accept(call, key.decode("latin-1") if key else None)
    except errors.ColdbrewError as exc:
        await from_exception(exc, {"x-request-id": request_id})(scope, receive, send)
        return
    except Exception:  # the queue's database failed: not accepted, and the caller must know
        log.exception("async %s could not be queued", request_id)
        failure = errors.ColdbrewError("the event could not be queued; it was not accepted")
        await from_exception(failure, {"x-request-id": request_id})(scope, receive, send)
        return
    body = {"request_id": first, "status": "queued" if created else "duplicate"}
    await json_response(202, body, {"x-request-id": first})(scope, receive, send)


# -- inspection ----------------------------------------------------------------------------------


async def _known(request: Request) -> str:
    """The path's function, NOT_FOUND when it does not exist."""
    name = request.path_params["name"]
    await asyncio.to_thread(request.app.state.platform.registry.get_function, name)
    return name


def _limit(request: Request, default: int = 100) -> int:
    raw = request.query_params.get("limit", str(default))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1000:  # not "²"
        raise errors.ValidationError("limit must be a whole number from 1 to 1000")
    return int(raw)


async def list_events(request: Request) -> Response:
    name = await _known(request)
    state = request.query_params.get("state")
    if state not in (None, "queued", "succeeded", "failed"):
        raise errors.ValidationError("state must be queued, succeeded or failed")
    found = await asyncio.to_thread(_jobs(request).queue.list_events, name, state, _limit(request))
    return json_response(200, {"events": found})


async def get_event(request: Request) -> Response:
    name = await _known(request)
    found = await asyncio.to_thread(_jobs(request).queue.get, request.path_params["request_id"])
    if found is None or found["function"] != name:
        raise errors.NotFound(f"no async invocation '{request.path_params['request_id']}'")
    return json_response(200, found)


async def list_dead_letters(request: Request) -> Response:
    name = await _known(request)
    found = await asyncio.to_thread(_jobs(request).queue.dead_letters, name, _limit(request))
    return json_response(200, {"dead_letters": found})


async def list_sources(request: Request) -> Response:
    name = await _known(request)
    return json_response(200, {"sources": await request.app.state.sources.describe(name)})


async def get_dead_letter(request: Request) -> Response:
    name = await _known(request)
    queue = _jobs(request).queue
    found = await asyncio.to_thread(
        queue.dead_letter_by_id, name, request.path_params["request_id"]
    )
    return json_response(200, found)


async def redrive(request: Request) -> Response:
    """Body ``{"request_ids": [...]}`` for some; empty for all of the function's."""
    name = await _known(request)
    raw = await read_body(request, 1024 * 1024)
    body: Any = parse_json(raw) if raw.strip() else {}
    ids = body.get("request_ids") if isinstance(body, dict) else None
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise errors.ValidationError("request_ids must be a list of request id strings")
    jobs = _jobs(request)
    moved = await asyncio.to_thread(jobs.queue.redrive, name, ids)
    jobs.worker.wake.set()
    return json_response(200, {"redriven": moved})


async def purge_dead_letters(request: Request) -> Response:
    name = await _known(request)
    count = await asyncio.to_thread(_jobs(request).queue.purge, name)
    return json_response(200, {"purged": count})


async def list_results(request: Request) -> Response:
    name = await _known(request)
    after = request.query_params.get("after", "0")
    if not (after.isascii() and after.isdigit()) or len(after) > 18:  # SQLite: 64-bit ints
        raise errors.ValidationError("after must be a result id (a whole number)")
    found = await asyncio.to_thread(_jobs(request).queue.results, name, int(after), _limit(request))
    return json_response(200, {"results": found})


async def purge_results(request: Request) -> Response:
    name = await _known(request)
    count = await asyncio.to_thread(_jobs(request).queue.purge_results, name)
    return json_response(200, {"purged": count})


# -- schedules -------------------------------------------------------------------------------------


async def list_schedules(request: Request) -> Response:
    name = await _known(request)
    found = await asyncio.to_thread(_jobs(request).schedules.list, name)
    return json_response(200, {"schedules": found})


async def list_all_schedules(request: Request) -> Response:
    principal = current(request)
    found = await asyncio.to_thread(_jobs(request).schedules.list, None)
    return json_response(200, {"schedules": [s for s in found if principal.sees(s["function"])]})


async def add_schedule(request: Request) -> Response:
    """Body ``{"name", "expression", "input"?, "timezone"?}``."""
    name = await _known(request)
    body = parse_json(await read_body(request, 256 * 1024))
    if not isinstance(body, dict):
        raise errors.ValidationError("the body must be a JSON object")
    schedule, expression = body.get("name"), body.get("expression")
    timezone = body.get("timezone", "UTC")
    if not isinstance(schedule, str) or not SCHEDULE_NAME.fullmatch(schedule):
        raise errors.ValidationError(
            "name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if not isinstance(expression, str) or not isinstance(timezone, str):
        raise errors.ValidationError("expression (and timezone) must be strings")
    added = await asyncio.to_thread(
        _jobs(request).schedules.add, name, schedule, expression, body.get("input"), timezone
    )
    return json_response(201, added)


async def schedule_runs(request: Request) -> Response:
    """A schedule's run history: one event per fired tick, newest first."""
    name = await _known(request)
    schedule = request.path_params["schedule"]
    jobs = _jobs(request)
    if not any(s["name"] == schedule for s in await asyncio.to_thread(jobs.schedules.list, name)):
        raise errors.NotFound(f"function '{name}' has no schedule named '{schedule}'")
    runs = await asyncio.to_thread(
        jobs.queue.list_events, name, None, _limit(request), f"schedule:{schedule}:"
    )
    for run in runs:
        run["tick"] = run["idempotency_key"].split(":", 2)[2]
    return json_response(200, {"runs": runs})


async def remove_schedule(request: Request) -> Response:
    name = await _known(request)
    await asyncio.to_thread(_jobs(request).schedules.remove, name, request.path_params["schedule"])
    return json_response(200, {"deleted": request.path_params["schedule"]})


def endpoints() -> list[Endpoint]:
    base = "/v1/functions/{name}"
    read = function("read")
    return [
        Endpoint(f"{base}/events", list_events, "GET", read),
        Endpoint(f"{base}/events/{{request_id}}", get_event, "GET", read),
        Endpoint(f"{base}/dlq", list_dead_letters, "GET", read),
        Endpoint(f"{base}/dlq", purge_dead_letters, "DELETE", function("deploy", "dlq.purge")),
        Endpoint(f"{base}/dlq/redrive", redrive, "POST", function("deploy", "dlq.redrive")),
        Endpoint(f"{base}/dlq/{{request_id}}", get_dead_letter, "GET", read),
        Endpoint(f"{base}/results", list_results, "GET", read),
        Endpoint(f"{base}/sources", list_sources, "GET", read),
        Endpoint(f"{base}/results", purge_results, "DELETE", function("deploy", "results.purge")),
        Endpoint(f"{base}/schedules", list_schedules, "GET", read),
        Endpoint(f"{base}/schedules", add_schedule, "POST", function("deploy", "schedule.add")),
        Endpoint(
            f"{base}/schedules/{{schedule}}",
            remove_schedule,
            "DELETE",
            function("deploy", "schedule.delete"),
        ),
        Endpoint(f"{base}/schedules/{{schedule}}/runs", schedule_runs, "GET", read),
        Endpoint("/v1/schedules", list_all_schedules, "GET", anyone("read")),
    ]
