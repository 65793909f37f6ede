"""Stream sessions: one WebSocket held by one instance, a generator over its frames."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import websockets

from support import Server, write_bundle

STREAM = """
import json, os

def handler(event, context):
    return {"plain": True}

def stream(frames, context):
    count = 0
    for frame in frames:
        count += 1
        if frame == "crash":
            raise RuntimeError("camera went dark")
        if frame == "bye":
            yield {"done": count}
            return
        if isinstance(frame, bytes):
            yield bytes(reversed(frame))
        else:
            yield {"n": count, "echo": frame, "pid": os.getpid(), "id": context.aws_request_id}
"""


@pytest.fixture(scope="module")
def streaming(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    config = (
        'handler = "handler:handler"\nstream_handler = "handler:stream"\n'
        "stream_max_duration_s = 1.5\nmax_instances = 2\n"
    )
    bundle = write_bundle(tmp_path_factory.mktemp("stream") / "b", STREAM, config)
    response = server.deploy_folder("camera", bundle)
    assert response.status_code == 201, response.text
    return server.url.replace("http://", "ws://") + "/stream/camera"


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_one_session_one_instance(streaming: str) -> None:
    async def session() -> tuple[list[dict], dict, bytes]:
        async with websockets.connect(streaming) as ws:
            answers = []
            for text in ("plate-1", "plate-2", "plate-3"):
                await ws.send(text)
                answers.append(json.loads(await ws.recv()))
            await ws.send(b"\x01\x02\x03")
            binary = await ws.recv()
            await ws.send("bye")
            done = json.loads(await ws.recv())
            end = json.loads(await ws.recv())
            return answers, {"done": done, "end": end}, binary

    answers, tail, binary = run(session())
    assert [a["n"] for a in answers] == [1, 2, 3]
    assert [a["echo"] for a in answers] == ["plate-1", "plate-2", "plate-3"]
    assert len({a["pid"] for a in answers}) == 1, "one session is served by one instance"
    assert len({a["id"] for a in answers}) == 1
    assert binary == b"\x03\x02\x01"
    assert tail["done"] == {"done": 5}
    assert tail["end"]["type"] == "end" and tail["end"]["reason"] == "handler_finished"


def test_max_duration_ends_cleanly(streaming: str) -> None:
    async def session() -> tuple[dict, float, int | None]:
        async with websockets.connect(streaming) as ws:
            await ws.send("hello")
            await ws.recv()
            started = time.monotonic()
            end = json.loads(await ws.recv())  # nothing more sent: the limit ends it
            elapsed = time.monotonic() - started
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return end, elapsed, ws.close_code

    end, elapsed, code = run(session())
    assert end["reason"] == "max_duration"
    assert elapsed < 5
    assert code == 1000


def test_handler_error_ends_with_an_error_message(streaming: str) -> None:
    async def session() -> dict:
        async with websockets.connect(streaming) as ws:
            await ws.send("crash")
            return json.loads(await ws.recv())

    end = run(session())
    assert end["reason"] == "error"
    assert end["error"]["errorType"] == "RuntimeError"
    assert "camera went dark" in end["error"]["message"]


def test_concurrent_sessions_get_their_own_instances(streaming: str) -> None:
    async def one(tag: str) -> set[int]:
        async with websockets.connect(streaming) as ws:
            pids = set()
            for i in range(3):
                await ws.send(f"{tag}-{i}")
                pids.add(json.loads(await ws.recv())["pid"])
            await ws.send("bye")
            return pids

    async def both() -> list[set[int]]:
        return list(await asyncio.gather(one("a"), one("b")))

    first, second = run(both())
    assert len(first) == 1 and len(second) == 1
    assert first != second, "two live sessions cannot share a concurrency-1 instance"


def test_functions_without_stream_handler_are_refused(server: Server, tmp_path: Path) -> None:
    bundle = write_bundle(
        tmp_path / "p", "def handler(e, c):\n    return e\n", 'handler = "handler:handler"\n'
    )
    assert server.deploy_folder("not-a-stream", bundle).status_code == 201
    url = server.url.replace("http://", "ws://")

    async def session(target: str) -> dict:
        async with websockets.connect(f"{url}/stream/{target}") as ws:
            return json.loads(await ws.recv())

    refused = run(session("not-a-stream"))
    assert refused["reason"] == "error" and refused["error"]["code"] == "VALIDATION_ERROR"
    missing = run(session("no-such-function"))
    assert missing["error"]["code"] == "NOT_FOUND"
