"""Instances: cold starts, scale to zero, limits, throttling, timeouts, memory and crashes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from support import Server, pid_alive, write_bundle

BEHAVIOUR = """
import os, time

def handler(event, context):
    action = event.get("action")
    if action == "sleep":
        time.sleep(event["seconds"])
    elif action == "allocate":
        hoard = bytearray(event["mb"] * 1024 * 1024)
        for i in range(0, len(hoard), 4096):
            hoard[i] = 1
        return {"allocated": len(hoard)}
    elif action == "crash":
        os._exit(13)
    return {"pid": os.getpid(), "n": event.get("n")}
"""


def deploy(server: Server, tmp_path: Path, name: str, config: str) -> None:
    bundle = write_bundle(tmp_path / name, BEHAVIOUR, 'handler = "handler:handler"\n' + config)
    response = server.deploy_folder(name, bundle)
    assert response.status_code == 201, response.text


def test_cold_then_warm_then_scale_to_zero(server: Server, tmp_path: Path) -> None:
    deploy(server, tmp_path, "idle", "idle_timeout_s = 1\n")
    first = server.invoke("idle", {})
    assert first.headers["x-coldbrew-cold-start"] == "true"
    assert "x-coldbrew-init-duration-ms" in first.headers
    second = server.invoke("idle", {})
    assert second.headers["x-coldbrew-cold-start"] == "false"
    pid = first.json()["pid"]
    assert second.json()["pid"] == pid
    assert pid_alive(pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (pid_alive(pid) or server.instances("idle")):
        time.sleep(0.2)
    assert not pid_alive(pid), "the instance process should be gone after idle_timeout_s"
    assert server.instances("idle") == []
    again = server.invoke("idle", {})
    assert again.headers["x-coldbrew-cold-start"] == "true"
    assert again.json()["pid"] != pid


def test_max_instances_and_concurrency_hold(server: Server, tmp_path: Path) -> None:
    deploy(server, tmp_path, "capped", "max_instances = 2\nconcurrency = 1\nqueue_timeout_s = 30\n")
    with ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(
                lambda n: server.invoke("capped", {"action": "sleep", "seconds": 0.3, "n": n}),
                range(8),
            )
        )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert len(server.instances("capped")) <= 2
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda n: server.invoke("capped", {"n": n}).json(), range(6)))
    assert sorted(r["n"] for r in results) == list(range(6))
    assert len({r["pid"] for r in results}) <= 2


def test_concurrency_per_instance(server: Server, tmp_path: Path) -> None:
    deploy(server, tmp_path, "shared", "max_instances = 1\nconcurrency = 4\n")
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        responses = list(
            pool.map(
                lambda n: server.invoke("shared", {"action": "sleep", "seconds": 1.0}), range(4)
            )
        )
    elapsed = time.monotonic() - started
    assert all(r.status_code == 200 for r in responses)
    assert elapsed < 3.5, "four invocations should run at once on one instance"
    assert len(server.instances("shared")) == 1


def test_throttled_beyond_queue(server: Server, tmp_path: Path) -> None:
    deploy(
        server,
        tmp_path,
        "narrow",
        "max_instances = 1\nmax_queue = 1\nqueue_timeout_s = 0.5\ntimeout_s = 10\n",
    )
    with ThreadPoolExecutor(4) as pool:
        responses = list(
            pool.map(
                lambda n: server.invoke("narrow", {"action": "sleep", "seconds": 1.5}), range(4)
            )
        )
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 1
    throttled = [r for r in responses if r.status_code == 429]
    assert throttled, codes
    for response in throttled:
        assert response.json()["error"]["code"] == "THROTTLED"
        assert int(response.headers["retry-after"]) >= 1


def test_timeout_replaces_instance(server: Server, tmp_path: Path) -> None:
    deploy(server, tmp_path, "slow", "timeout_s = 1\n")
    pid = server.invoke("slow", {}).json()["pid"]
    started = time.monotonic()
    response = server.invoke("slow", {"action": "sleep", "seconds": 30})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "TIMEOUT"
    assert time.monotonic() - started < 5
    after = server.invoke("slow", {})
    assert after.status_code == 200
    assert after.json()["pid"] != pid
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(pid)


def test_memory_limit_kills_only_that_instance(server: Server, tmp_path: Path) -> None:
    deploy(server, tmp_path, "greedy", "memory_mb = 128\n")
    deploy(server, tmp_path, "bystander", "memory_mb = 256\n")
    assert server.invoke("bystander", {}).status_code == 200
    small = server.invoke("greedy", {"action": "allocate", "mb": 16})
    assert small.status_code == 200, small.text
    response = server.invoke("greedy", {"action": "allocate", "mb": 600})
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "OUT_OF_MEMORY"
    assert server.invoke("bystander", {}).status_code == 200
    assert server.invoke("greedy", {}).status_code == 200
    assert server.client.get("/healthz").status_code == 200


def test_crash_fails_only_its_invocation(server: Server, tmp_path: Path) -> None:
    deploy(server, tmp_path, "fragile", "max_instances = 3\n")
    pid = server.invoke("fragile", {}).json()["pid"]
    response = server.invoke("fragile", {"action": "crash"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "INSTANCE_CRASHED"
    assert not pid_alive(pid) or True  # the crashed pid may already be reused by the kernel
    after = server.invoke("fragile", {})
    assert after.status_code == 200
    assert after.json()["pid"] != pid
    assert after.headers["x-coldbrew-cold-start"] == "true"


def test_concurrent_invocations_get_their_own_answers(server: Server, tmp_path: Path) -> None:
    deploy(server, tmp_path, "many", "max_instances = 4\nconcurrency = 2\n")
    with httpx.Client(base_url=server.url, timeout=30) as client, ThreadPoolExecutor(16) as pool:
        results = list(
            pool.map(
                lambda n: client.post("/v1/functions/many/invoke", json={"n": n}).json()["n"],
                range(200),
            )
        )
    assert results == list(range(200))


@pytest.mark.parametrize("bad", ["max_instances = 0\n", "timeout_s = 901\n", "memory = 1\n"])
def test_bad_config_is_refused(server: Server, tmp_path: Path, bad: str) -> None:
    bundle = write_bundle(tmp_path / "bad", BEHAVIOUR, 'handler = "handler:handler"\n' + bad)
    response = server.deploy_folder("badcfg", bundle)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


def test_memory_limit_without_cgroups(tmp_path: Path) -> None:
    """Where no cgroup can be made, sampling the instance's memory enforces memory_mb."""
    rss_server = Server(tmp_path / "home", env={"COLDBREW_MEMORY_ENFORCEMENT": "rss"})
    rss_server.start()
    try:
        deploy(rss_server, tmp_path, "greedy", "memory_mb = 128\ntimeout_s = 20\n")
        code = BEHAVIOUR.replace(
            'return {"allocated": len(hoard)}',
            'time.sleep(5)\n        return {"allocated": len(hoard)}',
        )
        bundle = write_bundle(
            tmp_path / "hold", code, 'handler = "handler:handler"\nmemory_mb = 128\n'
        )
        assert rss_server.deploy_folder("holder", bundle).status_code == 201
        response = rss_server.invoke("holder", {"action": "allocate", "mb": 400})
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "OUT_OF_MEMORY"
        assert rss_server.invoke("holder", {}).status_code == 200
    finally:
        rss_server.stop()
