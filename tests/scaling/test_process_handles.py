"""Process handles (backends/process.py) on real processes, and what the pool does with an
instance whose process goes away, on the in-process backend (no forks, milliseconds)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from coldbrew import errors
from coldbrew.backends.process import ChildProcess, ProcessGroup
from dataplane.test_dataplane_unit import Plane, run  # by path: the in-process test plane

SLEEPER = [sys.executable, "-c", "import time; time.sleep(30)"]
# A session leader that starts a grandchild in its own process group, as a handler might.
PARENT = [
    sys.executable,
    "-c",
    "import subprocess, sys, time; "
    "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
    "print(c.pid, flush=True); time.sleep(30)",
]


def _gone(pid: int, within_s: float = 5.0) -> bool:
    handle = ProcessGroup(pid)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not handle.is_alive():
            return True
        time.sleep(0.01)
    return False


def test_a_process_group_handle_kills_the_whole_group() -> None:
    popen = subprocess.Popen(PARENT, stdout=subprocess.PIPE, start_new_session=True)
    try:
        grandchild = int(popen.stdout.readline())  # type: ignore[union-attr]
        handle = ProcessGroup(popen.pid)
        assert handle.pid == popen.pid and handle.is_alive() and handle.ping(timeout=1)
        assert ProcessGroup(grandchild).is_alive()
        handle.kill()
        popen.wait(5)
        # The leader is a zombie until waited for, then gone; the grandchild went with it.
        assert not handle.is_alive()
        assert _gone(grandchild)
    finally:
        popen.kill()
        popen.wait()


def test_a_zombie_is_not_alive() -> None:
    popen = subprocess.Popen(SLEEPER, start_new_session=True)
    handle = ProcessGroup(popen.pid)
    handle.terminate()
    deadline = time.monotonic() + 5
    while handle.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not handle.is_alive()  # exited, not yet reaped by its parent (us)
    assert popen.wait(1) == -15


def test_a_child_process_handle_stops_and_reaps() -> None:
    handle = ChildProcess(subprocess.Popen(SLEEPER))
    assert handle.is_alive() and handle.ping()
    assert handle.join(timeout=0.05) is None  # still running
    handle.stop(grace_s=5)
    assert not handle.is_alive() and handle.popen.returncode == -15
    handle.kill()  # already gone: no error


def test_an_instance_holds_its_process_handle(tmp_path: Path) -> None:
    async def scenario(plane: Plane) -> None:
        await plane.invoke("echo", {})
        (instance,) = next(iter(plane.scheduler.pools.values())).instances
        assert instance.process is not None and instance.process.is_alive()
        assert instance.describe()["pid"] == instance.process.pid
        instance.process.kill()
        await instance.wait_closed()
        assert not instance.process.is_alive()

    run(tmp_path, {"echo": {}}, scenario)


def test_a_killed_process_fails_only_its_calls_and_is_replaced(tmp_path: Path) -> None:
    async def scenario(plane: Plane) -> None:
        plane.backend.delay_s = 0.2
        slow = asyncio.create_task(plane.invoke("echo", {"n": 1}))
        await asyncio.sleep(0.05)  # the call is on the instance
        (instance,) = next(iter(plane.scheduler.pools.values())).instances
        assert instance.process is not None
        instance.process.kill()
        with pytest.raises(errors.InstanceCrashed):  # the caller learns why, not a timeout
            await slow
        plane.backend.delay_s = 0.0
        again = await plane.invoke("echo", {"n": 2})
        assert again.error is None and orjson.loads(again.body) == {"echo": {"n": 2}}
        assert again.cold_start and len(plane.backend.spawned) == 2

    run(tmp_path, {"echo": {}}, scenario)


@pytest.mark.parametrize("handle", [ProcessGroup(2**22 + 12345), ProcessGroup(2**22 + 54321, None)])
def test_handles_of_missing_processes_are_harmless(handle: ProcessGroup) -> None:
    assert not handle.is_alive() and not handle.ping(0.01)
    handle.terminate()
    handle.kill()
    handle.reap()
