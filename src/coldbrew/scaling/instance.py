"""The gateway's handle on one instance: its channel, its in-flight invocations, its fate.

A reader task turns frames into resolved futures. When the channel closes, every invocation
still in flight fails with the reason the instance died: killed for a timeout, over its memory,
or crashed on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import re
import time
from collections.abc import Callable

from coldbrew import errors
from coldbrew.backends.base import Backend, SpawnedInstance
from coldbrew.backends.process import Process
from coldbrew.runtime import messages as m

log = logging.getLogger("coldbrew.instance")
StreamOutput = m.StreamFrame | m.StreamEnded | m.StreamFeatures | Exception
"""What a stream session's queue carries: the handler's frames, its lookups, its end, or the
instance's death."""


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DEAD = "dead"


class Instance:
    def __init__(
        self,
        instance_id: str,
        version_key: str,
        concurrency: int,
        backend: Backend,
        on_exit: Callable[[Instance], None],
    ) -> None:
        self.id = instance_id
        self.version_key = version_key
        self.concurrency = concurrency
        self.backend = backend
        self.on_exit = on_exit
        self.state = State.STARTING
        self.pid: int | None = None
        self.process: Process | None = None
        """The process's handle (pid, is_alive, ping, terminate, kill), once attached."""
        self.inflight = 0
        self.invocations = 0
        self.created_at = time.monotonic()
        self.last_used = self.created_at
        self.init_ms: float | None = None
        self.start: dict[str, object] = {}
        """How this instance started: source, fork_ms, init_ms, start_ms (see Pool._boot)."""
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending: dict[int, asyncio.Future[m.Result | m.BatchResult]] = {}
        self._streams: dict[int, asyncio.Queue[StreamOutput]] = {}
        self._ids = itertools.count(1)
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._kill_reason: errors.ColdbrewError | None = None
        self.prewarmed = False
        """Started ahead of demand (provisioned or pre-warmed): its first call is not cold."""
        self.killed = False
        """Set as soon as a kill is sent, so no new work lands on it before its channel closes."""

    # --- capacity -------------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        if self.state is State.DEAD or self.killed:
            return 0
        return self.concurrency - self.inflight

    def reserve(self) -> bool:
        """Take one slot; returns whether this is the instance's first invocation (cold)."""
        self.inflight += 1
        self.invocations += 1
        return self.invocations == 1 and not self.prewarmed

    def release(self) -> None:
        self.inflight -= 1
        self.last_used = time.monotonic()

    # --- lifecycle ------------------------------------------------------------------------------
    def attach(self, spawned: SpawnedInstance, booted: float | None = None) -> None:
        """Take over a started process; ``booted`` is when its start was asked for."""
        self._booted = booted if booted is not None else time.perf_counter()
        self._forked = time.perf_counter()
        self._source = spawned.source
        self.pid = spawned.pid
        self.process = spawned.process
        self._writer = spawned.writer
        self._reader_task = asyncio.create_task(self._read(spawned.reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(m.HEADER.size)
                (size,) = m.HEADER.unpack(header)
                self._handle(m.decode_instance(await reader.readexactly(size)))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception:
            log.exception("bad frame from instance %s", self.id)
        finally:
            self._died()

    def _handle(self, message: m.InstanceMessage) -> None:
        if isinstance(message, m.StreamFrame | m.StreamEnded | m.StreamFeatures):
            stream = self._streams.get(message.id)
            if stream is not None:
                stream.put_nowait(message)
                if isinstance(message, m.StreamEnded):
                    del self._streams[message.id]
        elif isinstance(message, m.Result | m.BatchResult):
            future = self._pending.pop(message.id, None)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, m.Ready):
            self.state = State.READY
            self.init_ms = message.init_ms
            self.start = {  # before `ready` resolves: the first caller reads it
                "source": self._source,
                "fork_ms": round((self._forked - self._booted) * 1000, 3),
                "init_ms": round(message.init_ms, 3),
                "start_ms": round((time.perf_counter() - self._booted) * 1000, 3),
                "prewarmed": self.prewarmed,
            }
            if not self.ready.done():
                self.ready.set_result(None)
        elif isinstance(message, m.LoadFailed):
            self._kill_reason = _load_error(message.error)
            self.backend.kill(self.id)

    def _death_reason(self) -> errors.ColdbrewError:
        if self.backend.exceeded_memory(self.id):
            return errors.OutOfMemory(
                "the instance exceeded its memory_mb and was stopped; raise memory_mb or use less"
            )
        if self._kill_reason is not None:
            return self._kill_reason
        return errors.InstanceCrashed(
            f"the instance process (pid {self.pid}) exited unexpectedly; see `coldbrew logs` "
            "or the function's log file"
        )

    def _died(self) -> None:
        if self.state is State.DEAD:
            return
        was_starting = self.state is State.STARTING
        self.state = State.DEAD
        reason = self._death_reason()
        if not self.ready.done():
            self.ready.set_exception(reason)
            self.ready.exception()  # mark retrieved: a waiter may have gone already
        for future in self._pending.values():
            if not future.done():
                future.set_exception(reason)
        self._pending.clear()
        for stream in self._streams.values():
            stream.put_nowait(reason)
        self._streams.clear()
        if self._writer is not None:
            self._writer.close()
        self.backend.release(self.id)
        log.info(
            "instance %s (pid %s) of %s stopped: %s%s",
            self.id,
            self.pid,
            self.version_key,
            reason.message,
            " during start" if was_starting else "",
        )
        self.on_exit(self)

    def kill(self, reason: errors.ColdbrewError | None = None) -> None:
        if self.state is State.DEAD:
            return
        if reason is not None and self._kill_reason is None:
            self._kill_reason = reason
        self.killed = True
        self.backend.kill(self.id)

    def stop(self) -> None:
        """Scale-down: the instance is idle, so a kill loses nothing."""
        self.kill(errors.InstanceCrashed("the instance was stopped by the platform"))

    async def wait_closed(self) -> None:
        if self._reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

    # --- invoking -------------------------------------------------------------------------------
    async def invoke(self, invoke_fields: dict[str, object], timeout_s: float) -> m.Result:
        """Send one invocation and wait for its result; past ``timeout_s`` the instance is
        killed and replaced (a handler stuck in C code cannot be interrupted otherwise)."""
        result = await self._call(lambda i: m.Invoke(id=i, **invoke_fields), timeout_s)  # type: ignore[arg-type]
        assert isinstance(result, m.Result)
        return result

    async def invoke_batch(self, items: list[m.BatchItem], timeout_s: float) -> m.BatchResult:
        result = await self._call(lambda i: m.InvokeBatch(id=i, items=items), timeout_s)
        assert isinstance(result, m.BatchResult)
        return result

    def open_stream(self, fields: dict[str, object]) -> tuple[int, asyncio.Queue[StreamOutput]]:
        """Start the stream handler; its outputs (and its end, or this instance's death) arrive
        on the returned queue."""
        if self.state is State.DEAD or self._writer is None:
            raise self._death_reason()
        stream_id = next(self._ids)
        outputs: asyncio.Queue[StreamOutput] = asyncio.Queue()
        self._streams[stream_id] = outputs
        self._writer.write(m.encode(m.StreamOpen(id=stream_id, **fields)))  # type: ignore[arg-type]
        return stream_id, outputs

    def stream_send(self, stream_id: int, data: bytes, text: bool) -> None:
        if self._writer is not None and self.state is not State.DEAD:
            self._writer.write(m.encode(m.StreamFrame(id=stream_id, data=data, text=text)))

    def stream_close(self, stream_id: int) -> None:
        if self._writer is not None and self.state is not State.DEAD:
            self._writer.write(m.encode(m.StreamClose(id=stream_id)))

    async def _call(
        self, build: Callable[[int], m.Invoke | m.InvokeBatch], timeout_s: float
    ) -> m.Result | m.BatchResult:
        if self.state is State.DEAD or self._writer is None:
            raise self._death_reason()
        call_id = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[m.Result | m.BatchResult] = loop.create_future()
        self._pending[call_id] = future
        self._writer.write(m.encode(build(call_id)))
        # A timer on the future itself: wait_for(shield(future)) would add a shield future, a
        # waiter future and their callbacks to every call (a few us each, on the hot path).
        timer = loop.call_later(timeout_s, _expire, future)
        try:
            return await future
        except _Expired:
            self._pending.pop(call_id, None)
            self.kill(
                errors.InstanceCrashed(
                    "the instance was replaced because another invocation on it timed out"
                )
            )
            raise errors.InvocationTimeout(
                f"the invocation did not finish within timeout_s={timeout_s:g}"
            ) from None
        finally:
            timer.cancel()

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "pid": self.pid,
            "state": "busy" if self.inflight and self.state is State.READY else self.state.value,
            "inflight": self.inflight,
            "invocations": self.invocations,
            "idle_s": round(time.monotonic() - self.last_used, 3),
            "init_ms": self.init_ms,
        }


_IMPORT_FAILED = re.compile(
    r"cannot import handler module '(?P<module>[^']+)': (?P<type>[A-Za-z_][\w.]*): (?P<message>.*)",
    re.S,
)


def start_failure(reason: BaseException | None) -> tuple[str, str, str | None, str]:
    """Why an instance did not start, from the error its death left: ``(error type, message,
    handler module or None, kind)``, kind being ``import``, ``load``, ``memory`` or ``crash``.

    For a failed import these are the user code's own exception (``RuntimeError``, ``boom``),
    as the runtime reported it (``runtime/instance.py``), never a stack trace."""
    if isinstance(reason, errors.OutOfMemory):
        return "MemoryError", reason.message, None, "memory"
    if isinstance(reason, errors.DeployError):
        found = _IMPORT_FAILED.fullmatch(reason.message)
        if found:
            return found["type"], found["message"], found["module"], "import"
        return "LoadError", reason.message, None, "load"
    message = reason.message if isinstance(reason, errors.ColdbrewError) else str(reason)
    return "InstanceCrashed", message, None, "crash"


def _load_error(info: m.ErrorInfo) -> errors.ColdbrewError:
    if info.code == "OUT_OF_MEMORY":
        return errors.OutOfMemory(info.message)
    return errors.DeployError(info.message, errorType=info.type, stackTrace=info.stack)


class _Expired(Exception):
    """A call's timer went off before its result arrived."""


def _expire(future: asyncio.Future[m.Result | m.BatchResult]) -> None:
    if not future.done():
        future.set_exception(_Expired())
