"""A backend without processes, for tests of what sits above backends (pools, the scheduler,
the batcher, the data plane): each "instance" is an asyncio task in this process, speaking the
real framed protocol (``runtime.messages``) over a real socketpair, so ``scaling.Instance``
and everything above it run unchanged, in milliseconds instead of forks.

    backend = InProcessBackend({"echo": lambda event: event})
    backend.delay_s = 0.05          # each invocation takes 50 ms
    backend.fail_start = {"bad"}    # instances of 'bad' answer LoadFailed

It keeps count of what it was asked (``spawned``, ``killed``, ``templates``) so tests can tell
cold starts, reuse and scale-down apart. Not for serving: handlers run on the gateway's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import Callable
from typing import Any

import orjson

from coldbrew.backends.base import InstanceSpec, SpawnedInstance
from coldbrew.runtime import messages as m

Handler = Callable[[Any], Any]


class InProcessBackend:
    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        """Per function name: ``event -> result`` (a raised exception is a FUNCTION_ERROR)."""
        self.delay_s = 0.0
        self.init_s = 0.0
        """How long an instance takes to start (sleeps before Ready)."""
        self.fail_start: set[str] = set()
        self.spawned: list[InstanceSpec] = []
        self.killed: list[str] = []
        self.templates: dict[str, InstanceSpec] = {}
        self.batches: list[int] = []
        """The size of every batch an instance ran."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sockets: dict[str, socket.socket] = {}
        self._pids = itertools.count(100_000)

    # --- Backend protocol -----------------------------------------------------------------------
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for instance_id in list(self._tasks):
            self.kill(instance_id)
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def spawn(self, spec: InstanceSpec) -> SpawnedInstance:
        self.spawned.append(spec)
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        pid = next(self._pids)
        self._sockets[spec.instance_id] = theirs
        task = asyncio.create_task(self._serve(spec, theirs, pid))
        self._tasks[spec.instance_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(spec.instance_id, None))
        source = "version-template" if spec.template_key in self.templates else "runtime-template"
        process = TaskProcess(pid, task, lambda: self.kill(spec.instance_id))
        return SpawnedInstance(spec.instance_id, pid, reader, writer, source, process)

    async def start_version_template(self, key: str, spec: InstanceSpec) -> float:
        self.templates[key] = spec
        return 0.0

    def stop_version_template(self, key: str) -> None:
        self.templates.pop(key, None)

    def has_version_template(self, key: str) -> bool:
        return key in self.templates

    def version_template_pid(self, key: str) -> int | None:
        return 1 if key in self.templates else None

    def kill(self, instance_id: str) -> None:
        self.killed.append(instance_id)
        sock = self._sockets.pop(instance_id, None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        task = self._tasks.get(instance_id)
        if task is not None:
            task.cancel()

    def release(self, instance_id: str) -> None:
        self._sockets.pop(instance_id, None)

    def exceeded_memory(self, instance_id: str) -> bool:
        return False

    # --- the fake instance ----------------------------------------------------------------------
    async def _serve(self, spec: InstanceSpec, sock: socket.socket, pid: int) -> None:
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            await asyncio.sleep(self.init_s)
            if spec.function_name in self.fail_start:
                error = m.ErrorInfo("DEPLOY_ERROR", "ImportError", "the handler did not import")
                writer.write(m.encode(m.LoadFailed(pid=pid, error=error)))
                await writer.drain()
                return
            writer.write(m.encode(m.Ready(pid=pid, init_ms=self.init_s * 1000)))
            await writer.drain()
            handler = self.handlers[spec.function_name]
            while True:
                header = await reader.readexactly(m.HEADER.size)
                (size,) = m.HEADER.unpack(header)
                message = m.decode_instance(await reader.readexactly(size))
                if isinstance(message, m.Invoke | m.InvokeBatch):
                    writer.write(m.encode(await self._run(handler, message)))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _run(self, handler: Handler, message: m.Invoke | m.InvokeBatch) -> m.InstanceMessage:
        started = time.perf_counter()
        await asyncio.sleep(self.delay_s)
        if isinstance(message, m.Invoke):
            body, error = _call(handler, message.payload)
            return m.Result(message.id, body, (time.perf_counter() - started) * 1000, error)
        self.batches.append(len(message.items))
        results = [m.ItemResult(*_call(handler, item.payload)) for item in message.items]
        return m.BatchResult(message.id, results, (time.perf_counter() - started) * 1000)


class TaskProcess:
    """The fake instance's :class:`backends.process.Process`: alive while its task runs."""

    def __init__(self, pid: int, task: asyncio.Task[None], stop: Callable[[], None]) -> None:
        self.pid = pid
        self._task = task
        self._stop = stop

    def is_alive(self) -> bool:
        return not self._task.done()

    def ping(self, timeout: float = 5.0) -> bool:
        return self.is_alive()

    def terminate(self) -> None:
        self._stop()

    def kill(self) -> None:
        self._stop()


def _call(handler: Handler, payload: bytes) -> tuple[bytes, m.ErrorInfo | None]:
    try:
        return orjson.dumps(handler(orjson.loads(payload) if payload else {})), None
    except Exception as exc:
        return b"", m.ErrorInfo("FUNCTION_ERROR", type(exc).__name__, str(exc))
