"""Shadow traffic on a real server: callers always get the alias's own answer, never wait for
the copy, and the comparison (agreement, errors, latency) is in status and metrics."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from coldbrew.cli.main import app
from coldbrew.delivery import shadow as shadow_module
from coldbrew.delivery.shadow import BUSY_LAG_S, ShadowConfig, ShadowMirror, has_room
from support import Server, write_bundle

PRIMARY = """
def handler(event, context):
    return {"label": "a", "n": event["n"]}
"""
# The candidate disagrees on every 4th event, fails on every 10th, and is slow on every 20th.
CANDIDATE = """
import time

def handler(event, context):
    n = event["n"]
    if n % 10 == 5:
        raise ValueError("candidate bug")
    if n % 20 == 0:
        time.sleep(0.3)
    return {"label": "b" if n % 4 == 0 else "a", "n": n}
"""
CONFIG = "handler = 'handler:handler'\nmax_instances = 4\n"


@pytest.fixture(scope="module")
def shade(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("coldbrew-home")
    server = Server(home, {"COLDBREW_SHADOW_MAX_CONCURRENCY": "2"})
    server.start()
    base: Path = tmp_path_factory.mktemp("bundles")
    for n, code in ((1, PRIMARY), (2, CANDIDATE)):
        deployed = server.deploy_folder("shade", write_bundle(base / f"v{n}", code, CONFIG))
        assert deployed.status_code in (200, 201), deployed.text
    server.client.put("/v1/functions/shade/aliases/prod", json={"version": 1})
    server.invoke("shade:2", {"n": 1})  # warm the candidate: its cold start is not the point
    yield server
    server.stop()


def test_shadow_never_changes_or_delays_an_answer(shade: Server) -> None:
    runner = CliRunner()
    args = ["shadow", "start", "shade", "--to", "2", "--alias", "prod", "--url", shade.url]
    # Normal priority here: a low-priority shadow drops copies while the gateway is busy, and
    # which ones a loaded test machine drops is not what this part checks.
    result = runner.invoke(app, [*args, "--priority", "normal"])
    assert result.exit_code == 0, result.output
    took = []
    for n in range(200):
        started = time.perf_counter()
        response = shade.invoke("shade:prod", {"n": n})
        took.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        assert response.json() == {"label": "a", "n": n}
        assert response.headers["x-coldbrew-executed-version"] == "1"
    # Some copies sleep 300 ms; a caller that waited for one would show it.
    assert statistics.median(took) < 0.1 and sorted(took)[189] < 0.25, sorted(took)[-10:]

    shadow = _settled(shade, 200)
    assert shadow["dropped"] > 0  # 2 copies in flight at most: the rest are dropped, not queued
    # Which copies the burst dropped depends on the machine's speed; a few paced calls (each
    # waits for the previous copy) are surely mirrored: errors, disagreements and slow copies.
    paced = [5, 15, 4, 8, 20, 40, 60, 80, 100, 1]
    for count, n in enumerate(paced, start=201):
        assert shade.invoke("shade:prod", {"n": n}).json() == {"label": "a", "n": n}
        shadow = _settled(shade, count)
    assert shadow["shadow_errors"] >= 2 and shadow["primary_errors"] == 0
    assert 0 < shadow["agreement_rate"] < 1
    assert shadow["shadow_p95_ms"] > shadow["primary_p95_ms"]

    text = shade.client.get("/metrics").text
    assert 'coldbrew_shadow_invocations_total{alias="prod",function="shade",result="agree"' in text
    assert 'result="dropped",version="2"}' in text
    shown = runner.invoke(app, ["shadow", "status", "shade", "--url", shade.url])
    assert "prod" in shown.output and "AGREEMENT" in shown.output

    # The copies ran and were metered as version 2's invocations, protocol "shadow".
    assert 'coldbrew_invocations_total{function="shade",status="OK",version="2"}' in text

    # Low priority (the default): the candidate's instances run as SCHED_IDLE, the primary's not.
    assert {os.sched_getscheduler(pid) for pid in _pids(shade, 2)} == {os.SCHED_OTHER}
    low = runner.invoke(app, [*args, "--json"])
    assert low.exit_code == 0 and '"priority": "low"' in low.output, low.output
    assert {os.sched_getscheduler(pid) for pid in _pids(shade, 2)} == {os.SCHED_IDLE}
    assert {os.sched_getscheduler(pid) for pid in _pids(shade, 1)} == {os.SCHED_OTHER}
    assert runner.invoke(app, [*args, "--priority", "normal"]).exit_code == 0
    if os.geteuid() == 0:  # leaving SCHED_IDLE needs CAP_SYS_NICE (or RLIMIT_NICE)
        assert {os.sched_getscheduler(pid) for pid in _pids(shade, 2)} == {os.SCHED_OTHER}


BATCHED_CANDIDATE = """
def handler(event, context):
    return batch([event], [context])[0]

def batch(events, contexts):
    out = []
    for event in events:
        n = event["n"]
        if n % 10 == 5:
            out.append(ValueError("candidate bug"))
        else:
            out.append({"label": "b" if n % 4 == 0 else "a", "n": n, "batch": len(events)})
    return out
"""
BATCHED_CONFIG = (
    "handler = 'handler:handler'\nbatch_handler = 'handler:batch'\nmax_instances = 1\n"
    "[batching]\nmax_batch_size = 8\n"
)


def test_a_low_priority_burst_is_one_call_of_a_batched_candidate(
    shade: Server, tmp_path: Path
) -> None:
    """To a batched candidate, low-priority copies go in bursts of its ``max_batch_size``:
    each burst one call of its batch handler (one invocation in its metrics and meter), each
    copy compared with its caller's answer."""
    primary = write_bundle(tmp_path / "v1", PRIMARY, CONFIG)
    assert shade.deploy_folder("bursty", primary).status_code == 201
    candidate = write_bundle(tmp_path / "v2", BATCHED_CANDIDATE, BATCHED_CONFIG)
    assert shade.deploy_folder("bursty", candidate).status_code == 201
    assert shade.client.put("/v1/functions/bursty/aliases/prod", json={"version": 1}).is_success
    assert shade.invoke("bursty:2", {"n": 1}).json()["batch"] == 1  # warm: one call, batch of 1
    shadow = {"version": 2, "alias": "prod", "percent": 100, "ignore": ["batch"]}
    assert shade.client.put("/v1/functions/bursty/shadow", json=shadow).status_code == 200
    for first in range(0, 40, 8):  # a burst's worth, then its copies settle: none dropped
        for n in range(first, first + 8):
            assert shade.invoke("bursty:prod", {"n": n}).json() == {"label": "a", "n": n}
        status = _settled(shade, first + 8, "bursty")
    # 40 copies: 4 failed (n % 10 == 5), 10 of the other 36 disagree (n % 4 == 0).
    assert (status["mirrored"], status["dropped"]) == (40, 0), status
    assert (status["shadow_errors"], status["compared"], status["agreed"]) == (4, 36, 26), status
    text = shade.client.get("/metrics").text
    # Five handler calls of 8 (and the warm-up's 1): one invocation each, none failed whole.
    assert 'coldbrew_batch_size_count{function="bursty"} 6.0' in text
    assert 'coldbrew_batch_size_sum{function="bursty"} 41.0' in text
    assert 'coldbrew_invocations_total{function="bursty",status="OK",version="2"} 6.0' in text
    assert shade.client.delete("/v1/functions/bursty").is_success


def _pids(shade: Server, version: int) -> list[int]:
    pools = shade.client.get("/v1/functions/shade").json()["pools"]
    pids = [i["pid"] for p in pools if p["version"] == version for i in p["instances"]]
    assert pids, pools
    return pids


def test_a_copy_never_queues() -> None:
    """A copy starts only while the candidate has a free slot for it and nothing waits, or, when
    it batches, a place in the batch being formed."""

    def pool(waiters: int = 0, queued: int = 0, batcher: bool = False) -> SimpleNamespace:
        config = SimpleNamespace(max_instances=2, concurrency=2)
        batching = SimpleNamespace(queue=[1] * queued, config=SimpleNamespace(max_batch_size=8))
        used = batching if batcher else None
        return SimpleNamespace(closed=False, waiters=[1] * waiters, batcher=used, config=config)

    assert has_room(None, 0) and not has_room(None, 1)  # no pool yet: one copy starts it
    assert has_room(pool(), 3) and not has_room(pool(), 4)  # 2 instances x 2 slots
    assert not has_room(pool(waiters=1), 0)  # someone already waits on the candidate
    assert has_room(pool(batcher=True, queued=7), 20)  # joins the batch being formed
    assert not has_room(pool(batcher=True, queued=8), 0)  # that batch is full: dropped
    assert not has_room(pool(batcher=True), 40)  # 4 slots + the forming batch, x 8


def test_a_busy_gateway_loop_starts_no_low_priority_copy() -> None:
    """The loop's own CPU closes the gate: a loop that is never late by ``BUSY_LAG_S`` but
    works most of each tick (a gateway that limits its callers) starts no low-priority copy,
    and opens it again once idle."""
    backend = SimpleNamespace(settings=SimpleNamespace(backend="local"))
    plane = SimpleNamespace(scheduler=SimpleNamespace(backend=backend, pools={}), shadows={})
    request = SimpleNamespace(function="f", qualifier="prod", protocol="http")

    async def scenario() -> tuple[bool, int, bool]:
        mirror = ShadowMirror(plane, rand=lambda: 0.0)  # type: ignore[arg-type]
        mirror.set(ShadowConfig("f", "prod", 2, 1.0))
        spin_until = time.monotonic() + 0.6
        while time.monotonic() < spin_until:  # busy, in slices far shorter than BUSY_LAG_S
            slice_end = time.perf_counter() + BUSY_LAG_S / 5
            while time.perf_counter() < slice_end:
                pass
            await asyncio.sleep(0)
        busy = mirror.busy
        mirror.offer(request, SimpleNamespace())  # type: ignore[arg-type]
        dropped = mirror.stats[("f", "prod")].dropped
        await asyncio.sleep(0.5)  # idle: the smoothed share decays within a few ticks
        idle = mirror.busy
        mirror.remove("f")
        return busy, dropped, idle

    busy, dropped, idle_busy = asyncio.run(scenario())
    assert busy and dropped == 1
    assert not idle_busy


def test_low_priority_copies_go_to_a_batched_candidate_in_bursts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A low-priority copy to a batched candidate waits for its burst: the burst goes whole
    (one batch handler call) when full or after BURST_WAIT_S, never while an earlier one runs;
    a full buffer drops."""
    monkeypatch.setattr(shadow_module, "BURST_WAIT_S", 0.05)
    batcher = SimpleNamespace(queue=[], config=SimpleNamespace(max_batch_size=8))
    pool = SimpleNamespace(closed=False, waiters=[], batcher=batcher, instances=[])
    bursts: list[int] = []
    """The size of each call of the candidate, in order."""
    release = asyncio.Event()

    async def resolve(function: str, qualifier: str) -> object:
        return SimpleNamespace(number=int(qualifier))

    async def invoke_burst(
        version: object, payloads: list[bytes], protocol: str, caller: object
    ) -> list[object]:
        assert protocol == "shadow"
        bursts.append(len(payloads))
        await release.wait()
        return [SimpleNamespace(error=None, body=b"{}") for _ in payloads]

    async def run(request: object, admitted: object) -> object:
        raise AssertionError("a burst's copies are not invoked one by one")

    scheduler = SimpleNamespace(
        backend=None, pools={"f:2": pool}, resolve=resolve, invoke_burst=invoke_burst
    )
    plane = SimpleNamespace(scheduler=scheduler, shadows={}, run=run)
    request = SimpleNamespace(
        function="f",
        qualifier="prod",
        protocol="http",
        payload=b"{}",
        principal=SimpleNamespace(caller="key-1"),
        kind="sync",
        client_context=None,
    )
    primary = SimpleNamespace(error=None, body=b"{}", wall_ms=1.0)

    async def scenario() -> tuple[list[int], dict[str, int]]:
        mirror = ShadowMirror(plane, rand=lambda: 0.0, local_processes=False)  # type: ignore[arg-type]
        mirror.set(ShadowConfig("f", "prod", 2, 1.0))
        mirror.busy = False
        mirror._sync()  # no loop-lag ticker needed here
        counts = []
        for _ in range(5):
            mirror.offer(request, primary)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        counts.append(sum(bursts))  # 0: waiting for the burst to fill
        await asyncio.sleep(0.15)
        counts.append(sum(bursts))  # 5: the timer sent the partial burst, whole
        for _ in range(10):  # while that burst runs: 8 wait, 2 are dropped
            mirror.offer(request, primary)  # type: ignore[arg-type]
        await asyncio.sleep(0.15)
        counts.append(sum(bursts))  # still 5: never while a burst runs
        release.set()
        await asyncio.sleep(0.05)
        counts.append(sum(bursts))  # 13: the full burst went when the first finished
        await mirror.drain()
        stats = mirror.stats[("f", "prod")]
        mirror.remove("f")
        return counts, {
            "mirrored": stats.mirrored,
            "dropped": stats.dropped,
            "agreed": stats.agreed,
        }

    counts, stats = asyncio.run(scenario())
    assert counts == [0, 5, 5, 13], counts
    assert bursts == [5, 8], bursts  # each burst one call of the candidate
    assert stats == {"mirrored": 13, "dropped": 2, "agreed": 13}, stats


def _settled(shade: Server, total: int, function: str = "shade") -> dict:
    """The shadow's status once ``total`` copies are accounted for (mirrored and done, or
    dropped)."""
    deadline = time.monotonic() + 15
    while True:
        shadow = shade.client.get(f"/v1/functions/{function}/shadow").json()["shadows"][0]
        if shadow["mirrored"] + shadow["dropped"] >= total or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert shadow["mirrored"] + shadow["dropped"] == total, shadow
    return shadow


def test_stop_and_refusals(shade: Server) -> None:
    base = "/v1/functions/shade/shadow"
    assert shade.client.put(base, json={"version": 9}).status_code == 404
    assert shade.client.put(base, json={"version": 2, "alias": "nope"}).status_code == 404
    assert shade.client.put(base, json={"version": 2, "percent": 0}).status_code == 400
    assert shade.client.put(base, json={"version": 2, "percent": "x"}).status_code == 400
    assert shade.client.put(base, json={"version": 2, "ignore": "version"}).status_code == 400
    assert shade.client.put(base, json={"version": 2, "priority": "high"}).status_code == 400
    assert shade.client.put(base, json={"version": 2, "percent": 50}).status_code == 200
    assert shade.client.delete(base).status_code == 200
    assert shade.client.get(base).json() == {"shadows": []}
    assert shade.client.delete(base).status_code == 404
    assert shade.client.get("/v1/functions/nope/shadow").status_code == 404
