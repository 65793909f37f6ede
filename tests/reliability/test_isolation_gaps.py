"""Gaps left by isolation (issue 12) and dependency layers (issue 13), each closed:

1. a dependency layer's own runtime template imports the layer's packages as the function's uid
   (with its limits and ``no_new_privs``), never as root, and still preloads them;
2. TorchScript and torch.export programs are refused without trust, as pickles are;
3. callers queued behind a slow first start that fails get INIT_ERROR, not THROTTLED;
4. a home under a folder whose mode is reset after the gateway started (pytest does this to
   ``/tmp/pytest-of-<user>`` when a second session starts) keeps working, and the test session
   has a base folder of its own.

The root-only tests skip without root unless COLDBREW_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from coldbrew.security.artifacts import UntrustedArtifact, check_model_trust
from support import Server, write_bundle

HERMETIC_PIP = {"PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_CONSTRAINT": ""}


def _require_root() -> None:
    if os.geteuid() == 0:
        return
    reason = "isolation needs coldbrew to run as root"
    if os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (COLDBREW_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


# --------------------------------------------------------------------------- 1. layer templates
# The layer's cycler (the runtime has 0.12, which the runtime template preloads) records who
# imported it: the deployer's code, running wherever the layer is imported.
SPY = """
import os, resource

def _status():
    return dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)

IMPORTED = {
    "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": os.getgroups(),
    "pid": os.getpid(), "no_new_privs": _status()["NoNewPrivs"].strip(),
    "nproc": resource.getrlimit(resource.RLIMIT_NPROC), "tmp": os.environ.get("TMPDIR"),
}
VERSION = "the layer"
"""
SPY_HANDLER = """
import os
import cycler

def handler(event, context):
    memory = [line for line in open("/proc/self/cgroup") if ":memory:" in line]
    return {
        "imported": cycler.IMPORTED, "version": cycler.VERSION, "uid": os.getuid(),
        "pid": os.getpid(), "cgroup": memory[0].strip().split(":", 2)[2] if memory else None,
    }
"""


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _require_root()
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "deploy"))
    from tiny_wheels import make_wheel

    wheels = tmp_path_factory.mktemp("wheels")
    make_wheel(wheels, "cycler", "0.11.0", SPY)
    env = {
        **HERMETIC_PIP,
        "COLDBREW_PIP_NO_INDEX": "true",
        "COLDBREW_PIP_FIND_LINKS": json.dumps([str(wheels)]),
        "COLDBREW_PRELOAD_MODULES": json.dumps(["cycler"]),  # the runtime's, imported as root
    }
    server = Server(tmp_path_factory.mktemp("layered-home"), env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _pools(server: Server, name: str) -> list[dict[str, Any]]:
    return list(server.client.get(f"/v1/functions/{name}").json()["pools"])


def _wait_for_version_template(server: Server, name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pools = _pools(server, name)
        if any(p["version_template"] for p in pools) and not any(p["instances"] for p in pools):
            return
        time.sleep(0.1)
    raise AssertionError(f"no idle version template: {_pools(server, name)}")


def test_a_layers_own_template_imports_it_as_the_function(layered: Server, tmp_path: Path) -> None:
    config = 'handler = "handler:handler"\nidle_timeout_s = 0.5\nmemory_mb = 256\n'
    bundle = write_bundle(tmp_path / "spy", SPY_HANDLER, config)
    (bundle / "requirements.txt").write_text("cycler==0.11.0\n")
    deployed = layered.deploy_folder("spy", bundle)
    assert deployed.status_code == 201, deployed.text
    enforcement = layered.client.get("/v1/info").json()["memory_enforcement"]

    first = layered.invoke("spy", {})
    assert first.status_code == 200, first.text
    _check_imported_as_the_function(first.json(), enforcement)
    assert first.headers["x-coldbrew-start-source"].startswith("runtime-template")

    _wait_for_version_template(layered, "spy")  # forked from the layer's own template
    again = layered.invoke("spy", {})
    assert again.status_code == 200, again.text
    assert again.headers["x-coldbrew-start-source"].startswith("version-template")
    _check_imported_as_the_function(again.json(), enforcement)
    assert again.json()["imported"]["pid"] == first.json()["imported"]["pid"]  # one template


def test_a_killed_layer_template_starts_again_as_the_function(layered: Server) -> None:
    """After the test above: SIGKILL the layer's own template, replace the version's template
    and instances (restart), and the next cold start gets a new one, still unprivileged."""
    import signal

    before = layered.invoke("spy", {}).json()
    os.kill(before["imported"]["pid"], signal.SIGKILL)
    assert layered.client.post("/v1/functions/spy/restart").status_code == 200
    deadline = time.monotonic() + 30
    seen = before
    while time.monotonic() < deadline and seen["imported"]["pid"] == before["imported"]["pid"]:
        response = layered.invoke("spy", {})
        assert response.status_code == 200, response.text
        seen = response.json()
        time.sleep(0.2)
    assert seen["imported"]["pid"] != before["imported"]["pid"], seen
    enforcement = layered.client.get("/v1/info").json()["memory_enforcement"]
    _check_imported_as_the_function(seen, enforcement)


def _check_imported_as_the_function(seen: dict[str, Any], enforcement: str) -> None:
    imported = seen["imported"]
    assert seen["version"] == "the layer"
    assert imported["uid"] == imported["euid"] == seen["uid"], seen
    assert imported["uid"] not in (0, os.getuid()), seen  # never root, never the gateway's
    assert imported["gid"] != 0 and 0 not in imported["groups"], seen
    assert imported["no_new_privs"] == "1", seen
    assert imported["nproc"][0] == imported["nproc"][1] == 4096, seen
    tmp = imported["tmp"]
    assert tmp and tmp != "/tmp" and os.stat(tmp).st_uid == imported["uid"], seen
    # Imported once, in the template every instance forks from: the preload still pays off.
    assert imported["pid"] != seen["pid"], seen
    if enforcement == "cgroup":  # groups made by the gateway, handed to an unprivileged template
        assert seen["cgroup"] and Path(seen["cgroup"]).name.startswith("v-"), seen


# --------------------------------------------------------------------------- 2. torch programs
@pytest.mark.parametrize(("name", "fmt"), [("net.pt", "torchscript"), ("net.pt2", "torch_export")])
def test_torch_programs_need_trust(tmp_path: Path, name: str, fmt: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04 not a real archive: refused before anything reads it")
    with pytest.raises(UntrustedArtifact, match="--trust") as refused:
        check_model_trust(path, fmt, trusted=False)
    assert refused.value.code == "UNTRUSTED_ARTIFACT"
    check_model_trust(path, fmt, trusted=True)  # the deployer vouched for it


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"COLDBREW_PICKLE_POLICY": "refuse", "COLDBREW_PRELOAD_MODULES": "[]"}
    server = Server(tmp_path_factory.mktemp("gaps-home"), env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_torchscript_deploy_is_refused_without_trust(plain: Server, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"PK\x03\x04 a TorchScript archive would run its own program")
    response = plain.deploy_file("scripted", model)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "UNTRUSTED_ARTIFACT" and "TorchScript" in error["message"], error
    assert plain.client.get("/v1/functions/scripted").status_code == 404


# --------------------------------------------------------------------------- 3. slow crash loop
SLOW_BROKEN = """
import os, time

if os.environ.get("AWS_LAMBDA_FUNCTION_VERSION") != "trial":
    time.sleep(2.5)  # longer than queue_timeout_s
    raise RuntimeError("model store unreachable")

def handler(event, context):
    return {"ok": True}
"""


def test_callers_queued_behind_a_slow_failing_start_get_init_error(
    plain: Server, tmp_path: Path
) -> None:
    config = 'handler = "handler:handler"\nmax_instances = 1\nqueue_timeout_s = 1\n'
    deployed = plain.deploy_folder("slowcrash", write_bundle(tmp_path / "b", SLOW_BROKEN, config))
    assert deployed.status_code == 201, deployed.text

    def call(delay: float) -> tuple[httpx.Response, float]:
        time.sleep(delay)
        with httpx.Client(base_url=plain.url, timeout=60) as client:
            response = client.post("/v1/functions/slowcrash/invoke", json={})
        return response, time.monotonic()

    with ThreadPoolExecutor(3) as pool:  # the first starts the instance, the others queue
        results = list(pool.map(call, [0.0, 0.3, 0.4]))
    codes = [response.json()["error"]["code"] for response, _ in results]
    assert codes == ["INIT_ERROR"] * 3, codes  # not 429 THROTTLED after queue_timeout_s
    for response, _ in results:
        assert response.status_code == 502
        error = response.json()["error"]
        assert error["errorType"] == "RuntimeError"
        assert error["errorMessage"] == "model store unreachable"
    # Woken by the first start's failure, not left for another start of their own.
    ended = [at for _, at in results]
    assert max(ended) - min(ended) < 2.0, ended


# --------------------------------------------------------------------------- 4. reaching the home
def test_a_home_under_a_folder_reset_to_0700_keeps_working(tmp_path: Path) -> None:
    _require_root()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    server = Server(private / "home", {"COLDBREW_PRELOAD_MODULES": "[]"})
    server.start()
    try:
        os.chmod(private, 0o700)  # what pytest does to its root when another session starts
        code = "import os\n\ndef handler(event, context):\n    return {'uid': os.getuid()}\n"
        bundle = write_bundle(tmp_path / "b", code, 'handler = "handler:handler"\n')
        deployed = server.deploy_folder("reach", bundle)
        assert deployed.status_code == 201, deployed.text
        response = server.invoke("reach", {})
        assert response.status_code == 200, response.text
        assert response.json()["uid"] != 0
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert f"isolation: {private} lost the search permission" in log, log[-2000:]


def test_the_session_has_a_base_folder_of_its_own(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> None:
    if any(str(a).startswith("--basetemp") for a in pytestconfig.invocation_params.args):
        pytest.skip("--basetemp given: the developer chose")
    base = tmp_path_factory.getbasetemp()
    assert "pytest-of-" not in str(base), base  # never the root other sessions reset
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # pytest-xdist: each worker's folder is inside the session's (the controller's)
        assert base.name == f"popen-{worker}", base
        assert base.parent.name == f"coldbrew-tests-{os.getuid()}-{os.getppid()}", base
    else:
        assert base.name == f"coldbrew-tests-{os.getuid()}-{os.getpid()}"
