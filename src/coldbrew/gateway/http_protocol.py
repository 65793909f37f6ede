"""uvicorn's httptools protocol, sending a small response's header block and body together.

uvicorn writes the header block the moment the app sends ``http.response.start`` and the body
with ``http.response.body``: two ``send()`` system calls and two TCP segments for every small
JSON answer, which at thousands of invocations a second is a sizeable share of the gateway's
time. Here each request's cycle writes through :class:`HeldHeaders`, which keeps the header
block back until the body's first write (or, if no body comes within the same turn of the event
loop, as for a streamed response, until the next turn) and sends both at once. Nothing else of
uvicorn's protocol changes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not previous:
            self.cycle.transport = HeldHeaders(self.transport, self.loop)  # type: ignore[assignment]
