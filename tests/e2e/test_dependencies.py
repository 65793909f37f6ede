"""Bundles with requirements, over HTTP: installed once into a shared layer the handler imports
from, refused when they would change a library the runtime preloaded, and a clear DEPLOY_ERROR
when the package index is out of reach. pip only ever sees wheels made here."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import Server, write_bundle

HANDLER = """
import cbtest_greeting

def handler(event, context):
    return {"answer": cbtest_greeting.hello(), "file": cbtest_greeting.__file__}
"""
HERMETIC_PIP = {"PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_CONSTRAINT": ""}


def make_wheels(folder: Path) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "deploy"))
    from tiny_wheels import make_wheel

    make_wheel(folder, "cbtest-base", "1.0", "VALUE = 41\n")
    code = "import cbtest_base\n\ndef hello():\n    return cbtest_base.VALUE + 1\n"
    make_wheel(folder, "cbtest-greeting", "1.0", code, requires=["cbtest-base", "numpy>=1.20"])
    make_wheel(folder, "cycler", "0.11.0", "VERSION = 'the layer'\n")  # the runtime has 0.12
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    wheels = make_wheels(tmp_path_factory.mktemp("wheels"))
    from coldbrew.settings import Settings

    env = {
        **HERMETIC_PIP,
        "COLDBREW_PIP_NO_INDEX": "true",
        "COLDBREW_PIP_FIND_LINKS": json.dumps([str(wheels)]),
        # The shared runtime template has the real cycler imported, as it has numpy.
        "COLDBREW_PRELOAD_MODULES": json.dumps([*Settings().preload_modules, "cycler"]),
    }
    running = Server(tmp_path_factory.mktemp("coldbrew-home"), env)
    running.start()
    yield running
    running.stop()


def test_requirements_install_into_a_shared_layer(server: Server, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "a", HANDLER, 'handler = "handler:handler"\n')
    (bundle / "requirements.txt").write_text("cbtest-greeting==1.0\nnumpy>=1.20\n")
    deployed = server.deploy_folder("dep-a", bundle)
    assert deployed.status_code == 201, deployed.text
    first = server.invoke("dep-a", {}).json()
    assert first["answer"] == 42
    layer = Path(first["file"]).parents[1]
    assert layer.parent == server.home / "layers"
    assert not (layer / "numpy").exists()  # the runtime's numpy serves

    # Another function, the same set written as config: the same layer, already there.
    other = write_bundle(
        tmp_path / "b",
        HANDLER,
        'handler = "handler:handler"\ndependencies = ["cbtest_greeting==1.0"]\n',
    )
    (other / "handler.py").write_text(HANDLER + "\n# another bundle\n")
    assert server.deploy_folder("dep-b", other).status_code == 201
    assert Path(server.invoke("dep-b", {}).json()["file"]).parents[1] == layer
    assert len(list((server.home / "layers").glob("[0-9a-f]*"))) == 1


def test_a_pin_against_the_runtime_is_refused(server: Server, tmp_path: Path) -> None:
    import numpy as np

    bundle = write_bundle(tmp_path / "c", HANDLER, 'handler = "handler:handler"\n')
    (bundle / "requirements.txt").write_text("cbtest-greeting\nnumpy==1.0.0\n")
    response = server.deploy_folder("dep-conflict", bundle)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "DEPLOY_ERROR"
    assert "numpy==1.0.0" in error["message"] and np.__version__ in error["message"]
    assert server.client.get("/v1/functions/dep-conflict").status_code == 404


def test_a_package_nobody_has_is_named(server: Server, tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "d", HANDLER, 'handler = "handler:handler"\n')
    (bundle / "requirements.txt").write_text("cbtest-nowhere==9.9\n")
    response = server.deploy_folder("dep-missing", bundle)
    assert response.status_code == 422, response.text
    assert "cannot install requirement 'cbtest-nowhere==9.9'" in response.json()["error"]["message"]


def test_no_index_reachable_is_a_deploy_error(tmp_path: Path) -> None:
    env = {**HERMETIC_PIP, "COLDBREW_PIP_INDEX_URL": "http://127.0.0.1:9/simple"}
    env["COLDBREW_PIP_TIMEOUT_S"] = "2"
    offline = Server(tmp_path / "home", env)
    offline.start()
    try:
        bundle = write_bundle(tmp_path / "e", HANDLER, 'handler = "handler:handler"\n')
        (bundle / "requirements.txt").write_text("cbtest-greeting==1.0\n")
        response = offline.deploy_folder("dep-offline", bundle)
        assert response.status_code == 422, response.text
        message = response.json()["error"]["message"]
        assert "cannot install requirement 'cbtest-greeting==1.0'" in message
        assert "could not reach the package index http://127.0.0.1:9/simple" in message
    finally:
        offline.stop()


CYCLER_HANDLER = """
import os
import cycler

def handler(event, context):
    return {"version": getattr(cycler, "VERSION", None), "file": cycler.__file__}
"""


def pools(server: Server, name: str) -> list[dict]:
    return server.client.get(f"/v1/functions/{name}").json()["pools"]


def test_another_version_of_a_preloaded_package_runs_from_its_own_template(
    server: Server, tmp_path: Path
) -> None:
    """The shared runtime template imported cycler 0.12 before this version existed; the version
    pins 0.11.0. It must get 0.11.0, from the first cold start and from its version template,
    while another function still gets the runtime's."""
    import time

    bundle = write_bundle(
        tmp_path / "own", CYCLER_HANDLER, 'handler = "handler:handler"\nidle_timeout_s = 0.5\n'
    )
    (bundle / "requirements.txt").write_text("cycler==0.11.0\n")
    deployed = server.deploy_folder("dep-own", bundle)
    assert deployed.status_code == 201, deployed.text
    first = server.invoke("dep-own", {})
    assert first.status_code == 200, first.text
    assert first.json()["version"] == "the layer"
    assert Path(first.json()["file"]).parents[1].parent == server.home / "layers"

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        any(p["version_template"] for p in pools(server, "dep-own"))
        and not any(p["instances"] for p in pools(server, "dep-own"))
    ):
        time.sleep(0.1)
    again = server.invoke("dep-own", {})
    assert again.headers["x-coldbrew-start-source"].startswith("version-template")
    assert again.json()["version"] == "the layer"

    plain = write_bundle(tmp_path / "plain", CYCLER_HANDLER, 'handler = "handler:handler"\n')
    assert server.deploy_folder("dep-plain", plain).status_code == 201
    shared = server.invoke("dep-plain", {}).json()
    assert shared["version"] is None and "site-packages" in shared["file"]
