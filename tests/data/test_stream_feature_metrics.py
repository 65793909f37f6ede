"""A stream session's feature lookups (``context.features.lookup`` in ``stream(frames,
context)``) are counted in ``/metrics`` while the session is still open: after each frame, not
only when it ends. Live: a real server, a WebSocket session, a SQLite stolen-vehicle table."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from support import Server, write_bundle

STREAM = """
def handler(event, context):
    return {}

def stream(frames, context):
    for frame in frames:
        if frame == "bye":
            return
        quiet, _, plate = frame.rpartition(":")
        vehicle = context.features.lookup("stolen", plate)
        if not quiet:  # a "quiet:" frame yields nothing, as a camera with no alert
            yield {"plate": plate, "stolen": vehicle}
"""


@pytest.fixture(scope="module")
def plates(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("stream-features")
    db_path = folder / "stolen.db"
    with sqlite3.connect(db_path) as conn:
        conn.execute("create table stolen (plate text primary key, make text)")
        conn.execute("insert into stolen values ('7ABC123', 'Toyota')")
    db_path.chmod(0o644)
    folder.chmod(0o711)  # the function's uid opens it (isolation on as root)
    config = f"""
handler = "handler:handler"
stream_handler = "handler:stream"
stream_max_duration_s = 20

[environment]
STOLEN_DB = "sqlite:///{db_path}"

[[features]]
name = "stolen"
sql = "select make from stolen where plate = :plate"
database = "STOLEN_DB"
cache = "local"
"""
    bundle = write_bundle(folder / "bundle", STREAM, config)
    response = server.deploy_folder("plates", bundle)
    assert response.status_code == 201, response.text
    return server.url.replace("http://", "ws://") + "/stream/plates"


def lookups(server: Server) -> dict[str, float]:
    """``coldbrew_feature_lookups_total`` of the ``stolen`` feature, by result."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(server.client.get("/metrics").text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "coldbrew_feature_lookups_total" and labels["feature"] == "stolen":
                counts[sample.labels["result"]] = sample.value
    return counts


async def settled(server: Server, want: dict[str, float]) -> dict[str, float]:
    """The counts once they equal ``want`` (or what they were after 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        got = await asyncio.to_thread(lookups, server)
        if got == want or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


def test_lookups_are_counted_per_frame_while_the_session_is_open(
    server: Server, plates: str
) -> None:
    async def session() -> list[tuple[dict[str, float], dict[str, float]]]:
        checks = []
        async with websockets.connect(plates) as ws:
            answers = []
            # The first read of each plate queries the table (a missing row is cached too).
            expected = [{"miss": 1.0}, {"miss": 1.0, "hit": 1.0}]
            expected += [{"miss": 2.0, "hit": 1.0}, {"miss": 2.0, "hit": 2.0}]
            frames = ("7ABC123", "7ABC123", "1XYZ999", "1XYZ999")
            for plate, want in zip(frames, expected, strict=True):
                await ws.send(plate)
                answers.append(json.loads(await ws.recv()))
                # Counted before the answer is sent: no waiting.
                checks.append((await asyncio.to_thread(lookups, server), want))
            toyota = {"make": "Toyota"}
            assert [a["stolen"] for a in answers] == [toyota, toyota, None, None]
            # A frame that yields nothing is counted when the handler asks for the next one.
            await ws.send("quiet:7ABC123")
            await ws.send("quiet:5NEW000")
            want = {"miss": 3.0, "hit": 3.0}
            checks.append((await settled(server, want), want))
            await ws.send("bye")
            end = json.loads(await ws.recv())
            assert end["type"] == "end" and end["reason"] == "handler_finished", end
        # The session's end adds nothing it already reported.
        checks.append((await settled(server, want), want))
        return checks

    for got, want in asyncio.run(asyncio.wait_for(session(), 30)):
        assert got == want
