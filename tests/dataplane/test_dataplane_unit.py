"""The data plane, the scheduler, pools and the batcher on the in-process backend: placement,
limits, queueing, timeouts, batching and scale to zero in milliseconds, without forks.

The end-to-end tests (tests/e2e, tests/protocols) run the same paths on real processes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from coldbrew import errors
from coldbrew.backends.inprocess import InProcessBackend
from coldbrew.core.outcome import Outcome
from coldbrew.dataplane import DataPlane, InvocationRequest
from coldbrew.scaling.pool import TemplatePolicy
from coldbrew.scaling.scheduler import Scheduler
from coldbrew.security.limiter import Limiter, MemoryLimitState
from coldbrew.security.principal import KeyLimits, Principal


@dataclass
class Record:
    function_name: str
    number: int
    content_sha256: str
    config: dict[str, Any]
    manifest: dict[str, str] = field(default_factory=dict)


class Versions:
    """A registry of one version per function."""

    def __init__(self, configs: dict[str, dict[str, Any]]) -> None:
        self.records = {
            name: Record(name, 1, f"{i:064x}", {"handler": "handler:handler", **config})
            for i, (name, config) in enumerate(configs.items())
        }

    def resolve(self, name: str, qualifier: str | None = None) -> Record:
        if name not in self.records:
            raise errors.NotFound(f"function '{name}' not found", function=name)
        return self.records[name]


class Bundles:
    def materialize(self, manifest: dict[str, str], dest: Path) -> Path:
        return dest


def echo(event: Any) -> Any:
    if isinstance(event, dict) and event.get("fail"):
        raise ValueError("asked to fail")
    return {"echo": event}


class Plane:
    def __init__(self, tmp: Path, configs: dict[str, dict[str, Any]]) -> None:
        self.backend = InProcessBackend(dict.fromkeys(configs, echo))
        self.scheduler = Scheduler(
            Versions(configs),
            Bundles(),
            self.backend,
            tmp,
            reap_interval_s=3600,  # the tests reap by hand
            template_policy=TemplatePolicy(enabled=False),
        )
        self.outcomes: list[Outcome] = []
        self.scheduler.observers.append(self.outcomes.append)
        self.dataplane = DataPlane(self.scheduler, Limiter(MemoryLimitState()))
        self._ids = 0

    def request(self, function: str, event: Any = None, **fields: Any) -> InvocationRequest:
        self._ids += 1
        payload = orjson.dumps(event if event is not None else {})
        return InvocationRequest(function, payload, f"req-{self._ids}", **fields)

    async def invoke(self, function: str, event: Any = None, **fields: Any) -> Outcome:
        return await self.dataplane.invoke(self.request(function, event, **fields))

    async def close(self) -> None:
        await self.scheduler.stop()
        await self.backend.stop()


def run(tmp_path: Path, configs: dict[str, dict[str, Any]], scenario: Any) -> Plane:
    async def main() -> Plane:
        plane = Plane(tmp_path, configs)
        try:
            await scenario(plane)
        finally:
            await plane.close()
        return plane

    return asyncio.run(main())


def test_a_warm_instance_is_reused(tmp_path: Path) -> None:
    async def scenario(plane: Plane) -> None:
        first = await plane.invoke("echo", {"n": 1})
        second = await plane.invoke("echo", {"n": 2})
        assert orjson.loads(second.body) == {"echo": {"n": 2}}
        assert (first.cold_start, second.cold_start) == (True, False)
        assert len(plane.backend.spawned) == 1

    run(tmp_path, {"echo": {}}, scenario)


def test_callers_beyond_max_instances_wait_then_run(tmp_path: Path) -> None:
    async def scenario(plane: Plane) -> None:
        plane.backend.delay_s = 0.05
        outcomes = await asyncio.gather(*(plane.invoke("echo", {"n": n}) for n in range(6)))
        assert [orjson.loads(o.body)["echo"]["n"] for o in outcomes] == list(range(6))
        assert len(plane.backend.spawned) == 2
        assert max(o.queue_ms for o in outcomes) >= 40  # some waited for a slot

    run(tmp_path, {"echo": {"max_instances": 2}}, scenario)


def test_a_full_queue_throttles(tmp_path: Path) -> None:
    async def scenario(plane: Plane) -> None:
        plane.backend.delay_s = 0.2
        results = await asyncio.gather(
            *(plane.invoke("echo") for _ in range(4)), return_exceptions=True
        )
        throttled = [r for r in results if isinstance(r, errors.Throttled)]
        assert len(throttled) == 2  # one running, one queued, two refused
        assert {o.platform_error for o in plane.outcomes if o.platform_error} == {"THROTTLED"}

    run(tmp_path, {"echo": {"max_instances": 1, "max_queue": 1}}, scenario)


def test_a_timeout_kills_the_instance_and_the_next_call_starts_another(tmp_path: Path) -> None:
    async def scenario(plane: Plane) -> None:
        plane.backend.delay_s = 1.0
        with pytest.raises(errors.InvocationTimeout):
            await plane.invoke("echo")
        assert len(plane.backend.killed) == 1
        plane.backend.delay_s = 0.0
        again = await plane.invoke("echo")
        assert again.cold_start and len(plane.backend.spawned) == 2

    run(tmp_path, {"echo": {"timeout_s": 0.1}}, scenario)


def test_handler_errors_are_outcomes_not_exceptions(tmp_path: Path) -> None:
    async def scenario(plane: Plane) -> None:
        outcome = await plane.invoke("echo", {"fail": True})
        assert outcome.error is not None and outcome.error.type == "ValueError"

    run(tmp_path, {"echo": {}}, scenario)


def test_concurrent_calls_are_batched(tmp_path: Path) -> None:
    async def scenario(plane: Plane) -> None:
        plane.backend.delay_s = 0.05
        outcomes = await asyncio.gather(*(plane.invoke("batched", {"n": n}) for n in range(20)))
        assert [orjson.loads(o.body)["echo"]["n"] for o in outcomes] == list(range(20))
        assert max(plane.backend.batches) > 1 and sum(plane.backend.batches) == 20
        assert max(o.batch_size for o in outcomes) > 1

    config = {"batch_handler": "handler:batch", "max_instances": 1}
    run(tmp_path, {"batched": config}, scenario)


def test_idle_instances_scale_to_zero(tmp_path: Path) -> None:
    async def scenario(plane: Plane) -> None:
        await plane.invoke("echo")
        await asyncio.sleep(0.15)
        plane.scheduler.reap()  # stops the idle instance
        await asyncio.sleep(0.05)
        assert len(plane.backend.killed) == 1
        plane.scheduler.reap()  # forgets the empty pool
        assert plane.scheduler.pools == {}

    run(tmp_path, {"echo": {"idle_timeout_s": 0.1}}, scenario)


# --- the data plane's own rules ---------------------------------------------------------------


def test_function_rate_limit_applies_to_every_protocol(tmp_path: Path) -> None:
    async def scenario(plane: Plane) -> None:
        protocols = ["native", "lambda", "websocket", "apigateway"]
        results = []
        for protocol in protocols:
            try:
                results.append(await plane.invoke("limited", protocol=protocol))
            except errors.Throttled as exc:
                results.append(exc)
        assert [isinstance(r, errors.Throttled) for r in results] == [False, False, True, True]
        assert results[2].code == "RATE_LIMITED"
        assert results[1].limits is not None and results[1].limits.remaining == 0

    run(tmp_path, {"limited": {"rate_limit": 0.01, "burst": 2}}, scenario)


def test_key_limits_count_calls_to_missing_functions(tmp_path: Path) -> None:
    key = Principal("k1", "key", "invoker", ("*",), limits=KeyLimits(rate_per_s=0.01, burst=2))

    async def scenario(plane: Plane) -> None:
        for _ in range(2):
            with pytest.raises(errors.NotFound):
                await plane.invoke("missing", principal=key)
        with pytest.raises(errors.Throttled):
            await plane.invoke("missing", principal=key)

    run(tmp_path, {"echo": {}}, scenario)


def test_the_schema_refuses_before_an_instance_starts(tmp_path: Path) -> None:
    schema = {"type": "object", "required": ["x"]}

    async def scenario(plane: Plane) -> None:
        with pytest.raises(errors.ValidationError, match="schema"):
            await plane.invoke("strict", {"y": 1})
        assert plane.backend.spawned == []
        ok = await plane.invoke("strict", {"x": 1})
        assert ok.error is None
        # Envelopes the schema does not describe (API Gateway, WebSocket) are exempt.
        exempt = await plane.invoke("strict", {"y": 1}, check_schema=False)
        assert exempt.error is None

    run(tmp_path, {"strict": {"schema": schema}}, scenario)


def test_garbage_bodies_are_refused_before_an_instance_starts(tmp_path: Path) -> None:
    async def scenario(plane: Plane) -> None:
        request = InvocationRequest("echo", b"not json", "req-garbage")
        with pytest.raises(errors.ValidationError):
            await plane.dataplane.invoke(request)
        assert plane.backend.spawned == []

    run(tmp_path, {"echo": {}}, scenario)


def test_outcomes_carry_caller_protocol_and_kind(tmp_path: Path) -> None:
    key = Principal("k2", "key", "invoker", ("*",))

    async def scenario(plane: Plane) -> None:
        await plane.invoke("echo", principal=key, protocol="oip")
        admitted = await plane.dataplane.admit(plane.request("echo", kind="async"))
        await plane.dataplane.run(plane.request("echo", kind="async", limited=False), admitted)
        first, second = plane.outcomes
        assert (first.caller, first.protocol, first.kind) == ("key:k2", "oip", "sync")
        assert (second.caller, second.kind) == (None, "async")

    run(tmp_path, {"echo": {}}, scenario)


def test_a_stream_session_holds_one_slot_and_is_metered_once(tmp_path: Path) -> None:
    async def scenario(plane: Plane) -> None:
        request = plane.request("echo", protocol="stream", kind="stream", check_schema=False)
        with pytest.raises(errors.ValidationError, match="stream_handler"):
            await plane.dataplane.open_stream(request)

    run(tmp_path, {"echo": {}}, scenario)


def test_the_in_process_backend_is_fast(tmp_path: Path) -> None:
    """Why it exists: a cold start costs no fork, so these tests stay milliseconds."""

    async def scenario(plane: Plane) -> None:
        started = time.perf_counter()
        for n in range(50):
            await plane.invoke("echo", {"n": n})
        assert time.perf_counter() - started < 5

    run(tmp_path, {"echo": {}}, scenario)


def test_the_prediction_cache_never_serves_a_callers_own_context() -> None:
    """Payload bytes are the key: a request with a ClientContext or identity is not cached."""
    from types import SimpleNamespace

    from coldbrew.dataplane.prediction_cache import PredictionCache

    version = SimpleNamespace(
        config=SimpleNamespace(prediction_cache=SimpleNamespace(backend="local"))
    )
    plain = InvocationRequest("f", b"{}", "r1")
    assert PredictionCache.wanted(version, plain)  # type: ignore[arg-type]
    for fields in ({"client_context": {"custom": {"user": "a"}}}, {"identity": {"id": "b"}}):
        assert not PredictionCache.wanted(version, InvocationRequest("f", b"{}", "r2", **fields))  # type: ignore[arg-type]
