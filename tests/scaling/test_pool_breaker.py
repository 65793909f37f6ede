"""The start-failure breaker applied by a pool, on the in-process backend (no forks, ms)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from coldbrew import errors
from coldbrew.backends.inprocess import InProcessBackend
from coldbrew.runtime.config import FunctionConfig
from coldbrew.scaling.breaker import BreakerPolicy
from coldbrew.scaling.pool import Pool, TemplatePolicy, VersionInfo

FAST = BreakerPolicy(threshold=3, window_s=60.0, base_s=0.2, cap_s=1.0)


def _pool(backend: InProcessBackend, name: str, **config: Any) -> Pool:
    fields = {"handler": "handler:handler", "queue_timeout_s": 5, **config}
    version = VersionInfo(name, 1, "0" * 64, FunctionConfig.model_validate(fields), "/tmp")
    return Pool(version, backend, TemplatePolicy(enabled=False), FAST)


async def _acquire(pool: Pool) -> str:
    try:
        instance, _ = await pool.acquire()
    except errors.ColdbrewError as exc:
        return exc.code
    pool.release(instance)
    return "OK"


def _spawned(backend: InProcessBackend, name: str) -> int:
    return sum(1 for spec in backend.spawned if spec.function_name == name)


def test_queued_callers_get_init_error_at_once() -> None:
    async def scenario() -> None:
        backend = InProcessBackend({"bad": lambda e: e})
        backend.fail_start = {"bad"}
        backend.init_s = 0.01
        pool = _pool(backend, "bad", max_instances=2)
        started = time.monotonic()
        codes = await asyncio.gather(*(_acquire(pool) for _ in range(20)))
        assert codes == ["INIT_ERROR"] * 20
        assert time.monotonic() - started < 1.0  # not queue_timeout_s = 5
        assert _spawned(backend, "bad") <= 4  # 3 to open it, one more may be in flight
        assert pool.breaker.state.value == "open" and not pool.waiters
        # While open: refused without a spawn.
        before = _spawned(backend, "bad")
        assert await _acquire(pool) == "INIT_ERROR"
        assert _spawned(backend, "bad") == before
        await pool.close()

    asyncio.run(scenario())


def test_the_error_names_the_cause_without_a_stack() -> None:
    async def scenario() -> None:
        backend = InProcessBackend({"bad": lambda e: e})
        backend.fail_start = {"bad"}
        pool = _pool(backend, "bad")
        with pytest.raises(errors.InitError) as caught:
            await pool.acquire()
        error = caught.value
        assert error.code == "INIT_ERROR" and error.module == "handler"
        assert error.error_message == "the handler did not import"
        assert "Traceback" not in error.message and "stackTrace" not in error.to_dict()
        await pool.close()

    asyncio.run(scenario())


def test_one_trial_after_the_backoff_and_a_good_one_closes_it() -> None:
    async def scenario() -> None:
        backend = InProcessBackend({"flaky": lambda e: e})
        backend.fail_start = {"flaky"}
        pool = _pool(backend, "flaky")
        for _ in range(3):
            assert await _acquire(pool) == "INIT_ERROR"
        assert pool.breaker.state.value == "open"
        await asyncio.sleep(0.25)  # base_s = 0.2
        backend.fail_start = set()  # what failed (a model store, say) is back
        assert await _acquire(pool) == "OK"
        assert pool.breaker.state.value == "closed"
        await pool.close()

    asyncio.run(scenario())


def test_provisioned_instances_do_not_crash_loop() -> None:
    async def scenario() -> None:
        backend = InProcessBackend({"bad": lambda e: e})
        backend.fail_start = {"bad"}
        pool = _pool(backend, "bad", min_instances=1)
        for _ in range(50):  # the reaper calls this every reap_interval_s
            pool.ensure_min_instances()
            await asyncio.sleep(0.002)
        assert _spawned(backend, "bad") <= 4
        await pool.close()

    asyncio.run(scenario())


def test_a_restart_starts_afresh() -> None:
    async def scenario() -> None:
        backend = InProcessBackend({"bad": lambda e: e})
        backend.fail_start = {"bad"}
        pool = _pool(backend, "bad")
        for _ in range(3):
            await _acquire(pool)
        assert not pool.breaker.closed
        pool.restart()
        assert pool.breaker.closed
        await pool.close()

    asyncio.run(scenario())
