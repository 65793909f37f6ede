"""Stream sessions under a producer faster than the handler: 30 frames a second for 3 s into a
handler that takes 100 ms a frame (the case a new user hit: the lag reached 6 s after 3 s).

With ``stream_max_pending = 1`` (latest-frame-wins) the waiting frame is replaced by each newer
one, so the lag between a frame being sent and its answer stays bounded; with the default (0)
every frame is kept, and the lag grows for as long as the producer outruns the handler.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from support import Server, write_bundle

HANDLER = """
import json
import time


def handler(event, context):
    return {"ok": True}


def stream(frames, context):
    for frame in frames:
        sent = json.loads(frame)
        time.sleep(0.1)  # a 100 ms model
        yield {"frame": sent["n"], "sent_at": sent["t"]}
"""
FPS, SECONDS = 30, 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("stream-home"))
    running.start()
    try:
        for name, pending in (("latest", 1), ("every", 0)):
            folder = write_bundle(
                tmp_path_factory.mktemp(name),
                HANDLER,
                f'handler = "handler:handler"\nstream_handler = "handler:stream"\n'
                f"stream_max_pending = {pending}\n",
            )
            answer = running.deploy_folder(f"cam-{name}", folder)
            assert answer.status_code == 201, answer.text
        yield running
    finally:
        running.stop()


def _session(server: Server, name: str, drain_s: float) -> tuple[list[dict], list[float], dict]:
    """Send FPS frames a second for SECONDS, keep reading for ``drain_s``, then close."""
    url = server.url.replace("http://", "ws://") + f"/stream/{name}"
    answers: list[dict] = []
    lags: list[float] = []
    end: dict = {}
    with connect(url, open_timeout=30) as ws:

        def produce() -> None:
            start = time.time()
            for n in range(int(FPS * SECONDS)):
                time.sleep(max(0.0, start + n / FPS - time.time()))
                ws.send(json.dumps({"n": n, "t": time.time()}))

        producer = threading.Thread(target=produce)
        producer.start()
        deadline = time.time() + SECONDS + drain_s
        while time.time() < deadline:
            try:
                message = json.loads(ws.recv(timeout=max(0.01, deadline - time.time())))
            except TimeoutError:
                break
            if message.get("type") == "end":
                end = message
                break
            answers.append(message)
            lags.append(time.time() - message["sent_at"])
        producer.join()
    return answers, lags, end


def test_latest_frame_wins_keeps_the_lag_bounded(server: Server, tmp_path: Path) -> None:
    answers, lags, _ = _session(server, "cam-latest", drain_s=1.0)
    frames = [a["frame"] for a in answers]
    print(
        f"\nlatest-frame-wins: {len(frames)} of {int(FPS * SECONDS)} frames answered,"
        f" max lag {max(lags):.2f} s, last lag {lags[-1]:.2f} s"
    )
    assert frames == sorted(frames)  # in order, the stale ones skipped
    assert len(frames) < FPS * SECONDS * 0.6  # frames were dropped...
    assert frames[-1] >= FPS * SECONDS - 3  # ...but the newest was answered
    assert max(lags[2:]) < 0.5  # at most one frame waits: the lag is ~2 handler runs


def test_without_a_bound_every_frame_waits_its_turn(server: Server) -> None:
    answers, lags, _ = _session(server, "cam-every", drain_s=0.5)
    print(
        f"\nunbounded: {len(answers)} frames answered within the session, lag reached"
        f" {max(lags):.2f} s"
    )
    assert [a["frame"] for a in answers] == list(range(len(answers)))  # none dropped
    assert max(lags) > 1.5  # the backlog grows while the producer outruns the handler
