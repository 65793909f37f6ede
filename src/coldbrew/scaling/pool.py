"""The instances of one version, and the bounded queue of invocations waiting for them.

Placement is Lambda's: a free slot on a warm instance, else a cold start while the version is
under ``max_instances``, else wait in a queue of at most ``max_queue`` invocations for at most
``queue_timeout_s``, else THROTTLED. A version whose instances keep failing to start (the
handler does not import, the model does not load) trips its circuit breaker
(``scaling/breaker.py``): callers, queued ones included, get INIT_ERROR at once, and one trial
start is made after each backoff. A caller queued behind the first start of a version with no
instance serving waits past its queue deadline for that start's verdict, so a slow start that
fails gives it INIT_ERROR, not THROTTLED. An idle instance is stopped after ``idle_timeout_s``
(``min_instances`` are kept), so an unused version ends with no process at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from coldbrew import errors
from coldbrew.backends.base import Backend, InstanceSpec
from coldbrew.runtime.config import FunctionConfig
from coldbrew.runtime.forksafety import ForkUnsafe
from coldbrew.scaling.breaker import Breaker, BreakerPolicy
from coldbrew.scaling.instance import Instance, State, start_failure
from coldbrew.scaling.keepalive import KeepAlive, policy_named
from coldbrew.scaling.leases import LOCAL, SlotLeases

log = logging.getLogger("coldbrew.pool")
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class VersionInfo:
    """What a pool needs to know about the version it serves."""

    function_name: str
    number: int
    content_sha256: str
    config: FunctionConfig
    bundle_dir: str

    @property
    def key(self) -> str:
        return f"{self.function_name}:{self.number}"


@dataclass(frozen=True)
class TemplatePolicy:
    """When a pool keeps a version template (the tier between "nothing" and "warm instances")."""

    enabled: bool = True
    idle_s: float = 1800.0
    minute_s: float = 60.0
    """Seconds per keep-alive policy minute (60; tests shrink it)."""
    per_instance: dict[str, str] = field(default_factory=dict, compare=False)
    """Template key -> why that version uses per-instance init (what its version template found
    at import). Shared by the pools of one scheduler, so a version that scales to zero and back
    is not checked again; ``Pool.restart`` forgets it."""


class Pool:
    def __init__(
        self,
        version: VersionInfo,
        backend: Backend,
        template_policy: TemplatePolicy | None = None,
        breaker_policy: BreakerPolicy | None = None,
        leases: SlotLeases = LOCAL,
    ) -> None:
        self.version = version
        self.leases = leases
        """Slots of ``max_instances`` shared with other gateways (scaling/leases.py)."""
        self._lease: str | None = None  # taken by _can_start, spent by the next _start_instance
        self._leases: dict[str, str] = {}  # instance id -> its lease
        self.template_policy = template_policy or TemplatePolicy()
        self.template_key = f"{version.key}:{version.content_sha256[:16]}"
        self._template_task: asyncio.Task[None] | None = None
        self._template_failed = False  # provisioned instances then start without a template
        self._template_error: str | None = None
        self.callers = 0
        """Invocations placed on this pool and not finished (the scheduler counts them)."""
        self.last_activity = time.monotonic()
        self._boots: set[asyncio.Task[None]] = set()
        self.batcher: Any = None
        """The version's ``coldbrew.batching.Batcher``, made on first use by the scheduler."""
        self.config = version.config
        self.backend = backend
        self.instances: list[Instance] = []
        self.waiters: deque[asyncio.Future[Instance]] = deque()
        self.breaker = Breaker(breaker_policy)
        """Start failures of this version (one breaker per pool: a new version starts closed)."""
        self._start_error: BaseException | None = None
        self._overdue: set[asyncio.Future[Instance]] = set()
        """Queued callers past their deadline, waiting for a start's verdict (no instance
        serves): a failed start wakes them with its error."""
        self.closed = False
        self.cold_starts = 0
        self.recent_cold_starts: deque[dict[str, object]] = deque(maxlen=20)
        """Where the time of the last cold starts went (GET /v1/functions/{name})."""
        self.keep_warm = version.config.min_instances
        self.provisioned_active = True
        """Whether an alias points here, so scheduled provisioned concurrency applies."""
        self.keepalive = self._keepalive()
        """Instances kept alive with no traffic: min_instances while an alias points here."""

    @property
    def function_name(self) -> str:
        return self.version.function_name

    # --- acquiring a slot -----------------------------------------------------------------------
    def _keepalive(self) -> KeepAlive | None:
        if self.config.keep_alive == "fixed":
            return None  # plain per-instance idle_timeout_s, applied in reap()
        policy = self.template_policy
        template_minutes = policy.idle_s / policy.minute_s if policy.enabled else 0.0
        return KeepAlive(
            policy_named(
                self.config.keep_alive,
                self.config.idle_timeout_s,
                policy.minute_s,
                template_minutes,
            ),
            policy.minute_s,
        )

    def _busy(self) -> bool:
        return bool(self.waiters) or any(i.inflight for i in self.instances)

    async def acquire(self) -> tuple[Instance, bool]:
        """A reserved slot on a ready instance, and whether this invocation is its cold start."""
        if self.closed:
            raise errors.NotFound(f"version {self.version.key} was removed")
        if self.keepalive is not None and not self._busy():
            self.keepalive.on_busy(time.monotonic())
        instance = self._free_instance()
        if instance is not None:
            return instance, instance.reserve()
        if self._can_start():
            if not self._may_start():
                raise self._init_error()
            instance = self._start_instance()
            cold = instance.reserve()
            try:
                await asyncio.wait_for(asyncio.shield(instance.ready), START_TIMEOUT_S)
            except BaseException:
                failed = self._failed_start(instance)
                instance.release()
                instance.kill()
                if failed:
                    raise self._init_error() from None
                raise
            return instance, cold
        return await self._wait_for_slot()

    def _free_instance(self) -> Instance | None:
        # Prefer the most recently used: it is warmest, and the others can age out.
        best: Instance | None = None
        for instance in self.instances:
            if (
                instance.state is State.READY
                and instance.free_slots > 0
                and (best is None or instance.last_used > best.last_used)
            ):
                best = instance
        return best

    def _can_start(self) -> bool:
        if len(self.instances) >= self.config.max_instances:
            return False
        if self._lease is None:  # other gateways' instances count too (scaling/leases.py)
            self._lease = self.leases.take(self.template_key, self.config.max_instances)
        return self._lease is not None

    async def _wait_for_slot(self) -> tuple[Instance, bool]:
        if not self.breaker.closed and not self._serving():
            raise self._init_error()  # nothing to wait for: no instance can start now
        if len(self.waiters) >= self.config.max_queue:
            raise self.throttled("the queue is full")
        waiter: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        done, _ = await asyncio.wait({waiter}, timeout=self.config.queue_timeout_s)
        if not done:
            done = await self._await_start_verdict(waiter)
        if not done:
            waiter.cancel()
            self.waiters.remove(waiter)
            raise self.throttled(f"no instance was free within {self.config.queue_timeout_s:g} s")
        instance = waiter.result()
        return instance, instance.invocations == 1 and not instance.prewarmed

    async def _await_start_verdict(self, waiter: asyncio.Future[Instance]) -> set[Any]:
        """Past its queue deadline, a caller of a version with no instance serving waits for
        the start under way, as the caller who began it does: a start that fails then wakes
        it with INIT_ERROR (``_start_failed``), never a 429 that hides why. Empty: no start is
        under way (or it ended and left no free slot), so the caller is throttled."""
        deadline = time.monotonic() + START_TIMEOUT_S
        self._overdue.add(waiter)
        try:
            while not waiter.done() and not self._serving():
                starting = [
                    i.ready for i in self.instances if i.state is State.STARTING and not i.killed
                ]
                remaining = deadline - time.monotonic()
                if not starting or remaining <= 0:
                    break
                await asyncio.wait(
                    {waiter, *starting}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
        except asyncio.CancelledError:  # the caller went away: no slot may be reserved for it
            waiter.cancel()
            with contextlib.suppress(ValueError):
                self.waiters.remove(waiter)
            raise
        finally:
            self._overdue.discard(waiter)
        if not waiter.done() and (instance := self._free_instance()) is not None:
            self.waiters.remove(waiter)  # the start succeeded: its first free slot is ours
            instance.reserve()
            waiter.set_result(instance)
        return {waiter} if waiter.done() else set()

    def throttled(self, why: str) -> errors.Throttled:
        retry_after = max(1, math.ceil(min(self.config.timeout_s, 5.0)))
        return errors.Throttled(
            f"function '{self.version.function_name}' is at max_instances="
            f"{self.config.max_instances} x concurrency={self.config.concurrency} and {why}; "
            "retry later",
            retry_after_s=retry_after,
        )

    def release(self, instance: Instance) -> None:
        instance.release()
        self.last_activity = time.monotonic()
        self._dispatch()
        if self.keepalive is not None and not self._busy():
            self.keepalive.on_idle(self.last_activity)

    def _dispatch(self) -> None:
        """Hand free slots to queued invocations, starting instances while capacity allows."""
        while self.waiters:
            instance = self._free_instance()
            if instance is None:
                break
            waiter = self.waiters.popleft()
            if waiter.done():
                continue
            instance.reserve()
            waiter.set_result(instance)
        starting = sum(1 for i in self.instances if i.state is State.STARTING)
        while self.waiters and starting < len(self.waiters) and self._can_start():
            if not self._may_start():
                break
            self._start_instance()
            starting += 1

    # --- starting and stopping ------------------------------------------------------------------
    def _start_instance(self, prewarm: bool = False) -> Instance:
        instance = Instance(
            uuid.uuid4().hex[:16],
            self.version.key,
            self.config.concurrency,
            self.backend,
            self._on_exit,
        )
        instance.prewarmed = prewarm
        lease, self._lease = self._lease, None
        if lease is None:  # a replacement or provisioned start that did not ask _can_start
            lease = self.leases.take(self.template_key, self.config.max_instances)
        if lease is not None:
            self._leases[instance.id] = lease
        self.instances.append(instance)
        if not prewarm:
            self.cold_starts += 1
        boot = asyncio.create_task(self._boot(instance))
        self._boots.add(boot)  # the loop only keeps weak references to tasks
        boot.add_done_callback(self._boots.discard)
        return instance

    def _spec(self, instance_id: str, template_key: str | None) -> InstanceSpec:
        return InstanceSpec(
            instance_id=instance_id,
            function_name=self.version.function_name,
            version=str(self.version.number),
            bundle_dir=self.version.bundle_dir,
            config=self.config.to_json_dict(),
            memory_mb=self.config.memory_mb,
            environment=dict(self.config.environment),
            template_key=template_key,
        )

    async def _boot(self, instance: Instance) -> None:
        spec = self._spec(instance.id, self.template_key)
        booted = time.perf_counter()
        if self._template_task is not None:
            # The version template is being built: fork from it rather than load the model once
            # more, so this instance shares the model's memory with the others.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._template_task), START_TIMEOUT_S)
        try:
            spawned = await self.backend.spawn(spec)
        except Exception as exc:
            log.exception("could not start an instance of %s", self.version.key)
            error = (
                exc
                if isinstance(exc, errors.ColdbrewError)
                else errors.InstanceCrashed(f"could not start an instance: {exc}")
            )
            instance.state = State.DEAD
            if not instance.ready.done():
                instance.ready.set_exception(error)
                instance.ready.exception()
            self._on_exit(instance)
            return
        instance.attach(spawned, booted)
        if self.closed or instance.killed:
            # Stopped (function deleted, pool closed) while its process was being forked: the
            # kill could not reach a pid that did not exist yet, so send it now.
            instance.backend.kill(instance.id)
        try:
            await instance.ready
        except errors.ColdbrewError:
            return
        self.breaker.on_success()
        self._dispatch()
        self._ensure_template()

    # --- the version template tier --------------------------------------------------------------
    def _ensure_template(self) -> None:
        """Keep a template of this version, so the next cold start forks with the model loaded."""
        if (
            not self.template_policy.enabled
            or self.closed
            or self._template_task is not None
            or self.backend.has_version_template(self.template_key)
            or self.per_instance_reason() is not None
        ):
            return
        template_spec = self._spec("tpl-" + uuid.uuid4().hex[:12], None)
        self._template_task = asyncio.create_task(self._start_template(template_spec))

    async def _start_template(self, spec: InstanceSpec) -> None:
        try:
            await self.backend.start_version_template(self.template_key, spec)
        except ForkUnsafe as exc:
            # Not a failure: this version's instances import the handler themselves, for good.
            self.template_policy.per_instance[self.template_key] = exc.reason
            log.warning("%s uses per-instance init: %s", self.version.key, exc.reason)
        except Exception as exc:
            # Instances still start from the runtime template, only slower.
            log.warning("no version template for %s: %s", self.version.key, exc)
            self._template_failed = True
            self._template_error = getattr(exc, "message", None) or str(exc)
        finally:
            self._template_task = None
        if self.closed:
            self.backend.stop_version_template(self.template_key)
        else:
            self.ensure_min_instances()  # provisioned instances were waiting for the template

    def record_cold_start(
        self, request_id: str, queue_ms: float, start: dict[str, object], first_ms: float
    ) -> None:
        self.recent_cold_starts.append(
            {
                "request_id": request_id,
                "at": time.time(),
                "queue_ms": round(queue_ms, 3),
                **start,
                "first_invocation_ms": round(first_ms, 3),
            }
        )

    def tier(self) -> str:
        """The warmest thing this version holds: instances, its version template, or only the
        shared runtime template."""
        if any(i.state is State.READY for i in self.instances):
            return "instances"
        if self.has_template():
            return "version_template"
        return "runtime_template"

    def forgettable(self) -> bool:
        """Nothing here needs the pool object: no instances, queue, template (or one being
        built), provisioned target or keep-alive history worth keeping."""
        return (
            not self.instances
            and not self.waiters
            and self.callers == 0
            and self.keep_warm == 0
            and self._template_task is None
            and not self.has_template()
            and self.breaker.settled(time.monotonic())
            and (self.keepalive is None or not self.provisioned_active)
        )

    def has_template(self) -> bool:
        return self.backend.has_version_template(self.template_key)

    def per_instance_reason(self) -> str | None:
        """Why this version's instances each run the handler's import themselves, if they do."""
        if self.config.init == "per-instance":
            return 'init = "per-instance" in coldbrew.toml'
        return self.template_policy.per_instance.get(self.template_key)

    def template_status(self) -> str:
        """Where this version's instances fork from, in words (``coldbrew info``)."""
        reason = self.per_instance_reason()
        if reason is not None:
            return f"per-instance init ({reason})"
        if self.has_template():
            return "version template"
        if self._template_task is not None:
            return "version template (loading)"
        if self._template_error is not None:
            return f"runtime template (the version template failed: {self._template_error})"
        return "runtime template"

    def release_template_if_idle(self, now: float) -> None:
        if self.keepalive is not None:
            if (
                self.has_template()
                and not self.instances
                and not self.keepalive.wants_template(now)
            ):
                self.backend.stop_version_template(self.template_key)
            return
        if (
            self.has_template()
            and not self.instances
            and not self.waiters
            and now - self.last_activity >= self.template_policy.idle_s
        ):
            self.backend.stop_version_template(self.template_key)

    def _on_exit(self, instance: Instance) -> None:
        if instance in self.instances:
            self.instances.remove(instance)
        if (lease := self._leases.pop(instance.id, None)) is not None:
            self.leases.give_back(self.template_key, lease)
        if self._failed_start(instance):
            self._start_failed(instance)
        elif instance.killed and instance.state is State.DEAD and instance.init_ms is None:
            self.breaker.on_abandoned()  # a trial start the platform stopped: no verdict
        if not self.closed:
            self._dispatch()

    # --- the start-failure breaker --------------------------------------------------------------
    def _may_start(self) -> bool:
        """Whether the breaker lets an instance start now (in half-open: this is the trial)."""
        return self.breaker.allow_start(time.monotonic())

    def _serving(self) -> bool:
        return any(i.state is State.READY and not i.killed for i in self.instances)

    def _failed_start(self, instance: Instance) -> bool:
        """The instance's own start failed (import, model load, crash during init); not a
        spawn the backend could not make, nor a kill by the platform."""
        ready = instance.ready
        return (
            not self.closed
            and not instance.killed
            and instance.pid is not None
            and ready.done()
            and not ready.cancelled()
            and ready.exception() is not None
        )

    def _start_failed(self, instance: Instance) -> None:
        self._start_error = instance.ready.exception()
        self.breaker.on_failure(time.monotonic())
        if self._serving():
            return  # queued callers get a running instance
        overdue = [w for w in self.waiters if w in self._overdue and not w.done()]
        for waiter in overdue:  # past their queue deadline, they waited for this verdict
            self.waiters.remove(waiter)
            waiter.set_exception(self._init_error())
        if self.breaker.closed:
            return  # the others get the next start
        log.warning(
            "%s: instances keep failing to start (breaker open, next start in %.1f s): %s",
            self.version.key,
            self.breaker.retry_after_s(time.monotonic()),
            getattr(self._start_error, "message", self._start_error),
        )
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(self._init_error())  # one each: tracebacks are per raise
        self.waiters.clear()

    def _init_error(self) -> errors.InitError:
        """What callers get while this version cannot start: the user code's error type and
        message, and when coldbrew will try again."""
        error_type, message, module, kind = start_failure(self._start_error)
        retry = max(1, math.ceil(self.breaker.retry_after_s(time.monotonic())))
        when = "the next invocation tries again" if self.breaker.closed else f"retried in {retry} s"
        return errors.InitError(
            f"function '{self.version.function_name}' version {self.version.number} cannot "
            f"start an instance: {error_type}: {message} ({when}; a fixed deploy makes a new "
            "version, which starts afresh)",
            error_type,
            message,
            module or self.config.handler.partition(":")[0],
            retry,
            kind,
        )

    def reap(self, now: float | None = None) -> int:
        """Stop instances idle past idle_timeout_s (or outside the keep-alive policy's window),
        keeping the provisioned ones; pre-warm when the policy says so. Returns how many
        instances were stopped."""
        now = time.monotonic() if now is None else now
        if self.leases is not LOCAL:
            if self.waiters:
                self._dispatch()  # a slot another gateway leased may be free again
            self._yield_slots()
        keep = self.keep_warm
        if self.keepalive is not None:
            return self._apply_keepalive(self.keepalive, now, keep)
        idle = sorted(
            (i for i in self.instances if i.state is State.READY and i.inflight == 0),
            key=lambda i: i.last_used,
        )
        live = len(self.instances)
        stopped = 0
        for instance in idle:
            if live - stopped <= keep:
                break
            if now - instance.last_used >= self.config.idle_timeout_s:
                instance.stop()
                stopped += 1
        return stopped

    def _yield_slots(self) -> None:
        """Other gateways wait for slots of this version while this one holds more than its
        fair share (scaling/leases.py): retire that many instances, idle ones first; their
        slots go back as they end."""
        retiring = sum(1 for i in self.instances if i.killed and i.state is not State.DEAD)
        count = self.leases.surplus(self.template_key) - retiring
        live = [i for i in self.instances if i.state is State.READY and not i.killed]
        for instance in sorted(live, key=lambda i: (i.inflight, i.last_used))[: max(0, count)]:
            self._retire(instance)

    def _retire(self, instance: Instance) -> None:
        """Stop it now if idle; else it takes no new work and stops after its invocations."""
        if instance.inflight == 0:
            instance.stop()
            return
        instance.killed = True
        drain = asyncio.create_task(self._drain(instance))
        self._boots.add(drain)
        drain.add_done_callback(self._boots.discard)

    def _apply_keepalive(self, keepalive: KeepAlive, now: float, keep: int) -> int:
        if (
            keepalive.should_prewarm(now)
            and not self.instances
            and not self.closed
            and self._may_start()
        ):
            self._start_instance(prewarm=True)
            return 0
        if keepalive.wants_instance(now):
            return 0
        idle = [i for i in self.instances if i.state is State.READY and i.inflight == 0]
        stoppable = max(0, len(self.instances) - keep)
        for instance in idle[:stoppable]:
            instance.stop()
        return min(stoppable, len(idle))

    def ensure_min_instances(self) -> None:
        """Provisioned concurrency: keep these instances alive even with no traffic.

        The version template comes first: every provisioned instance forks from it and shares
        one copy of the model, instead of the first loading a private copy of its own. If the
        template cannot be built, instances start from the runtime template instead."""
        while not self.closed and len(self.instances) < self.keep_warm:
            if (
                self.template_policy.enabled
                and not self._template_failed
                and not self.has_template()
                and self.per_instance_reason() is None
            ):
                self._ensure_template()
                return  # _start_template calls back here once the template is up
            if not self._may_start():
                return  # the breaker is open: the reaper calls again after the backoff
            self._start_instance(prewarm=True)

    def due_for_warmup(self, now: float) -> list[Instance]:
        """Idle provisioned instances not used for ``warmup_interval_s``, slots reserved."""
        interval = self.config.warmup_interval_s
        if interval is None or self.keep_warm == 0:
            return []
        due = [
            i
            for i in self.instances
            if i.state is State.READY and i.inflight == 0 and now - i.last_used >= interval
        ]
        for instance in due:
            instance.inflight += 1  # a slot, without counting it as an invocation
        return due

    def restart(self) -> dict[str, int | bool]:
        """Replace this version's template and instances (code that read files at import).

        Idle instances stop now; busy ones take no new work and stop when their invocations
        finish. As many fresh instances as were live start behind them, and the next version
        template is built (and checked for fork safety) anew."""
        had_template = self.has_template()
        self.backend.stop_version_template(self.template_key)
        self.template_policy.per_instance.pop(self.template_key, None)
        self._template_failed, self._template_error = False, None
        self.breaker, self._start_error = Breaker(self.breaker.policy), None  # starts afresh
        old = [i for i in self.instances if i.state is State.READY and not i.killed]
        for instance in old:
            self._retire(instance)
        for _ in range(min(len(old), self.config.max_instances)):
            if not self._can_start_replacement():
                break
            self._start_instance(prewarm=True)
        return {"instances_replaced": len(old), "template_replaced": had_template}

    def _can_start_replacement(self) -> bool:
        live = sum(1 for i in self.instances if not i.killed)
        return live < self.config.max_instances

    async def _drain(self, instance: Instance) -> None:
        while instance.inflight > 0 and instance.state is not State.DEAD:
            await asyncio.sleep(0.05)
        instance.backend.kill(instance.id)

    async def close(self) -> None:
        self.closed = True
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(errors.NotFound(f"version {self.version.key} was removed"))
        self.waiters.clear()
        if self._lease is not None:
            self.leases.give_back(self.template_key, self._lease)
            self._lease = None
        self.backend.stop_version_template(self.template_key)
        instances = list(self.instances)
        for instance in instances:
            instance.stop()
        await asyncio.gather(*(i.wait_closed() for i in instances), return_exceptions=True)

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version.number,
            "instances": [i.describe() for i in self.instances],
            "queued": len(self.waiters),
            "cold_starts": self.cold_starts,
            "recent_cold_starts": list(self.recent_cold_starts),
            "version_template": self.has_template(),
            "version_template_pid": self.backend.version_template_pid(self.template_key),
            "template": self.template_status(),
            "tier": self.tier(),
            "keep_alive": self.config.keep_alive,
            "provisioned": self.keep_warm,
            "breaker": self.breaker.describe(time.monotonic()),
        }
