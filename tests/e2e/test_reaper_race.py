"""The reaper never forgets a pool that an invocation is about to use.

A batched invocation first waits in its pool's batch queue: the pool then has no instance and no
waiter yet. A reaper that forgot such a pool left the instance it then started out of reach:
never reaped (a process left behind after scale to zero), its version template invisible."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from support import Server, write_bundle

HANDLER = """
import os

def handler(event, context):
    return {"pid": os.getpid()}

def batch(events, contexts):
    return [{"pid": os.getpid()} for _ in events]
"""


@pytest.fixture(scope="module")
def busy_reaper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("reaper-race"), env={"COLDBREW_REAP_INTERVAL_S": "0.01"}
    )
    server.start()
    yield server
    server.stop()


def test_a_queued_batch_keeps_its_pool(busy_reaper: Server, tmp_path: Path) -> None:
    config = (
        'handler = "handler:handler"\nbatch_handler = "handler:batch"\nidle_timeout_s = 0.5\n'
        '[batching]\nmode = "fixed"\nmax_wait_ms = 300\n'  # 300 ms in the queue, no instance
    )
    bundle = write_bundle(tmp_path / "b", HANDLER, config)
    assert busy_reaper.deploy_folder("queued", bundle).status_code == 201
    response = busy_reaper.invoke("queued", {})
    assert response.status_code == 200
    pid = response.json()["pid"]
    # The instance that answered is the pool's, in sight of the reaper ...
    assert [i["pid"] for i in busy_reaper.instances("queued")] == [pid]
    # ... which stops it once idle: no process is left behind.
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert busy_reaper.instances("queued") == []
