"""What the slow-request bounds of gateway/http_protocol.py cost per request.

Feeds N keep-alive requests, each arriving whole in one read (the common case), through the
gateway's httptools protocol with and without the header/body timers and header limits, in one
process on uvloop, interleaved, and prints microseconds per request (protocol + a trivial ASGI
app; no sockets). Run: ``python bench/http_limits.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from coldbrew.gateway.http_protocol import CoalescingHttpToolsProtocol, HeldHeaders

REQUEST = (
    b"POST /v1/functions/x/invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: wrk\r\n"
    b"Content-Type: application/json\r\nContent-Length: 12\r\n\r\n" + b'{"rows":[1]}'
)


class Unbounded(HttpToolsProtocol):
    """The gateway's protocol before the bounds: the held header block only."""

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not previous:
            self.cycle.transport = HeldHeaders(self.transport, self.loop)  # type: ignore[assignment]


class NullTransport:
    def __init__(self) -> None:
        self.closing = False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 1), "peername": ("127.0.0.1", 2)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


async def per_request_us(protocol_class: type, n: int) -> float:
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    config.load()
    loop = asyncio.get_running_loop()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    protocol.connection_made(NullTransport())
    started = time.perf_counter()
    for _ in range(n):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the request's task runs
        await asyncio.sleep(0)  # and the held header block is flushed
    protocol.connection_lost(None)
    return (time.perf_counter() - started) / n * 1e6


async def main(n: int = 20_000, rounds: int = 9) -> None:
    results: dict[str, list[float]] = {"without bounds": [], "with bounds": []}
    for _ in range(rounds):
        results["without bounds"].append(await per_request_us(Unbounded, n))
        results["with bounds"].append(await per_request_us(CoalescingHttpToolsProtocol, n))
    for name, values in results.items():
        print(
            f"{name:15s} min {min(values):6.2f} us/request, median {statistics.median(values):6.2f}"
        )


if __name__ == "__main__":
    uvloop.run(main())
