"""Keep-alive policies, provisioned concurrency and warm-up pings in a live server.

Policy time is compressed (``COLDBREW_POLICY_MINUTE_S``) so that the hybrid policy's minutes
pass in tenths of a second."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from support import Server, write_bundle

MINUTE_S = 0.1
HANDLER = """
import json, os, time

def handler(event, context):
    if event.get("source") == "coldbrew.warmup":
        with open(os.environ["PING_FILE"], "a") as out:
            out.write("ping\\n")
    return {"pid": os.getpid()}
"""


@pytest.fixture(scope="module")
def fast_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("keepalive-home"), env={"COLDBREW_POLICY_MINUTE_S": str(MINUTE_S)}
    )
    server.start()
    yield server
    server.stop()


def instance_count(server: Server, name: str) -> int:
    return len(server.instances(name))


def test_hybrid_policy_releases_then_prewarms(fast_server: Server, tmp_path: Path) -> None:
    bundle = write_bundle(
        tmp_path / "h",
        HANDLER,
        'handler = "handler:handler"\nkeep_alive = "hybrid"\n'
        '[environment]\nPING_FILE = "/dev/null"\n',
    )
    assert fast_server.deploy_folder("periodic", bundle).status_code == 201
    gap_s = 20 * MINUTE_S  # invoked every 20 policy minutes, on an absolute schedule
    cold_flags = []
    released_between = []
    start = time.monotonic()
    for k in range(10):
        time.sleep(max(0.0, start + k * gap_s - time.monotonic()))
        response = fast_server.invoke("periodic", {})
        assert response.status_code == 200
        cold_flags.append(response.headers["x-coldbrew-cold-start"] == "true")
        time.sleep(max(0.0, start + (k + 0.4) * gap_s - time.monotonic()))
        released_between.append(instance_count(fast_server, "periodic") == 0)
    # Learning: the first invocations are cold, the histogram is not representative yet.
    assert cold_flags[0]
    # Learned: released during the gap, pre-warmed before the next call, so no cold start.
    # (Most, not all, of the last four: a loaded CI machine may delay one reaper tick.)
    assert sum(released_between[-4:]) >= 3, released_between
    assert sum(not cold for cold in cold_flags[-4:]) >= 3, cold_flags


def test_scheduled_provisioned_instances_are_warm(fast_server: Server, tmp_path: Path) -> None:
    config = (
        'handler = "handler:handler"\nidle_timeout_s = 0.2\n'
        '[environment]\nPING_FILE = "/dev/null"\n'
        '[[provisioned]]\ndays = "daily"\nstart = "00:00"\nend = "24:00"\ninstances = 2\n'
    )
    bundle = write_bundle(tmp_path / "p", HANDLER, config)
    assert fast_server.deploy_folder("provisioned", bundle).status_code == 201
    deadline = time.monotonic() + 10
    while instance_count(fast_server, "provisioned") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert instance_count(fast_server, "provisioned") == 2
    time.sleep(1.0)  # far past idle_timeout_s: provisioned instances stay
    assert instance_count(fast_server, "provisioned") == 2
    response = fast_server.invoke("provisioned", {})
    assert response.headers["x-coldbrew-cold-start"] == "false"


def test_warmup_pings(fast_server: Server, tmp_path: Path) -> None:
    tmp_path.chmod(0o777)  # the handler runs as its function's own uid (docs/SECURITY.md)
    pings = tmp_path / "pings.txt"
    config = (
        'handler = "handler:handler"\nmin_instances = 1\nwarmup_interval_s = 0.3\n'
        f'[environment]\nPING_FILE = "{pings}"\n'
    )
    bundle = write_bundle(tmp_path / "w", HANDLER, config)
    assert fast_server.deploy_folder("pinged", bundle).status_code == 201
    deadline = time.monotonic() + 10  # pings every 0.3 s: polled, not a fixed wait
    while time.monotonic() < deadline and not (
        pings.exists() and pings.read_text().count("ping") >= 2
    ):
        time.sleep(0.1)
    assert pings.exists() and pings.read_text().count("ping") >= 2
    # Pings are not invocations: nothing was metered for this function. One meter flush
    # (meter_flush_interval_s = 0.5) after the pings first, so a metered ping would show.
    time.sleep(0.6)
    usage = fast_server.client.get("/v1/usage", params={"function": "pinged"})
    assert usage.status_code == 200
    assert "warmup-" not in usage.text


def test_provisioned_instances_share_the_version_template(
    fast_server: Server, tmp_path: Path
) -> None:
    """The version template is loaded first and every provisioned instance forks from it: none
    keeps a private copy of the model (what keeps 4 warm instances under 2x the memory of one)."""
    config = (
        'handler = "handler:handler"\nmin_instances = 3\n[environment]\nPING_FILE = "/dev/null"\n'
    )
    bundle = write_bundle(tmp_path / "s", HANDLER, config)
    assert fast_server.deploy_folder("shared", bundle).status_code == 201
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pool = fast_server.client.get("/v1/functions/shared").json()["pools"][0]
        ready = [i for i in pool["instances"] if i["state"] == "ready"]
        if len(ready) == 3 and pool["version_template_pid"]:
            break
        time.sleep(0.1)
    assert len(ready) == 3 and pool["version_template"] is True
    template = pool["version_template_pid"]
    assert {psutil.Process(i["pid"]).ppid() for i in ready} == {template}
