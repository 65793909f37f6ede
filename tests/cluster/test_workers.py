"""``coldbrew serve --workers 2``: two gateway processes on one port, one platform.

One supervisor for the module (starting gateways is the slow part): both workers serve the
same functions, ``max_instances`` holds across them (a second worker may not start an instance
the first one holds the only slot for), a worker killed with SIGKILL costs only its in-flight
calls while the other keeps serving and the supervisor starts it again, and async events it
had leased run elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from workers_support import Workers

from coldbrew.cluster.supervisor import healthy
from support import free_port, write_bundle

ECHO = "def handler(event, context):\n    return {'echo': event}\n"
SLOW = """
import time

def handler(event, context):
    time.sleep(event.get("s", 0.05))
    return {"i": event.get("i")}
"""
ONE_SLOT = "handler = 'handler:handler'\nmax_instances = 1\nconcurrency = 1\nqueue_timeout_s = 1\n"
ASYNC = (
    "handler = 'handler:handler'\nconcurrency = 4\nmax_queue = 1000\n\n"
    "[destinations]\non_success = 'results'\n"
)
ENV = {"COLDBREW_ASYNC_VISIBILITY_S": "2", "COLDBREW_ASYNC_POLL_S": "0.1"}


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Workers]:
    home = tmp_path_factory.mktemp("workers") / "home"
    running = Workers(home, 2, {**ENV, "COLDBREW_REDIS_URL": redis_url})
    try:
        running.start()
        folders = tmp_path_factory.mktemp("bundles")
        for name, code, config in (
            ("echo", ECHO, "handler = 'handler:handler'\n"),
            ("oneslot", SLOW, ONE_SLOT),
            ("queued", SLOW, ASYNC),
        ):
            folder = write_bundle(folders / name, code, config)
            response = running.client.post(
                "/v1/functions",
                data={"name": name},
                files={"file": ("b.tar.gz", _pack(folder))},
            )
            assert response.status_code == 201, response.text
        yield running
    finally:
        running.stop()


def _pack(folder: Path) -> bytes:
    from support import pack_folder

    return pack_folder(folder)


def test_more_than_one_worker_needs_redis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLDBREW_REDIS_URL"}
    env["COLDBREW_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "coldbrew.cli.main",
            "serve",
            "--workers",
            "2",
            "--port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--workers 2 needs COLDBREW_REDIS_URL" in done.stderr


def test_both_workers_serve_the_same_functions(workers: Workers) -> None:
    gateways = workers.gateways()
    assert [g["worker"] for g in gateways] == [0, 1]
    assert len({g["pid"] for g in gateways}) == 2
    for index in (0, 1):
        with workers.worker_client(index) as client:
            answer = client.post("/v1/functions/echo/invoke", json={"w": index})
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"echo": {"w": index}}
    # Each worker is a gateway of its own, with its own instances: the nodes view shows them
    # (the other worker's record is as old as its last heartbeat, 2 s at most).
    workers.wait_for(lambda: all(g["instances"] >= 1 for g in workers.gateways()), 10)


def test_max_instances_holds_across_workers(workers: Workers) -> None:
    first, second = workers.worker_client(0), workers.worker_client(1)
    with first, second, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(first.post, "/v1/functions/oneslot/invoke", json={"s": 4})
        workers.wait_for(lambda: _busy(first, "oneslot"), 60)
        refused = second.post("/v1/functions/oneslot/invoke", json={"s": 0})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "THROTTLED"
        assert slow.result(60).status_code == 200


def _busy(client: httpx.Client, name: str) -> bool:
    info = client.get(f"/v1/functions/{name}").json()
    return any(i.get("inflight", 0) > 0 for p in info["pools"] for i in p["instances"])


def test_a_killed_worker_costs_only_its_calls_and_comes_back(workers: Workers) -> None:
    before = {g["worker"]: g["pid"] for g in workers.gateways()}
    stop = threading.Event()
    outcomes: list[tuple[float, bool]] = []

    def loop() -> None:
        with httpx.Client(base_url=workers.url, timeout=30) as client:  # keep-alive
            while not stop.is_set():
                try:
                    ok = client.post("/v1/functions/echo/invoke", json={}).status_code == 200
                except httpx.TransportError:
                    ok = False
                outcomes.append((time.monotonic(), ok))

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        os.kill(before[1], signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    failures = [t for t, ok in outcomes if not ok]
    assert len(failures) <= len(threads), f"{len(failures)} failures for {len(threads)} clients"
    assert all(t >= killed_at for t in failures)
    after = [ok for t, ok in outcomes if t > killed_at + 1]
    assert after and all(after), "the surviving worker did not serve every call"
    # The supervisor starts worker 1 again (a new process).
    workers.wait_for(
        lambda: {g["worker"]: g["pid"] for g in workers.gateways()}.get(1) not in (None, before[1]),
        120,
    )


def test_async_events_of_a_killed_worker_run_elsewhere(workers: Workers) -> None:
    workers.wait_for(lambda: len(workers.gateways()) == 2, 120)  # the last test's restart
    with ThreadPoolExecutor(4) as pool:
        accepted = list(
            pool.map(
                lambda i: workers.client.post(
                    "/v1/functions/queued/invoke?async=1", json={"i": i, "s": 0.05}
                ).json()["request_id"],
                range(200),
            )
        )
    time.sleep(0.5)  # some run, some are leased by each worker
    victim = next(g for g in workers.gateways() if g["worker"] == 0)
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 90
    seen: set[str] = set()
    while time.monotonic() < deadline and not set(accepted) <= seen:
        seen |= _results(workers)
        time.sleep(0.5)
    assert set(accepted) <= seen, f"{len(set(accepted) - seen)} accepted events never ran"


def _results(workers: Workers) -> set[str]:
    seen, after = set(), 0
    while True:
        try:
            page = workers.client.get(
                "/v1/functions/queued/results", params={"after": after, "limit": 1000}
            ).json()["results"]
        except httpx.TransportError:
            return seen
        if not page:
            return seen
        seen |= {str(r["requestContext"]["requestId"]) for r in page}
        after = page[-1]["id"]


def test_a_hung_worker_is_killed_and_started_again(workers: Workers) -> None:
    """A worker that stops answering (SIGSTOP: alive, silent) fails its health checks and is
    replaced; the other one serves meanwhile."""
    workers.wait_for(lambda: len(workers.gateways()) == 2, 120)  # the last test's restart
    # Up, and seen up by the supervisor (it gives a worker still starting 180 s, not 3 checks).
    workers.wait_for(lambda: healthy(workers.socket_of(0)), 120)
    time.sleep(1.0)
    before = {g["worker"]: g["pid"] for g in workers.gateways()}
    os.kill(before[0], signal.SIGSTOP)
    try:
        with workers.worker_client(1) as other:
            assert other.post("/v1/functions/echo/invoke", json={}).status_code == 200
        workers.wait_for(lambda: not _alive(before[0]), 60)  # 3 failed checks, 5 s apart
    finally:
        if _alive(before[0]):
            os.kill(before[0], signal.SIGCONT)
    workers.wait_for(
        lambda: {g["worker"]: g["pid"] for g in workers.gateways()}.get(0) not in (None, before[0]),
        120,
    )


def _alive(pid: int) -> bool:
    from support import pid_alive

    return pid_alive(pid)
