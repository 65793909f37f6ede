"""Stream sessions inside an instance: one generator per WebSocket session.

A stream handler is ``def stream(frames, context)``: it iterates over the session's incoming
frames (``str`` for text, ``bytes`` for binary) and yields what to send back (``str`` and
``bytes`` go as they are, anything else as JSON text). It runs on a thread of its own, fed by a
queue that the instance's reader fills, so a session holds one instance slot for its whole life
(the shape of a live-video service: one session per camera).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from coldbrew.runtime import messages as m

_END = object()
Send = Callable[[m.StreamFrame | m.StreamEnded], None]


def encode_output(output: Any) -> tuple[bytes, bool]:
    if isinstance(output, bytes | bytearray | memoryview):
        return bytes(output), False
    if isinstance(output, str):
        return output.encode(), True
    return orjson.dumps(output, option=orjson.OPT_SERIALIZE_NUMPY), True


def _frames(inbox: queue.Queue[Any]) -> Iterator[str | bytes]:
    while True:
        item = inbox.get()
        if item is _END:
            return
        yield item


class StreamSessions:
    def __init__(
        self, version: Any, send: Send, error_info: Callable[[BaseException], Any]
    ) -> None:
        self.version = version
        self.send = send
        self.error_info = error_info
        self.inboxes: dict[int, queue.Queue[Any]] = {}
        self.lock = threading.Lock()

    def open(self, message: m.StreamOpen) -> None:
        inbox: queue.Queue[Any] = queue.Queue()
        with self.lock:
            self.inboxes[message.id] = inbox
        threading.Thread(
            target=self._run, args=(message, inbox), daemon=True, name=f"stream-{message.id}"
        ).start()

    def frame(self, message: m.StreamFrame) -> None:
        inbox = self.inboxes.get(message.id)
        if inbox is not None:  # frames after the handler returned are dropped
            inbox.put(message.data.decode() if message.text else message.data)

    def close(self, message: m.StreamClose) -> None:
        inbox = self.inboxes.get(message.id)
        if inbox is not None:
            inbox.put(_END)

    def _run(self, opened: m.StreamOpen, inbox: queue.Queue[Any]) -> None:
        handler = self.version.stream_handler
        error = None
        print(f"START STREAM RequestId: {opened.request_id} Version: {self.version.spawn.version}")
        started = time.perf_counter()
        try:
            for output in handler(_frames(inbox), self.version.context(opened)):
                data, text = encode_output(output)
                self.send(m.StreamFrame(id=opened.id, data=data, text=text))
        except Exception as exc:
            error = self.error_info(exc)
            print(f"[ERROR] {error.type}: {error.message}")
        finally:
            with self.lock:
                self.inboxes.pop(opened.id, None)
        elapsed = (time.perf_counter() - started) * 1000
        print(f"END STREAM RequestId: {opened.request_id}\tDuration: {elapsed:.2f} ms")
        self.send(m.StreamEnded(id=opened.id, error=error))
