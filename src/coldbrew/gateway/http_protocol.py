"""uvicorn's httptools protocol, sending a small response's header block and body together.

uvicorn writes the header block the moment the app sends ``http.response.start`` and the body
with ``http.response.body``: two ``send()`` system calls and two TCP segments for every small
JSON answer, which at thousands of invocations a second is a sizeable share of the gateway's
time. Here each request's cycle writes through :class:`HeldHeaders`, which keeps the header
block back until the body's first write (or, if no body comes within the same turn of the event
loop, as for a streamed response, until the next turn) and sends both at once.

It also bounds slow and oversized requests, which uvicorn's protocol holds open forever (a
connection sending half a header block, or a body that stops arriving):

- a request line and header block must be complete ``header_timeout_s`` after the connection
  opened or the request's first byte arrived, else 408 and close (a connection that sent
  nothing is closed silently);
- a body from which nothing arrives for ``body_timeout_s`` gets 408 and the connection closes;
- more than ``max_header_count`` header lines, or more than ``max_header_bytes`` of request line
  and headers, get 431.

The hot path pays no timer per request: one per connection, cancelled once its first header
block is complete; later requests on the connection, and bodies, arm one only when a read ends
with the request still incomplete (a whole request in one read, the common case, arms none).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

JOIN_LIMIT = 64 * 1024
"""Bodies up to this size are copied behind the header block; larger ones go in their own write."""


class HeldHeaders:
    """The transport as one request/response cycle sees it: its first write (the header block)
    waits for the second (the body) so that both leave in one system call."""

    __slots__ = ("_held", "_holding", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._holding = True

    def write(self, data: bytes) -> None:
        if self._holding:
            self._holding = False
            self._held = data
            self._loop.call_soon(self.flush)  # a body that comes later must not hold it back
            return
        held, self._held = self._held, None
        if held is None:
            self._transport.write(data)
        elif len(data) <= JOIN_LIMIT:
            self._transport.write(held + data)
        else:
            self._transport.write(held)
            self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@dataclass(frozen=True)
class HttpLimits:
    """How long a request may take to arrive, and how large its header block may be
    (``COLDBREW_HEADER_TIMEOUT_S``, ``_BODY_TIMEOUT_S``, ``_MAX_HEADER_COUNT``, ``_BYTES``)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_count: int = 100
    max_header_bytes: int = 64 * 1024


LINGER_S = 2.0
"""How long a refused connection is read (and its bytes dropped) after our answer, so that the
caller sees the answer rather than a connection reset."""


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; the response is in ``_refusal``."""


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    limits = HttpLimits()

    @classmethod
    def with_limits(cls, limits: HttpLimits) -> type[CoalescingHttpToolsProtocol]:
        """This protocol with other limits (uvicorn builds protocols from a class)."""
        return type(cls.__name__, (cls,), {"limits": limits})

    # -- connection --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_headers = False  # between a request's first byte and its complete headers
        self._began_in_read = False
        self._header_bytes = 0
        self._body_seen = 0.0
        self._body_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str, str] | None = None
        self._lingering: asyncio.TimerHandle | None = None
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.limits.header_timeout_s, self._headers_late
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            return  # a refused request's remaining bytes: read and dropped until we close
        cycle = self.cycle
        idle = not self._in_headers and (cycle is None or not cycle.more_body)
        self._began_in_read = False
        super().data_received(data)
        if self._in_headers:
            if self.transport.is_closing():
                return
            # Every byte of this read is header bytes when it continued a header block, or when
            # it began one with nothing else in progress. When it also held the end of a
            # pipelined request, it is not counted (an undercount of one read at most).
            if idle or not self._began_in_read:
                self._header_bytes += len(data)
                if self._header_bytes > self.limits.max_header_bytes:
                    self._refuse(431, "HEADERS_TOO_LARGE", self._too_large_message())
                    return
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(
                    self.limits.header_timeout_s, self._headers_late
                )
            return
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_complete:
            if self.transport.is_closing():
                return
            self._body_seen = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_late)

    # -- parser callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._began_in_read = True
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if len(self.headers) > self.limits.max_header_count:
            self._refusal = (431, "HEADERS_TOO_LARGE", self._too_large_message())
            raise _Refused
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not previous:
            self.cycle.transport = HeldHeaders(self.transport, self.loop)  # type: ignore[assignment]

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers every parser error, ours (_Refused) included, through here.
        if self._refusal is not None:
            self._refuse(*self._refusal)
        else:
            self._refuse(400, "BAD_REQUEST", msg)

    # -- limits ------------------------------------------------------------------------------
    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if not self._in_headers:
            self.transport.close()  # nothing of a request arrived: nothing to answer
            return
        seconds = f"{self.limits.header_timeout_s:g}"
        self._refuse(408, "REQUEST_TIMEOUT", f"the request headers took over {seconds} s")

    def _body_late(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.response_complete:
            return
        if self.transport.is_closing():
            return
        now, timeout = self.loop.time(), self.limits.body_timeout_s
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            self._body_seen = now  # the gateway is the one not reading: not the caller's delay
        idle = now - self._body_seen
        if idle < timeout:
            self._body_timer = self.loop.call_later(timeout - idle, self._body_late)
            return
        message = f"no byte of the request body arrived for {timeout:g} s"
        self._refuse(408, "REQUEST_TIMEOUT", message)

    def _too_large_message(self) -> str:
        return (
            f"the request's header block is larger than {self.limits.max_header_count} lines or "
            f"{self.limits.max_header_bytes} bytes"
        )

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` with coldbrew's JSON error (unless a response has begun) and close."""
        self._cancel_timers()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() now says http.disconnect
            cycle.message_event.set()
        if not started:
            body = orjson.dumps({"error": {"code": code, "message": message}})
            head = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head.append(name + b": " + value + b"\r\n")
            head.append(b"content-type: application/json\r\n")
            head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
            self.transport.write(b"".join(head) + body)
        if started or not self.transport.can_write_eof():
            self.transport.close()
            return
        # Closing with unread bytes would make the kernel send a reset, which may reach the
        # caller before the answer does; so end our side, drop what still comes, close soon.
        self.transport.write_eof()
        self._lingering = self.loop.call_later(LINGER_S, self.transport.close)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer, self._lingering):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None
