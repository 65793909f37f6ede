"""The header block waits for the body and leaves with it; nothing is lost or reordered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from coldbrew.gateway.http_protocol import JOIN_LIMIT, HeldHeaders
from support import Server


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


def run(body: Callable[[HeldHeaders, RecordingTransport], Awaitable[None]]) -> RecordingTransport:
    async def main() -> RecordingTransport:
        transport = RecordingTransport()
        held = HeldHeaders(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        await body(held, transport)
        await asyncio.sleep(0.01)  # let any flush scheduled for the next turn run
        return transport

    return asyncio.run(main())


def test_header_block_and_body_leave_in_one_write() -> None:
    async def respond(held: HeldHeaders, _: RecordingTransport) -> None:
        held.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        held.write(b"{}")

    assert run(respond).writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


def test_a_late_body_does_not_hold_the_headers_back() -> None:
    seen: list[list[bytes]] = []

    async def stream(held: HeldHeaders, transport: RecordingTransport) -> None:
        held.write(b"headers")
        await asyncio.sleep(0.01)  # the next turn of the loop has sent the headers alone
        seen.append(list(transport.writes))
        held.write(b"chunk-1")
        held.write(b"chunk-2")

    assert run(stream).writes == [b"headers", b"chunk-1", b"chunk-2"]
    assert seen == [[b"headers"]]


def test_large_bodies_are_not_copied() -> None:
    body = b"x" * (JOIN_LIMIT + 1)

    async def respond(held: HeldHeaders, _: RecordingTransport) -> None:
        held.write(b"headers")
        held.write(body)

    assert run(respond).writes == [b"headers", body]


def test_close_sends_what_was_held_first() -> None:
    async def respond(held: HeldHeaders, _: RecordingTransport) -> None:
        held.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
        held.close()
        assert held.is_closing()

    transport = run(respond)
    assert transport.writes == [b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"]
    assert transport.closed


def test_everything_else_is_the_transport_s() -> None:
    async def check(held: HeldHeaders, _: RecordingTransport) -> None:
        assert held.get_extra_info("peername") == "extra:peername"

    run(check)


def test_the_server_answers_head_keep_alive_and_close(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Through the real server: HEAD (headers only), several requests on one connection, and a
    client that asks to close."""
    server = Server(tmp_path_factory.mktemp("protocol-home"))
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(3):  # one keep-alive connection
                assert client.get("/healthz").status_code == 200
            head = client.head("/healthz")
            assert head.status_code in (200, 405) and head.content == b""
            closing = client.get("/healthz", headers={"connection": "close"})
            assert closing.status_code == 200 and closing.headers.get("connection") == "close"
            assert client.get("/v1/functions").status_code == 200  # a fresh connection
    finally:
        server.stop()
