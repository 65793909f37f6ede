"""Fault injection with real processes (issue 12, item 9): kill -9 from outside, mid-work.

What tests/e2e already covers, and is not repeated here (docs/RELIABILITY.md lists both):
a handler that exits (``os._exit``: 502 INSTANCE_CRASHED, next call cold and fine,
tests/e2e/test_instances.py::test_crash_fails_only_its_invocation), memory past memory_mb
(502 OUT_OF_MEMORY, bystanders unharmed: ``test_memory_limit_kills_only_that_instance`` and
``test_memory_limit_without_cgroups``), a timeout (504 TIMEOUT, the instance replaced:
``test_timeout_replaces_instance``), a crash loop (tests/reliability/test_crash_loop.py) and a
gateway restart with functions deployed (tests/e2e/test_persistence.py).

Here: SIGKILL sent by someone else (the OOM killer, an operator) to an instance in the middle
of an invocation, to a version template and to the runtime template.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from support import Server, pid_alive, write_bundle

HANDLER = """
import os, time

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid(), "ppid": os.getppid()}
"""
CONFIG = 'handler = "handler:handler"\nidle_timeout_s = 0.5\nmax_instances = 2\ntimeout_s = 30\n'


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("faults"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def deploy(server: Server, tmp_path: Path, name: str) -> None:
    response = server.deploy_folder(name, write_bundle(tmp_path / name, HANDLER, CONFIG))
    assert response.status_code == 201, response.text


def wait_for(predicate: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def pools(server: Server, name: str) -> list[dict[str, Any]]:
    return server.client.get(f"/v1/functions/{name}").json()["pools"]


def clean_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert "Traceback" not in response.text


def test_instance_killed_mid_invocation(faulty: Server, tmp_path: Path) -> None:
    deploy(faulty, tmp_path, "victim")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(faulty.invoke, "victim", {"sleep": 20})
        busy = wait_for(
            lambda: [
                i for i in faulty.instances("victim") if i["inflight"] == 1 and i["state"] == "busy"
            ],
            timeout_s=20,
        )
        pid = busy[0]["pid"]
        started = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        response = pending.result(timeout=30)
    clean_error(response, 502, "INSTANCE_CRASHED")
    assert time.monotonic() - started < 5, "the caller learns at once, not at the timeout"
    after = faulty.invoke("victim", {})
    assert after.status_code == 200, after.text
    assert after.json()["pid"] != pid
    assert all(i["pid"] != pid for i in faulty.instances("victim"))


def test_version_template_killed(faulty: Server, tmp_path: Path) -> None:
    deploy(faulty, tmp_path, "templated")
    assert faulty.invoke("templated", {}).status_code == 200
    [pool] = wait_for(lambda: [p for p in pools(faulty, "templated") if p["version_template_pid"]])
    template = pool["version_template_pid"]
    wait_for(lambda: not faulty.instances("templated"))  # scaled to zero: next call is cold
    os.kill(template, signal.SIGKILL)
    wait_for(lambda: not pid_alive(template))
    response = faulty.invoke("templated", {})
    assert response.status_code == 200, response.text
    assert response.headers["x-coldbrew-cold-start"] == "true"
    # The gateway noticed: the dead template is no longer the pool's (a new one may follow).
    wait_for(lambda: pools(faulty, "templated")[0]["version_template_pid"] != template)
    with ThreadPoolExecutor(2) as pool_:
        answers = list(pool_.map(lambda _: faulty.invoke("templated", {"sleep": 0.2}), range(4)))
    assert [a.status_code for a in answers] == [200] * 4


def runtime_template(server: Server) -> psutil.Process:
    """The gateway's own child running ``coldbrew.runtime.template`` (version templates and
    instances are its children, not the gateway's)."""
    assert server.process is not None
    found = [
        child
        for child in psutil.Process(server.process.pid).children()
        if "coldbrew.runtime.template" in " ".join(child.cmdline())
    ]
    assert len(found) == 1, found
    return found[0]


def test_runtime_template_killed(faulty: Server, tmp_path: Path) -> None:
    deploy(faulty, tmp_path, "before")
    old = runtime_template(faulty)
    # Its waiting spare (COLDBREW_SPARES, on by default): a fork not yet given to anyone.
    spares = wait_for(lambda: [c.pid for c in old.children() if c.uids().real == old.uids().real])
    old.send_signal(signal.SIGKILL)
    wait_for(lambda: not pid_alive(old.pid))
    # A new function (its trial load forks from the runtime template) and a cold start of one
    # whose version template is not up yet both work: the template is started again on demand.
    deploy(faulty, tmp_path, "after")
    for name in ("after", "before"):
        response = faulty.invoke(name, {})
        assert response.status_code == 200, response.text
    new = runtime_template(faulty)
    assert new.pid != old.pid
    # The dead template's waiting spare does not linger as an orphan.
    wait_for(lambda: not any(pid_alive(pid) for pid in spares), timeout_s=10)
