"""The worker: leases events from the durable queue and runs them on the data plane.

One loop per gateway keeps up to ``concurrency`` events running. Each leased event is run with
``InvocationRequest(kind="async", limited=False)`` (its limits were charged when it was
accepted), so the scheduler's observers meter, log and count it like a sync call. A heartbeat
extends the leases of running events; a gateway that dies stops extending them, and the events
become visible to every gateway again after the visibility timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from coldbrew import errors
from coldbrew.core.outcome import Outcome
from coldbrew.dataplane import DataPlane, InvocationRequest
from coldbrew.jobs import policy
from coldbrew.jobs.configs import ConfigStore
from coldbrew.jobs.delivery import Deliverer
from coldbrew.jobs.destinations import record as destination_record
from coldbrew.jobs.metrics import AsyncMetrics
from coldbrew.jobs.queue import EventQueue, Leased
from coldbrew.security.principal import Principal

log = logging.getLogger("coldbrew.async")
SANDBOX_ERRORS = {
    "TIMEOUT": "Sandbox.Timedout",
    "OUT_OF_MEMORY": "Runtime.OutOfMemory",
    "INSTANCE_CRASHED": "Runtime.ExitError",
}
"""Lambda's errorType for failures of the function's sandbox rather than of its code."""


class Worker:
    def __init__(
        self,
        queue: EventQueue,
        configs: ConfigStore,
        dataplane: DataPlane,
        deliverer: Deliverer,
        metrics: AsyncMetrics,
        *,
        concurrency: int = 8,
        poll_s: float = 0.5,
        visibility_s: float = 30.0,
        retry_delay_s: float = 60.0,
        drain_s: float = 5.0,
    ) -> None:
        self.queue = queue
        self.configs = configs
        self.dataplane = dataplane
        self.deliverer = deliverer
        self.metrics = metrics
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.visibility_s = visibility_s
        self.retry_delay_s = retry_delay_s
        self.drain_s = drain_s
        self.owner = f"{os.uname().nodename[:40]}:{os.getpid()}:{os.urandom(3).hex()}"
        self.wake = asyncio.Event()
        self._running: dict[int, tuple[Leased, asyncio.Task[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        self.wake = asyncio.Event()  # bound to the serving loop
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._lease_loop(), name="coldbrew-async-lease"),
            asyncio.create_task(self._heartbeat_loop(), name="coldbrew-async-heartbeat"),
        ]

    async def stop(self) -> None:
        """Stop leasing; give running events ``drain_s``, then hand the rest back to the queue
        at once (visible immediately) instead of letting their leases run out."""
        self._stopping = True
        self.wake.set()
        for task in self._tasks:  # the lease loop ends (releasing a lease in flight), then wait
            if task.get_name() == "coldbrew-async-lease":
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(task), 5)
        running = [task for _, task in self._running.values()]
        if running:
            await asyncio.wait(running, timeout=self.drain_s)
        for event, task in list(self._running.values()):
            task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.queue.release, event)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *running, return_exceptions=True)
        self._tasks = []

    # -- loops -------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        while not self._stopping:
            free = self.concurrency - len(self._running)
            leased: list[Leased] = []
            if free > 0:
                try:
                    leased = await asyncio.to_thread(
                        self.queue.lease, self.owner, free, self.visibility_s
                    )
                except Exception:
                    log.exception("could not lease async events; retrying")
            if self._stopping:  # stop() began while this lease was in flight: hand them back
                for event in leased:
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(self.queue.release, event)
                return
            for event in leased:
                task = asyncio.create_task(self._process(event))
                self._running[event.id] = (event, task)
                task.add_done_callback(self._done(event.id))
            if leased and len(leased) == free:
                continue  # there may be more waiting
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_s)

    def _done(self, event_id: int) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._running.pop(event_id, None)
            self.wake.set()  # a slot is free

        return done

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.visibility_s / 3)
            for event, _ in list(self._running.values()):
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.queue.extend, event, self.visibility_s)

    # -- one event ---------------------------------------------------------------------------

    async def _process(self, event: Leased) -> None:
        try:
            await self._attempt(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("async %s: unexpected failure; it will be retried", event.request_id)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    self.queue.retry,
                    event,
                    policy.system_retry_delay(event.attempts),
                    {"code": "INTERNAL_ERROR", "message": "unexpected failure"},
                    False,
                )

    async def _attempt(self, event: Leased) -> None:
        config = await asyncio.to_thread(self.configs.effective, event.function_name)
        if event.age_s() > event.max_event_age_s:
            await self._fail(
                event, config, "EventAgeExceeded", None, None, await self._resolve(event)
            )
            return
        principal = Principal(
            id=event.caller_id, kind=event.caller_kind or "anonymous", role="invoker"
        )  # type: ignore[arg-type]
        request = InvocationRequest(
            event.function_name,
            event.payload,
            event.request_id,
            event.qualifier,
            principal,
            protocol=event.protocol,
            kind="async",
            client_context=event.client_context,
            limited=False,
            check_schema=False,  # checked when it was accepted
        )
        admitted = None
        started = time.monotonic()
        try:
            admitted = await self.dataplane.admit(request)
            outcome = await self.dataplane.run(request, admitted)
        except errors.ColdbrewError as exc:
            kind = SANDBOX_ERRORS.get(exc.code, exc.code)
            error = {"code": exc.code, "type": kind, "message": exc.message}
            version = admitted.version.number if admitted is not None else None
            await self._failed_attempt(event, config, error, version, admitted)
            return
        if outcome.error is not None:
            error = {
                "code": outcome.error.code,
                "type": outcome.error.type,
                "message": outcome.error.message,
                "stack": list(outcome.error.stack),
            }
            await self._failed_attempt(event, config, error, outcome.version, admitted)
            return
        await self._succeeded(event, config, outcome, admitted, time.monotonic() - started)

    async def _resolve(self, event: Leased) -> Any:
        """The version an event would run on (for its coldbrew.toml destinations), if any."""
        request = InvocationRequest(
            event.function_name,
            b"",
            event.request_id,
            event.qualifier,
            limited=False,
            check_schema=False,
        )
        try:
            return await self.dataplane.admit(request)
        except errors.ColdbrewError:
            return None

    async def _succeeded(
        self,
        event: Leased,
        config: policy.EventInvokeConfig,
        outcome: Outcome,
        admitted: Any,
        elapsed_s: float,
    ) -> None:
        destination = config.on_success or _toml_destination(admitted, "on_success")
        if destination:
            body = destination_record(
                request_id=event.request_id,
                function=event.function_name,
                qualifier=event.qualifier,
                condition="Success",
                attempts=event.attempts,
                payload=event.payload,
                executed_version=outcome.version,
                response=outcome.body,
            )
            if not await self.deliverer.deliver(destination, event.function_name, body):
                self.metrics.count(event.function_name, "destination_failed")
        if await asyncio.to_thread(self.queue.finish, event, outcome.version):
            self.metrics.count(event.function_name, "succeeded")
            log.info(
                "async %s succeeded on attempt %d (%.0f ms)",
                event.request_id,
                event.attempts,
                elapsed_s * 1000,
                extra={"request_id": event.request_id, "function": event.function_name},
            )

    async def _failed_attempt(
        self,
        event: Leased,
        config: policy.EventInvokeConfig,
        error: dict[str, Any],
        version: int | None,
        admitted: Any,
    ) -> None:
        kind = policy.failure_kind(error["code"])
        if kind == "fatal":
            await self._fail(event, config, "NotRunnable", error, version, admitted)
            return
        if kind == "function":
            failures = event.failures + 1
            if failures > event.max_retry_attempts:
                await self._fail(event, config, "RetriesExhausted", error, version, admitted)
                return
            delay = policy.function_retry_delay(failures, self.retry_delay_s)
        else:
            delay = policy.system_retry_delay(event.attempts)
        if event.age_s() + delay > event.max_event_age_s:
            await self._fail(event, config, "EventAgeExceeded", error, version, admitted)
            return
        if await asyncio.to_thread(self.queue.retry, event, delay, error, kind == "function"):
            self.metrics.count(event.function_name, "retried")
            log.info(
                "async %s attempt %d failed (%s); retrying in %.1f s",
                event.request_id,
                event.attempts,
                error["code"],
                delay,
                extra={"request_id": event.request_id, "function": event.function_name},
            )

    async def _fail(
        self,
        event: Leased,
        config: policy.EventInvokeConfig,
        reason: str,
        error: dict[str, Any] | None,
        version: int | None,
        admitted: Any = None,
    ) -> None:
        """Dead-letter the event and send it to the on-failure destination."""
        destination = config.on_failure or _toml_destination(admitted, "on_failure")
        if destination:
            ran = error is not None and policy.failure_kind(error["code"]) == "function"
            function_error = error if ran else None
            body = destination_record(
                request_id=event.request_id,
                function=event.function_name,
                qualifier=event.qualifier,
                condition=reason,
                attempts=event.attempts,
                payload=event.payload,
                executed_version=version if function_error else None,
                function_error=function_error,
            )
            if error is not None and function_error is None:
                body["error"] = {"code": error["code"], "message": error["message"]}
            if not await self.deliverer.deliver(destination, event.function_name, body):
                self.metrics.count(event.function_name, "destination_failed")
        if await asyncio.to_thread(self.queue.dead_letter, event, reason, error):
            self.metrics.count(event.function_name, "dead_lettered")
            log.warning(
                "async %s dead-lettered after %d attempt(s): %s%s",
                event.request_id,
                event.attempts,
                reason,
                f" ({error['code']}: {error['message']})" if error else "",
                extra={"request_id": event.request_id, "function": event.function_name},
            )


def _toml_destination(admitted: Any, which: str) -> str | None:
    """The version's own ``[destinations]`` (coldbrew.toml), when the API set none."""
    if admitted is None:
        return None
    destinations = getattr(admitted.version.config, "destinations", None)
    return getattr(destinations, which, None) if destinations is not None else None
