"""Stream sessions inside an instance: one generator per WebSocket session.

A stream handler is ``def stream(frames, context)``: it iterates over the session's incoming
frames (``str`` for text, ``bytes`` for binary) and yields what to send back (``str`` and
``bytes`` go as they are, anything else as JSON text). It runs on a thread of its own, fed by a
queue that the instance's reader fills, so a session holds one instance slot for its whole life
(the shape of a live-video service: one session per camera).

Feature lookups the handler makes (``context.features.lookup``) are reported to the gateway's
``/metrics`` per frame, in a ``StreamFeatures`` message: a session has no per-frame result to
carry them, and waiting for its end would hide a 15-minute session's lookups for 15 minutes.
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
Send = Callable[[m.StreamFrame | m.StreamEnded | m.StreamFeatures], None]


def encode_output(output: Any) -> tuple[bytes, bool]:
    if isinstance(output, bytes | bytearray | memoryview):
        return bytes(output), False
    if isinstance(output, str):
        return output.encode(), True
    return orjson.dumps(output, option=orjson.OPT_SERIALIZE_NUMPY), True


def _frames(inbox: queue.Queue[Any], report: Callable[[], None]) -> Iterator[str | bytes]:
    while True:
        report()  # the handler asks for the next frame: the last one's lookups are done
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
        self.dropped: dict[int, int] = {}
        self.max_pending = int(getattr(version.config, "stream_max_pending", 0) or 0)
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
        if inbox is None:  # frames after the handler returned are dropped
            return
        if self.max_pending:
            self._make_room(message.id, inbox)
        inbox.put(message.data.decode() if message.text else message.data)

    def _make_room(self, session: int, inbox: queue.Queue[Any]) -> None:
        """``stream_max_pending``: the oldest waiting frames go (latest-frame-wins with 1).
        Only this reader thread puts frames, so the size cannot grow behind its back."""
        while inbox.qsize() >= self.max_pending:
            try:
                oldest = inbox.get_nowait()
            except queue.Empty:
                return
            if oldest is _END:  # never drop the end of the session
                inbox.put(_END)
                return
            self.dropped[session] = self.dropped.get(session, 0) + 1

    def close(self, message: m.StreamClose) -> None:
        inbox = self.inboxes.get(message.id)
        if inbox is not None:
            inbox.put(_END)

    def _run(self, opened: m.StreamOpen, inbox: queue.Queue[Any]) -> None:
        handler = self.version.stream_handler
        error = None
        print(f"START STREAM RequestId: {opened.request_id} Version: {self.version.spawn.version}")
        started = time.perf_counter()
        stats: list[m.FeatureStat] | None = None

        def report() -> None:
            """Send the lookups made since the last report. Called at each frame's end (the
            handler yields an answer or asks for the next frame) and at the session's end: a
            handler that yields only on alerts still has every frame's lookups counted, with
            no message when there were none. Only what was taken is removed, so a lookup
            appended meanwhile by another of the handler's threads waits for the next report."""
            if stats:
                taken = stats[:]
                del stats[: len(taken)]
                self.send(m.StreamFeatures(id=opened.id, features=taken))

        try:
            context = self.version.context(opened)
            # The session's own list with declared features (a plain dict without).
            stats = getattr(context.features, "stats", None)
            for output in handler(_frames(inbox, report), context):
                data, text = encode_output(output)
                report()  # before the answer: the gateway counts them before the client sees it
                self.send(m.StreamFrame(id=opened.id, data=data, text=text))
        except Exception as exc:
            error = self.error_info(exc)
            print(f"[ERROR] {error.type}: {error.message}")
        finally:
            with self.lock:
                self.inboxes.pop(opened.id, None)
        report()  # what the last frame looked up, an outage's "error" included
        elapsed = (time.perf_counter() - started) * 1000
        dropped = self.dropped.pop(opened.id, 0)
        extra = f"\tDropped frames: {dropped}" if self.max_pending else ""
        print(f"END STREAM RequestId: {opened.request_id}\tDuration: {elapsed:.2f} ms{extra}")
        self.send(m.StreamEnded(id=opened.id, error=error))
