"""Model updates (a new model under the current code and config), the refusal to swap a
bundle's handler for a bare model, and restarts (instances and version template replaced)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from support import Server, write_bundle

HANDLER = """
import os
import numpy as np

def handler(event, context):
    rows = np.asarray(event["x"], dtype=float)
    return {"handler": "custom", "greeting": os.environ["GREETING"],
            "pred": context.model.predict(rows)["predictions"]}
"""
CONFIG = """handler = "handler:handler"
model = "models/model.joblib"
batching.mode = "off"

[environment]
GREETING = "hello"
"""
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("update-models")
    iris = load_iris()
    real = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
    constant = DummyClassifier(strategy="constant", constant=2).fit(iris.data, iris.target)
    joblib.dump(real, folder / "model.joblib")
    joblib.dump(constant, folder / "constant.joblib")
    return {"real": folder / "model.joblib", "constant": folder / "constant.joblib"}


def deploy_model(server: Server, name: str, path: Path, **fields: str) -> Any:
    with path.open("rb") as file:
        return server.client.post(
            "/v1/functions", data={"name": name, **fields}, files={"file": (path.name, file)}
        )


def handler_bundle(folder: Path, models: dict[str, Path]) -> Path:
    bundle = write_bundle(folder, HANDLER, CONFIG)
    (bundle / "models").mkdir()
    (bundle / "models" / "model.joblib").write_bytes(models["real"].read_bytes())
    return bundle


def test_model_only_deploy_keeps_code_and_config(
    server: Server, models: dict[str, Path], tmp_path: Path
) -> None:
    assert server.deploy_folder("upd", handler_bundle(tmp_path / "b", models)).status_code == 201
    first = server.invoke("upd", {"x": ROWS}).json()
    assert first == {"handler": "custom", "greeting": "hello", "pred": [0, 2]}

    response = deploy_model(server, "upd", models["constant"], model_only="true")
    assert response.status_code == 201, response.text
    assert response.json()["version"] == 2
    second = server.invoke("upd", {"x": [ROWS[0]]}).json()
    assert second == {"handler": "custom", "greeting": "hello", "pred": [2]}  # new model

    versions = server.client.get("/v1/functions/upd/versions").json()["versions"]
    config = next(v for v in versions if v["number"] == 2)["config"]
    assert config["handler"] == "handler:handler"
    assert config["model"] == "models/constant.joblib"
    assert config["environment"] == {"GREETING": "hello"}

    # Rolled back by pointing an alias at the old version.
    put = server.client.put("/v1/functions/upd/aliases/prod", json={"version": 1})
    assert put.status_code == 200
    assert server.invoke("upd:prod", {"x": [ROWS[0]]}).json()["pred"] == [0]


def test_model_only_deploy_needs_a_function(server: Server, models: dict[str, Path]) -> None:
    response = deploy_model(server, "upd-missing", models["real"], model_only="true")
    assert response.status_code == 404
    assert "without --model first" in response.json()["error"]["message"]


def test_bare_model_onto_a_handler_bundle_is_refused(
    server: Server, models: dict[str, Path], tmp_path: Path
) -> None:
    assert server.deploy_folder("upd-h", handler_bundle(tmp_path / "b", models)).status_code == 201
    refused = deploy_model(server, "upd-h", models["constant"])
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "HANDLER_WOULD_BE_REPLACED"
    assert "--replace-handler" in error["message"] and "--model" in error["message"]
    assert server.invoke("upd-h", {"x": ROWS}).json()["handler"] == "custom"  # untouched

    replaced = deploy_model(server, "upd-h", models["constant"], replace_handler="true")
    assert replaced.status_code == 201, replaced.text
    answer = server.invoke("upd-h", {"instances": ROWS}).json()
    assert answer["predictions"] == [2, 2]  # the built-in model handler now


def test_bare_model_onto_a_model_function_needs_no_flag(
    server: Server, models: dict[str, Path]
) -> None:
    assert deploy_model(server, "upd-m", models["real"]).status_code == 201
    assert deploy_model(server, "upd-m", models["constant"]).status_code == 201


# --- restart --------------------------------------------------------------------------------

READS_AT_IMPORT = """
import os
VALUE = open(os.environ["DATA"]).read()

def handler(event, context):
    return {"value": VALUE, "pid": os.getpid()}
"""


def wait_for(predicate, timeout_s: float = 20.0) -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def pools(server: Server, name: str) -> list[dict[str, Any]]:
    return server.client.get(f"/v1/functions/{name}").json()["pools"]


def test_restart_replaces_instances_and_version_template(server: Server, tmp_path: Path) -> None:
    # Outside pytest's private tmp folder: the function runs as its own unprivileged user.
    shared = Path(tempfile.mkdtemp(prefix="coldbrew-restart-"))
    shared.chmod(0o755)
    data = shared / "data.txt"
    data.write_text("one")
    data.chmod(0o644)
    config = f'handler = "handler:handler"\n[environment]\nDATA = "{data}"\n'
    bundle = write_bundle(tmp_path / "b", READS_AT_IMPORT, config)
    deployed = server.deploy_folder("rst", bundle)
    assert deployed.status_code == 201, deployed.text
    first = server.invoke("rst", {}).json()
    assert first["value"] == "one"
    wait_for(lambda: any(p["version_template"] for p in pools(server, "rst")))
    template_pid = pools(server, "rst")[0]["version_template_pid"]

    data.write_text("two")
    assert server.invoke("rst", {}).json() == first  # the warm instance read it at import

    response = server.client.post("/v1/functions/rst/restart")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "function": "rst",
        "version": 1,
        "instances_replaced": 1,
        "template_replaced": True,
    }
    after = server.invoke("rst", {}).json()
    assert after["value"] == "two" and after["pid"] != first["pid"]
    # The next version template is a new process that read the file anew, too.
    wait_for(lambda: pools(server, "rst")[0]["version_template_pid"] not in (None, template_pid))

    again = server.client.post("/v1/functions/rst:1/restart")
    assert again.status_code == 200 and again.json()["version"] == 1
    missing = server.client.post("/v1/functions/rst:nope/restart")
    assert missing.status_code == 404
    assert server.client.post("/v1/functions/nothing-here/restart").status_code == 404
    shutil.rmtree(shared, ignore_errors=True)
