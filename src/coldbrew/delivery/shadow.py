"""Shadow traffic: a share of an alias's invocations is copied to a candidate version, after the
caller has its answer; the copy's result is compared with the caller's and thrown away.

What a shadow may cost the callers, and how it is kept to (almost) nothing:

- **On the caller's path**: the data plane hands each finished invocation of a shadowed alias
  to the shadow's offer (one dict lookup; none when nothing is shadowed), bound to its
  ``_Lane`` (the shadow's config, counts and candidate, resolved once when it is set). The
  offer draws the share, checks the candidate has room, and buffers the copy or creates its
  task: no await, no parse, no metric (the counts are plain integers that
  ``coldbrew_shadow_invocations`` reads when scraped); it never raises into the caller's path.
  A copy that is dropped costs a few attribute reads and one increment. The caller's answer is
  sent before the copy's task first runs.
- **A shadow never queues**: a copy starts only while the candidate has room for it (a free
  slot, or a place in the batch being formed: ``has_room``) and fewer than
  ``max_concurrency`` copies are in flight in all; otherwise it is dropped and counted. A slow
  or failing candidate cannot grow memory, and its callers never wait behind copies (beyond
  one batch, for a batched candidate).
- **Low priority** (the default): the candidate's instance processes run under the kernel's
  ``SCHED_IDLE`` policy, so on cores shared with the primary the kernel gives the copies only
  what the primary leaves (they never preempt it on wake-up, and weigh least)
  (docs/DELIVERY.md). On a busy machine copies then take longer, hold their slots, and the
  mirror drops more: the shadow yields instead of the callers. ``priority = "normal"`` keeps
  the candidate at the primary's priority (its latency comparable, its CPU competing).
- **The gateway's time too**: a low-priority shadow starts no copy while the gateway's event
  loop is busy: its thread was running or waiting for a CPU (not sleeping for events) more
  than ``BUSY_LOOP_SHARE`` of the last ticks, or a 50 ms sleep woke more than ``BUSY_LAG_S``
  late. The copy's part in the gateway (sending,
  metering, comparing) runs on that one thread and would otherwise be taken from the callers
  where the gateway is what limits their throughput; below the bound the loop has time to
  spare, and copies take it (the share they add closes the gate again: the mirror settles where
  the loop keeps headroom).
- **Low priority copies go in bursts** to a batched candidate: ``offer`` only appends the copy
  to the candidate's buffer, and the buffer goes out as one burst (one call of the candidate's
  batch handler on one instance slot, past its batcher: ``Scheduler.invoke_burst``, metered as
  one invocation of ``batch_size`` copies) when it holds ``burst_size`` copies or
  ``BURST_WAIT_S`` after its first, and only while no earlier burst runs on the candidate and
  nothing waits in its batcher; a full buffer drops. A copy in a burst costs the gateway one
  batch item and one comparison: no task, outcome, metric update or meter row of its own (one
  by one through the data plane, those were most of a copy's cost: docs/BENCHMARKS.md).
  While the loop is busy only the timer sends a burst: at most one every ``BURST_WAIT_S``, a
  bounded sliver of the loop's time in place of none. Copies are not latency-bound, and a
  model's batch of 64 rows costs its instance a fraction of 64 single calls: the candidate's
  CPU, which on shared cores slows the primary whatever its priority (caches, memory
  bandwidth), shrinks with it (under full load that CPU is what the gate spares the primary:
  bursts let through there cost it 7-8 %, docs/BENCHMARKS.md).
- **Comparison off the path**: in the copy's (or the burst's) task; byte-identical answers
  agree without being parsed.

Where a shadow lives: its configuration is a row of the registry (``registry/shadows.py``), so
it survives a restart and every gateway sharing the registry applies the same set: each mirror
loads the rows at start and re-reads them every ``SYNC_INTERVAL_S`` (as gateways learn alias
changes, by re-reading). The counts are each gateway's own. The hot path never reads the
registry: ``offer`` looks only at what the last pass applied.

Agreement (``agree``, pure) is "the same answer": equal labels and strings, numbers within a
relative/absolute ``tolerance``, element by element in lists and objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from coldbrew import errors
from coldbrew.core.outcome import Outcome
from coldbrew.dataplane.plane import Admitted, DataPlane
from coldbrew.dataplane.request import InvocationRequest
from coldbrew.ids import new_request_id
from coldbrew.observe.window import percentile
from coldbrew.registry.shadows import ShadowRecord, ShadowStore
from coldbrew.scaling.pool import Pool

log = logging.getLogger("coldbrew.shadow")
LATENCIES_KEPT = 2000
LOW = os.SCHED_IDLE
"""The candidate's instances under a low-priority shadow: Linux's policy for background work
(the lowest CPU weight, and a waking idle-policy thread never preempts a normal one; nice 19
alone was not enough: a short copy that wakes gets its slice soon, at the primary's expense)."""
NORMAL = os.SCHED_OTHER
LAG_TICK_S = 0.05
BUSY_LAG_S = 0.005
"""A low-priority shadow starts no copy while the gateway's event loop runs this late: the
copy's gateway part (sending, metering, comparing) would be taken from the callers."""
BUSY_LOOP_SHARE = 0.6
"""... nor while the loop's thread was busy (running, or runnable and waiting for a CPU) this
share of the time (smoothed over ticks). A loop this busy is near what limits the callers'
throughput (one thread per gateway); the headroom above it absorbs bursts of the primary's own
traffic. Waiting for a CPU counts: on a saturated machine a loop that gets half a core is not
half idle."""
LOOP_SMOOTHING = 0.5
"""Weight of the newest tick in the loop's smoothed CPU share (a tick is 50 ms: ~4 ticks)."""
BURST_MAX = 64
"""Most copies one low-priority burst holds (and the candidate's ``max_batch_size`` at most)."""
BURST_WAIT_S = 0.5
"""How long a low-priority burst waits to fill after its first copy; while the loop is busy,
the only way a burst goes (one per this interval)."""
SYNC_INTERVAL_S = 2.0
"""How often a gateway re-reads the registry's shadows: a shadow set or stopped through another
gateway (or removed with its function or version) applies here within this."""
Priority = Literal["low", "normal"]
RESULTS = ("agree", "disagree", "error", "dropped")


def agree(a: Any, b: Any, tolerance: float = 1e-6) -> bool:
    """Whether two results are the same answer (numbers within ``tolerance``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(agree(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(agree(a[k], b[k], tolerance) for k in a)
    return bool(a == b)


class Answer(Protocol):
    """What a copy's result is compared by: an invocation's ``Outcome`` or one item of a
    burst's batch result."""

    @property
    def body(self) -> bytes: ...

    @property
    def error(self) -> object | None: ...


@dataclass(frozen=True)
class ShadowConfig:
    function: str
    alias: str
    version: int
    """The candidate version the copies run on."""
    fraction: float
    """Share of the alias's invocations copied, in (0, 1]."""
    tolerance: float = 1e-6
    ignore: tuple[str, ...] = ()
    """Top-level keys of the result left out of the comparison (e.g. ``version``)."""
    priority: Priority = "low"
    """``low``: the candidate's instances run as SCHED_IDLE (the copies take only idle CPU)."""

    @property
    def candidate_key(self) -> str:
        """The candidate's pool key in the scheduler (``VersionInfo.key``)."""
        return f"{self.function}:{self.version}"


@dataclass
class ShadowStats:
    mirrored: int = 0
    dropped: int = 0
    compared: int = 0
    agreed: int = 0
    primary_errors: int = 0
    shadow_errors: int = 0
    primary_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES_KEPT))
    shadow_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES_KEPT))

    def to_dict(self) -> dict[str, Any]:
        def p(values: deque[float], q: float) -> float | None:
            return percentile(sorted(values), q)

        done = self.mirrored
        offered = self.mirrored + self.dropped
        return {
            "mirrored": self.mirrored,
            "dropped": self.dropped,
            "mirrored_share": self.mirrored / offered if offered else None,
            "compared": self.compared,
            "agreed": self.agreed,
            "agreement_rate": self.agreed / self.compared if self.compared else None,
            "primary_errors": self.primary_errors,
            "shadow_errors": self.shadow_errors,
            "shadow_error_rate": self.shadow_errors / done if done else None,
            "primary_p50_ms": p(self.primary_ms, 50),
            "primary_p95_ms": p(self.primary_ms, 95),
            "shadow_p50_ms": p(self.shadow_ms, 50),
            "shadow_p95_ms": p(self.shadow_ms, 95),
        }


def parse_priority(body: dict[str, Any]) -> Priority:
    """The ``priority`` of a shadow's REST body: ``low`` (the default) or ``normal``."""
    priority = body.get("priority", "low")
    if priority == "low" or priority == "normal":
        return priority
    raise errors.ValidationError("priority is 'low' or 'normal'")


def has_room(pool: Pool | None, in_flight: int) -> bool:
    """Whether the candidate can take one more copy without queueing it behind others:
    ``in_flight`` (this mirror's copies on it) under its capacity. A batched candidate takes
    copies into the batch being formed (at most one batch waits: copies are not latency-bound,
    and in batches they cost the gateway and the instance a fraction of one call each); an
    unbatched one only while it has a free slot and no one waits on its pool."""
    if pool is None or pool.closed:
        return in_flight == 0  # its first copy starts it; the capacity is known after
    slots = pool.config.max_instances * pool.config.concurrency
    batcher = pool.batcher
    if batcher is not None:
        size = batcher.config.max_batch_size
        return len(batcher.queue) < size and in_flight < (slots + 1) * size
    return not pool.waiters and in_flight < slots


def loop_busy_s() -> float:
    """Seconds the calling thread has been running or runnable (waiting for a CPU): Linux's
    ``/proc/thread-self/schedstat`` (on-CPU and run-queue nanoseconds). Where that file is
    missing, the thread's CPU time alone (which misses the waits of a starved loop)."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as stat:
            on_cpu, waiting = stat.read().split()[:2]
        return (int(on_cpu) + int(waiting)) / 1e9
    except (OSError, ValueError):
        return time.thread_time()


@dataclass(slots=True)
class _Lane:
    """One shadow's state on the hot path, resolved once when the shadow is set."""

    config: ShadowConfig
    stats: ShadowStats
    candidate: str
    """The candidate's pool key (``ShadowConfig.candidate_key``, formatted once)."""
    low: bool
    """``priority == "low"``."""


@dataclass(slots=True)
class _Copy:
    """A copy waiting in a low-priority burst, or running."""

    lane: _Lane
    request: InvocationRequest
    primary: Outcome


class _Results(Collector):
    """``coldbrew_shadow_invocations``, read from the shadows' counts when scraped (the hot path
    only increments integers)."""

    def __init__(self, mirror: ShadowMirror) -> None:
        self.mirror = mirror

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "coldbrew_shadow_invocations",
            "Shadow copies by result (agree, disagree, error, dropped)",
            labels=["function", "alias", "version", "result"],
        )
        for (function, alias), lane in sorted(self.mirror._lanes.items()):
            s, version = lane.stats, str(lane.config.version)
            counts = (s.agreed, s.compared - s.agreed, s.shadow_errors, s.dropped)
            for result, value in zip(RESULTS, counts, strict=True):
                family.add_metric([function, alias, version, result], value)
        yield family


def burst_size(pool: Pool) -> int:
    """Copies per low-priority burst to a batched candidate: one batch of it, at most
    ``BURST_MAX``."""
    batcher = pool.batcher
    assert batcher is not None
    return max(1, min(BURST_MAX, batcher.config.max_batch_size))


def set_policy(pid: int, policy: int) -> bool:
    """Put every thread of process ``pid`` under scheduling ``policy`` (Linux policies are per
    thread; a thread started later inherits its creator's). False when the process is gone or
    not ours (leaving SCHED_IDLE needs CAP_SYS_NICE, or an RLIMIT_NICE that allows it)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    done = False
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(tid, policy, os.sched_param(0))
            done = True
    return done


class ShadowMirror:
    def __init__(
        self,
        dataplane: DataPlane,
        registry: CollectorRegistry | None = None,
        max_concurrency: int = 32,
        rand: Any = random.random,
        local_processes: bool | None = None,
        store: ShadowStore | None = None,
        sync_interval_s: float = SYNC_INTERVAL_S,
    ) -> None:
        self.dataplane = dataplane
        self.store = store
        """Where the shadows are kept (shared by the gateways of one registry); None: only in
        this mirror's memory (tests)."""
        self.sync_interval_s = sync_interval_s
        self.max_concurrency = max_concurrency
        self.rand = rand
        if local_processes is None:  # instances on Ray nodes have pids of other machines
            settings = getattr(dataplane.scheduler.backend, "settings", None)
            local_processes = getattr(settings, "backend", "local") != "ray"
        self.local_processes = local_processes
        """Whether instance pids are processes of this machine (not on a Ray node), which
        a low-priority shadow may put under SCHED_IDLE."""
        self._lanes: dict[tuple[str, str], _Lane] = {}
        """Per shadow (function, alias): its config and counts (``configs``, ``stats``)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, int] = {}
        """Candidate pool key -> this mirror's copies running on it."""
        self._bursts: dict[str, list[_Copy]] = {}
        """Candidate pool key -> the low-priority copies waiting to go out as one burst."""
        self._burst_timers: dict[str, asyncio.TimerHandle] = {}
        self._idled: dict[str, set[int]] = {}
        """Candidate pool key -> pids of its instances this mirror put under SCHED_IDLE."""
        if registry is not None:
            registry.register(_Results(self))
        self.lag_s = 0.0
        """How late the event loop last woke a 50 ms sleep (measured while a low-priority shadow
        exists)."""
        self.loop_share = 0.0
        """The share of the last ticks the loop's thread was busy (smoothed): ``loop_busy_s``."""
        self.busy = False
        """Whether the gateway has no time for copies: ``lag_s`` over ``BUSY_LAG_S`` or
        ``loop_share`` over ``BUSY_LOOP_SHARE`` (updated each tick, read per offer)."""
        self._ticker: asyncio.Task[None] | None = None
        self._revisions: dict[tuple[str, str], datetime] = {}
        """Per shadow: the ``updated_at`` of the row applied (a newer one resets the counts)."""
        self._changes = 0
        """Bumped by each put/delete through this gateway: a registry pass that read before one
        of them is stale and not applied."""
        self._syncer: asyncio.Task[None] | None = None

    # --- configuration --------------------------------------------------------------------------
    @property
    def configs(self) -> dict[tuple[str, str], ShadowConfig]:
        return {key: lane.config for key, lane in self._lanes.items()}

    @property
    def stats(self) -> dict[tuple[str, str], ShadowStats]:
        """This gateway's counts per shadow (fresh each time the shadow is set)."""
        return {key: lane.stats for key, lane in self._lanes.items()}

    def set(self, config: ShadowConfig) -> None:
        key = (config.function, config.alias)
        old = self._lanes.get(key)
        low = config.priority == "low"
        self._lanes[key] = _Lane(config, ShadowStats(), config.candidate_key, low)
        if old is not None:
            self._restore_unless_shadowed(old.config)
        self._lower_priority(config)  # the candidate's instances that exist already
        self._sync()

    def remove(self, function: str, alias: str | None = None) -> list[ShadowConfig]:
        gone = [
            lane.config
            for (f, a), lane in self._lanes.items()
            if f == function and alias in (None, a)
        ]
        for config in gone:
            del self._lanes[(config.function, config.alias)]
        for config in gone:
            self._restore_unless_shadowed(config)
        self._sync()
        return gone

    def describe(self, function: str) -> list[dict[str, Any]]:
        return [
            {**asdict(lane.config), "percent": lane.config.fraction * 100, **lane.stats.to_dict()}
            for (f, _), lane in sorted(self._lanes.items())
            if f == function
        ]

    # --- the registry: shared by every gateway, re-read every few seconds -----------------------
    async def start(self) -> None:
        """Apply the registry's shadows, then follow its changes (no store: nothing to do)."""
        if self.store is None:
            return
        try:
            await self.refresh()
        except Exception:  # serve without shadows rather than not at all; the next pass retries
            log.exception("could not load the shadows from the registry")
        self._syncer = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
            self._syncer = None
        await self.drain()
        if self.store is not None:
            self.store.close()

    async def put(self, config: ShadowConfig) -> None:
        """Set a shadow in the registry (every gateway applies it) and here at once."""
        key = (config.function, config.alias)
        if self.store is not None:
            record = await asyncio.to_thread(
                self.store.put,
                config.function,
                config.alias,
                config.version,
                config.fraction,
                config.tolerance,
                config.ignore,
                config.priority,
            )
            self._revisions[key] = record.updated_at
        self._changes += 1
        self.set(config)

    async def delete(self, function: str, alias: str | None = None) -> list[str]:
        """Stop ``function``'s shadows (``alias``'s only, if given) in the registry and here;
        ``function:alias`` of each one stopped (in either)."""
        stored: list[ShadowRecord] = []
        if self.store is not None:
            stored = await asyncio.to_thread(self.store.delete, function, alias)
        self._changes += 1
        gone = {f"{c.function}:{c.alias}" for c in self.remove(function, alias)}
        for record in stored:
            self._revisions.pop((record.function, record.alias), None)
        return sorted(gone | {f"{r.function}:{r.alias}" for r in stored})

    async def refresh(self) -> None:
        """Read the registry's shadows and apply them (a pass raced by a local change is
        dropped: the next one sees that change too)."""
        if self.store is None:
            return
        changes = self._changes
        records = await asyncio.to_thread(self.store.all)
        if changes == self._changes:
            self.apply(records)

    def apply(self, records: list[ShadowRecord]) -> None:
        """Make this mirror's shadows the registry's: start the new or changed ones (fresh
        counts), stop the ones gone (stopped elsewhere, or their function or candidate version
        was deleted: the rows go with them)."""
        wanted = {(r.function, r.alias): r for r in records}
        for (function, alias), config in self.configs.items():
            if (function, alias) not in wanted:
                log.info(
                    "shadow of %s:%s to version %d stopped: it is no longer in the registry "
                    "(stopped through another gateway, or its function or version was deleted)",
                    function,
                    alias,
                    config.version,
                )
                self.remove(function, alias)
                self._revisions.pop((function, alias), None)
        for key, record in wanted.items():
            if key in self._lanes and self._revisions.get(key) == record.updated_at:
                continue  # unchanged: keep its counts
            if key not in self._lanes:
                log.info(
                    "shadow of %s:%s to version %d applied from the registry",
                    record.function,
                    record.alias,
                    record.version,
                )
            self.set(_config(record))
            self._revisions[key] = record.updated_at

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval_s)
            try:
                await self.refresh()
            except Exception:  # e.g. the database restarting: keep the shadows applied
                log.exception("could not re-read the shadows from the registry")

    def _sync(self) -> None:
        """What the data plane looks up per invocation: ``(function, qualifier)`` -> offer;
        the loop-lag ticker runs while a low-priority shadow exists."""
        low = any(lane.low for lane in self._lanes.values())
        if low and self._ticker is None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to measure
                self._ticker = asyncio.get_running_loop().create_task(self._measure_lag())
        elif not low and self._ticker is not None:
            self._ticker.cancel()
            self._ticker, self.lag_s, self.loop_share, self.busy = None, 0.0, 0.0, False
        hooks: dict[tuple[str, str | None], Callable[[InvocationRequest, Outcome], None]] = {}
        for (function, alias), lane in self._lanes.items():
            offer = functools.partial(self._offer, lane)
            hooks[(function, alias)] = offer
            if alias == "latest":  # a call without a qualifier is a call of `latest`
                hooks[(function, None)] = hooks[(function, "$LATEST")] = offer
        self.dataplane.shadows = hooks

    # --- the hot path ---------------------------------------------------------------------------
    def offer(self, request: InvocationRequest, outcome: Outcome) -> None:
        """Maybe copy this finished invocation of a shadowed alias to its candidate (what the
        data plane's hook does, looked up by name here); never blocks, never raises."""
        alias = request.qualifier if request.qualifier not in (None, "$LATEST") else "latest"
        lane = self._lanes.get((request.function, alias or "latest"))
        if lane is not None:
            self._offer(lane, request, outcome)

    def _offer(self, lane: _Lane, request: InvocationRequest, outcome: Outcome) -> None:
        if request.protocol == "shadow" or self.rand() >= lane.config.fraction:
            return
        candidate = lane.candidate
        pool = self.dataplane.scheduler.pools.get(candidate)
        if lane.low and pool is not None and pool.batcher is not None:
            self._buffer(candidate, pool, _Copy(lane, request, outcome))
            return
        in_flight = self._in_flight.get(candidate, 0)
        if (
            (lane.low and self.busy)  # the gateway has no time to spare
            or len(self._tasks) >= self.max_concurrency
            or not has_room(pool, in_flight)
        ):
            lane.stats.dropped += 1
            return
        self._in_flight[candidate] = in_flight + 1
        self._start(_Copy(lane, request, outcome))

    def _start(self, copy: _Copy) -> None:
        """The copy's task (counted in ``_in_flight`` by the caller)."""
        task = asyncio.get_running_loop().create_task(self._copy(copy))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _buffer(self, candidate: str, pool: Pool, copy: _Copy) -> None:
        """Into the candidate's next burst; out at once when that fills it and the candidate
        is free, else at the latest ``BURST_WAIT_S`` after the burst's first copy."""
        burst = self._bursts.get(candidate)
        if burst is None:
            burst = self._bursts[candidate] = []
        size = burst_size(pool)
        if len(burst) >= size:  # full, and an earlier burst still runs: the copy is dropped
            copy.lane.stats.dropped += 1
            return
        burst.append(copy)
        if len(burst) >= size and not self.busy:  # a busy loop: one burst per BURST_WAIT_S
            self._flush(candidate)
        elif candidate not in self._burst_timers:
            self._flush_later(candidate)

    def _flush_later(self, candidate: str) -> None:
        loop = asyncio.get_running_loop()
        self._burst_timers[candidate] = loop.call_later(BURST_WAIT_S, self._flush, candidate)

    def _flush_if_full(self, candidate: str) -> None:
        if self.busy:  # the timer sends it: one burst per BURST_WAIT_S while the loop is busy
            return
        pool = self.dataplane.scheduler.pools.get(candidate)
        burst = self._bursts.get(candidate, [])
        if pool is not None and pool.batcher is not None and len(burst) >= burst_size(pool):
            self._flush(candidate)

    def _flush(self, candidate: str) -> None:
        """Start the candidate's waiting burst, if the candidate is free for it; else look
        again after ``BURST_WAIT_S`` (the buffer meanwhile fills, then drops)."""
        timer = self._burst_timers.pop(candidate, None)
        if timer is not None:
            timer.cancel()
        burst = self._bursts.get(candidate)
        if not burst:
            return
        pool = self.dataplane.scheduler.pools.get(candidate)
        busy = pool is not None and pool.batcher is not None and bool(pool.batcher.queue)
        if self._in_flight.get(candidate, 0) > 0 or busy:
            self._flush_later(candidate)
            return
        del self._bursts[candidate]
        self._in_flight[candidate] = len(burst)
        task = asyncio.get_running_loop().create_task(self._burst(candidate, burst))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _measure_lag(self) -> None:
        """Each tick: how late the loop woke and how busy its thread was (this task runs on
        the loop's thread)."""
        loop = asyncio.get_running_loop()
        while True:
            started, busy = loop.time(), loop_busy_s()
            await asyncio.sleep(LAG_TICK_S)
            wall = loop.time() - started
            self.lag_s = wall - LAG_TICK_S
            share = (loop_busy_s() - busy) / wall if wall > 0 else 0.0
            self.loop_share += LOOP_SMOOTHING * (share - self.loop_share)
            self.busy = self.lag_s > BUSY_LAG_S or self.loop_share > BUSY_LOOP_SHARE

    # --- off the caller's path ------------------------------------------------------------------
    async def _copy(self, item: _Copy) -> None:
        lane, request, primary = item.lane, item.request, item.primary
        config, stats = lane.config, lane.stats
        copy = InvocationRequest(
            config.function,
            request.payload,
            new_request_id(),
            str(config.version),
            request.principal,
            protocol="shadow",
            kind=request.kind,
            client_context=request.client_context,
            check_schema=False,
            limited=False,  # the caller was charged once, for its own invocation
        )
        started = time.perf_counter()
        try:
            version = await self.dataplane.scheduler.resolve(config.function, str(config.version))
            self._lower_priority(config)
            outcome: Outcome | None = await self.dataplane.run(copy, Admitted(version, None))
        except errors.ColdbrewError:
            outcome = None
        except Exception:  # a copy must never take anything down with it
            log.exception("shadow copy of %s failed", config.function)
            outcome = None
        finally:
            candidate = lane.candidate
            left = self._in_flight[candidate] = self._in_flight[candidate] - 1
            if left == 0 and self._bursts.get(candidate):  # the next burst filled meanwhile?
                self._flush_if_full(candidate)
        self._lower_priority(config)  # an instance this copy started
        stats.mirrored += 1
        stats.shadow_ms.append((time.perf_counter() - started) * 1000)
        stats.primary_ms.append(primary.wall_ms)
        self._record(stats, primary, outcome, config)

    async def _burst(self, candidate: str, burst: list[_Copy]) -> None:
        """A low-priority burst as one call of the candidate's batch handler, past its
        batcher (``Scheduler.invoke_burst``): the gateway's part of a copy is one batch item
        and one comparison, with no task, outcome or meter row of its own (the burst is
        metered as one invocation, its duration and memory: what the copies cost)."""
        config = burst[0].lane.config  # every copy of a burst is of one function and version
        started = time.perf_counter()
        results: Sequence[Answer] | None = None
        try:
            version = await self.dataplane.scheduler.resolve(config.function, str(config.version))
            self._lower_priority(config)
            results = await self.dataplane.scheduler.invoke_burst(
                version,
                [copy.request.payload for copy in burst],
                protocol="shadow",
                caller=burst[0].request.principal.caller,
            )
        except errors.ColdbrewError:
            pass  # each copy counts as the candidate's error
        except Exception:  # a burst must never take anything down with it
            log.exception("shadow burst of %s failed", config.function)
        finally:
            left = self._in_flight[candidate] = self._in_flight[candidate] - len(burst)
            if left == 0 and self._bursts.get(candidate):  # the next burst filled meanwhile?
                self._flush_if_full(candidate)
        self._lower_priority(config)  # an instance this burst started
        if results is not None and len(results) != len(
            burst
        ):  # a runtime that broke the batch contract
            log.warning(
                "shadow burst of %s: %d results for %d copies",
                config.function,
                len(results),
                len(burst),
            )
            results = None
        shadow_ms = (time.perf_counter() - started) * 1000
        for i, copy in enumerate(burst):
            stats = copy.lane.stats
            stats.mirrored += 1
            stats.shadow_ms.append(shadow_ms)
            stats.primary_ms.append(copy.primary.wall_ms)
            shadow = None if results is None else results[i]
            self._record(stats, copy.primary, shadow, copy.lane.config)

    def _lower_priority(self, config: ShadowConfig) -> None:
        """SCHED_IDLE for the candidate's instances not set yet (each once: a few syscalls)."""
        if config.priority != "low" or not self.local_processes:
            return
        pool = self.dataplane.scheduler.pools.get(config.candidate_key)
        if pool is None:
            return
        done = self._idled.setdefault(config.candidate_key, set())
        live = {i.pid for i in pool.instances if i.pid is not None}
        for pid in live - done:
            if set_policy(pid, LOW):
                done.add(pid)
        done &= live  # forget instances that have gone

    def _restore_unless_shadowed(self, gone: ShadowConfig) -> None:
        """Back to the normal policy once no low-priority shadow runs copies on the
        candidate."""
        key = gone.candidate_key
        if any(lane.candidate == key and lane.low for lane in self._lanes.values()):
            return
        for pid in self._idled.pop(key, set()):
            set_policy(pid, NORMAL)

    @staticmethod
    def _record(
        stats: ShadowStats,
        primary: Outcome,
        shadow: Answer | None,
        config: ShadowConfig,
    ) -> None:
        """Count the copy's result (the metric reads these counts)."""
        if primary.error is not None:
            stats.primary_errors += 1
        if shadow is None or shadow.error is not None:
            stats.shadow_errors += 1
        elif primary.error is None:  # else nothing to compare a result with
            same = _same(primary.body, shadow.body, config)
            stats.compared += 1
            stats.agreed += same

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for the copies running; bursts not started yet are dropped."""
        for timer in self._burst_timers.values():
            timer.cancel()
        self._burst_timers.clear()
        self._bursts.clear()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)


def _config(record: ShadowRecord) -> ShadowConfig:
    return ShadowConfig(
        record.function,
        record.alias,
        record.version,
        record.fraction,
        record.tolerance,
        record.ignore,
        "normal" if record.priority == "normal" else "low",
    )


def _same(a: bytes, b: bytes, config: ShadowConfig) -> bool:
    if a == b:  # the common case: the same bytes are the same answer, whatever is ignored
        return True
    try:
        left, right = orjson.loads(a), orjson.loads(b)
    except orjson.JSONDecodeError:
        return False
    if config.ignore and isinstance(left, dict) and isinstance(right, dict):
        left = {k: v for k, v in left.items() if k not in config.ignore}
        right = {k: v for k, v in right.items() if k not in config.ignore}
    return agree(left, right, config.tolerance)
