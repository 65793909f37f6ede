"""Ensembles and routers: functions made of other functions, run in the gateway.

Every member invocation is an ``InvocationRequest`` through the data plane (resolved,
scheduled, metered and traced like any other, protocol ``ensemble`` / ``router``), on behalf of
the caller: a member the caller's key may not see fails like a missing one. The caller was
charged once, for the ensemble; members are not charged again.

An ensemble fans out to all members at once and waits up to ``member_timeout_s``; members that
failed, crashed or were too slow do not count, and the answer needs ``quorum`` of them (by
default a majority). A straggler is not cancelled (its instance finishes the call, metered);
it is just not waited for. The answer is the combined result plus who answered::

    {"predictions": [...], "members": [{"member": "a", "version": 1, "ok": true, "ms": 3.1},
     {"member": "b:2", "ok": false, "error": "INSTANCE_CRASHED", "ms": 40.2}],
     "answered": 1, "quorum": 1}
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from coldbrew import errors
from coldbrew.core.outcome import Outcome
from coldbrew.dataplane import split
from coldbrew.dataplane.plane import Admitted, DataPlane
from coldbrew.dataplane.request import InvocationRequest
from coldbrew.delivery.combine import CombineError, combine
from coldbrew.ids import new_request_id

MAX_DEPTH = 4
"""Ensembles of ensembles nest this deep at most (a cycle is refused, not followed)."""
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("coldbrew_composite_depth", default=0)


@dataclass(frozen=True)
class CompositeError:
    """``Outcome.error`` of a composite that could not answer (the shape handlers' errors
    have: the edges render it as a function error)."""

    type: str
    message: str
    code: str = "FUNCTION_ERROR"
    stack: list[str] = field(default_factory=list)


@dataclass
class Answer:
    member: str
    ok: bool
    ms: float
    version: int | None = None
    result: Any = None
    error: str | None = None

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"member": self.member, "ok": self.ok, "ms": round(self.ms, 3)}
        if self.version is not None:
            out["version"] = self.version
        if self.error is not None:
            out["error"] = self.error
        return out


class Composites:
    """What the data plane calls for a version whose ``kind`` is ``ensemble`` or ``router``."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self._stragglers: set[asyncio.Task[Answer]] = set()

    async def __call__(self, request: InvocationRequest, admitted: Admitted) -> Outcome:
        started = time.perf_counter()
        version = admitted.version
        depth = _depth.get()
        token = _depth.set(depth + 1)
        try:
            if depth >= MAX_DEPTH:
                body, error = b"", CompositeError("CompositeTooDeep", "ensembles nest too deep")
            elif version.config.kind == "ensemble":
                body, error = await self._ensemble(request, admitted)
            else:
                body, error = await self._router(request, admitted)
        finally:
            _depth.reset(token)
        wall = (time.perf_counter() - started) * 1000
        return Outcome(
            request_id=request.request_id,
            function_name=version.function_name,
            version=version.number,
            cold_start=False,
            body=body,
            error=error,
            duration_ms=wall,
            init_ms=None,
            memory_mb=0,  # its members' compute is billed on their own rows
            qualifier=request.qualifier,
            wall_ms=wall,
            caller=request.principal.caller,
            protocol=request.protocol,
            kind=request.kind,
        )

    # --- members --------------------------------------------------------------------------------
    async def _invoke(
        self, request: InvocationRequest, target: str, protocol: str, payload: bytes | None = None
    ) -> Answer:
        name, _, qualifier = target.partition(":")
        started = time.perf_counter()
        if not request.principal.sees(name) or name == request.function:
            return Answer(target, False, 0.0, error="NOT_FOUND")
        call = InvocationRequest(
            name,
            request.payload if payload is None else payload,
            new_request_id(),
            qualifier or None,
            request.principal,
            protocol=protocol,
            kind=request.kind,
            client_context=request.client_context,
            event=request.event if payload is None else None,
            limited=False,  # the caller was charged once, for the composite
        )
        try:
            outcome = await self.dataplane.invoke(call)
        except errors.ColdbrewError as exc:
            return Answer(target, False, _ms(started), error=exc.code)
        if outcome.error is not None:
            code = getattr(outcome.error, "code", "FUNCTION_ERROR")
            return Answer(target, False, _ms(started), outcome.version, error=code)
        try:
            result = orjson.loads(outcome.body)
        except orjson.JSONDecodeError:
            return Answer(target, False, _ms(started), outcome.version, error="NOT_JSON")
        return Answer(target, True, _ms(started), outcome.version, result)

    async def _ensemble(
        self, request: InvocationRequest, admitted: Admitted
    ) -> tuple[bytes, CompositeError | None]:
        config = admitted.version.config.ensemble
        assert config is not None
        tasks = [
            asyncio.ensure_future(self._invoke(request, member, "ensemble"))
            for member in config.members
        ]
        done, pending = await asyncio.wait(tasks, timeout=config.member_timeout_s)
        for task in pending:  # not cancelled: the member finishes (and is metered) on its own
            self._stragglers.add(task)
            task.add_done_callback(self._stragglers.discard)
        answers = [
            t.result()
            if t in done
            else Answer(m, False, config.member_timeout_s * 1000, error="TIMEOUT")
            for t, m in zip(tasks, config.members, strict=True)
        ]
        weights = config.weights or [1.0] * len(config.members)
        answered = [(w, a.result) for w, a in zip(weights, answers, strict=True) if a.ok]
        members = [a.public() for a in answers]
        if len(answered) < config.needed:
            failed = ", ".join(f"{a.member}: {a.error}" for a in answers if not a.ok)
            return b"", CompositeError(
                "QuorumNotMet",
                f"{len(answered)} of {len(answers)} members answered, {config.needed} needed "
                f"({failed}); members: {orjson.dumps(members).decode()}",
            )
        try:
            if config.combine.startswith("function:"):
                combined = await self._combine_by(request, config.combine[9:], answers)
            else:
                combined = combine(config.combine, answered)
        except CombineError as exc:
            return b"", CompositeError("CombineError", str(exc))
        body = combined if isinstance(combined, dict) else {"result": combined}
        body = {**body, "members": members, "answered": len(answered), "quorum": config.needed}
        return orjson.dumps(body), None

    async def _combine_by(
        self, request: InvocationRequest, target: str, answers: list[Answer]
    ) -> Any:
        event = request.event if request.event is not None else _event(request.payload)
        payload = orjson.dumps(
            {
                "event": event,
                "results": [{"member": a.member, "result": a.result} for a in answers if a.ok],
            }
        )
        answer = await self._invoke(request, target, "ensemble", payload)
        if not answer.ok:
            raise CombineError(f"the combining function {target} failed: {answer.error}")
        return answer.result

    async def _router(
        self, request: InvocationRequest, admitted: Admitted
    ) -> tuple[bytes, CompositeError | None]:
        config = admitted.version.config.router
        assert config is not None
        if config.field is not None:
            event = request.event if request.event is not None else _event(request.payload)
            route = split.find(event, config.field)
        else:
            assert config.classifier is not None
            chosen = await self._invoke(request, config.classifier, "router")
            if not chosen.ok:
                return b"", CompositeError(
                    "ClassifierFailed", f"the classifier {config.classifier} failed: {chosen.error}"
                )
            route = _route_of(chosen.result)
        target = config.routes.get(route) if route is not None else None
        target = target or config.default
        if target is None:
            raise errors.ValidationError(
                f"no route for {route!r}: known routes are {sorted(config.routes)}"
            )
        task = asyncio.ensure_future(self._invoke(request, target, "router"))
        done, _ = await asyncio.wait([task], timeout=config.member_timeout_s)
        if not done:
            self._stragglers.add(task)
            task.add_done_callback(self._stragglers.discard)
            answer = Answer(target, False, config.member_timeout_s * 1000, error="TIMEOUT")
        else:
            answer = task.result()
        if not answer.ok:
            return b"", CompositeError(
                "MemberFailed", f"route {route!r} -> {target} failed: {answer.error}"
            )
        body = {"route": route, "member": target, "version": answer.version}
        return orjson.dumps({**body, "result": answer.result}), None


def _route_of(result: Any) -> str | None:
    """A classifier's answer as a route: a string, ``{"route": ...}``, or its first
    prediction."""
    if isinstance(result, dict):
        if "route" in result:
            result = result["route"]
        elif isinstance(result.get("predictions"), list) and result["predictions"]:
            result = result["predictions"][0]
    if isinstance(result, str):
        return result
    if isinstance(result, int | float) and not isinstance(result, bool):
        return orjson.dumps(result).decode()
    return None


def _event(payload: bytes) -> Any:
    try:
        return orjson.loads(payload) if payload.strip() else {}
    except orjson.JSONDecodeError:
        raise errors.ValidationError("the event is not valid JSON") from None


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
