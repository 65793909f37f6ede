"""The header block waits for the body and leaves with it; nothing is lost or reordered. Slow
and oversized requests are bounded: half-sent header blocks and stalled bodies get 408 and are
closed, too many or too large headers get 431."""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Awaitable, Callable, Iterator

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


# --- slow and oversized requests ------------------------------------------------------------
LIMIT_S = 1.0


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("bounded-home"),
        env={"COLDBREW_HEADER_TIMEOUT_S": str(LIMIT_S), "COLDBREW_BODY_TIMEOUT_S": str(LIMIT_S)},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes; raises TimeoutError if it never does."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


HALF = b"POST /v1/functions/x/invoke HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1"


def test_half_sent_header_blocks_are_closed_after_the_timeout(bounded: Server) -> None:
    sockets = [_connect(bounded) for _ in range(50)]
    try:
        for sock in sockets:
            sock.sendall(HALF)
        started = time.monotonic()
        # Meanwhile a normal request is served at once.
        assert httpx.get(f"{bounded.url}/healthz", timeout=5).status_code == 200
        answers = [_read_until_closed(sock) for sock in sockets]
        elapsed = time.monotonic() - started
    finally:
        for sock in sockets:
            sock.close()
    assert elapsed < LIMIT_S + 4, f"closed after {elapsed:.1f} s"
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[0][:200]
    assert b'"REQUEST_TIMEOUT"' in answers[0]


def test_dripping_header_bytes_does_not_extend_the_timeout(bounded: Server) -> None:
    """The timeout is for the whole header block, not between bytes (slowloris)."""
    with _connect(bounded) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(int(LIMIT_S * 10) + 20):
            try:
                sock.sendall(b"X-Drip: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([sock], [], [], 0.1)[0]:  # the server answered
                break
        answer = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < LIMIT_S + 4


def test_a_silent_connection_is_closed(bounded: Server) -> None:
    with _connect(bounded) as sock:
        started = time.monotonic()
        assert _read_until_closed(sock) == b""  # nothing to answer: closed without a word
        assert LIMIT_S * 0.8 < time.monotonic() - started < LIMIT_S + 4


def test_the_next_request_on_a_kept_alive_connection_is_bounded_too(bounded: Server) -> None:
    with _connect(bounded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        time.sleep(LIMIT_S + 0.3)  # idle between requests longer than the header timeout: fine
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        second = sock.recv(65536)
        assert second.startswith(b"HTTP/1.1 200 "), second[:200]
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_a_stalled_body_gets_408(bounded: Server) -> None:
    with _connect(bounded) as sock:
        sock.sendall(
            b"PUT /v1/functions/x/aliases/prod HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b"{" * 10
        )
        started = time.monotonic()
        answer = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert time.monotonic() - started < LIMIT_S + 4


def test_a_slow_but_steady_body_is_not_cut_off(bounded: Server) -> None:
    """Body time is idle time: a byte every half timeout keeps the request alive."""
    body = b'{"version": 1}'
    with _connect(bounded) as sock:
        sock.sendall(
            b"PUT /v1/functions/x/aliases/prod HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        for i in range(0, len(body), 4):
            sock.sendall(body[i : i + 4])
            time.sleep(LIMIT_S / 2)
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:300]  # no function x: but it was read


def test_too_many_headers_get_431(bounded: Server) -> None:
    headers = {f"x-h{i}": "1" for i in range(200)}
    response = httpx.get(f"{bounded.url}/healthz", headers=headers, timeout=5)
    assert response.status_code == 431, response.text[:200]
    assert response.json()["error"]["code"] == "HEADERS_TOO_LARGE"
    assert httpx.get(f"{bounded.url}/healthz", headers=dict(list(headers.items())[:50])).is_success


@pytest.mark.parametrize("pieces", [1, 40], ids=["at-once", "in-pieces"])
def test_a_huge_header_block_gets_431(bounded: Server, pieces: int) -> None:
    value = b"a" * 160 * 1024  # one header value, never finished
    with _connect(bounded) as sock:
        started = time.monotonic()
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            step = len(value) // pieces
            for i in range(0, len(value), step):
                sock.sendall(value[i : i + step])
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert time.monotonic() - started < LIMIT_S  # refused for its size, not its slowness


def test_a_large_but_allowed_header_is_served(bounded: Server) -> None:
    response = httpx.get(f"{bounded.url}/healthz", headers={"cookie": "c" * 30_000}, timeout=5)
    assert response.status_code == 200
