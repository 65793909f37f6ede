"""Deploying functions over HTTP: every model format, bundles, refusals and the registry."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from support import Server, pid_alive, write_bundle

IRIS = load_iris()


def iris_classifier() -> LogisticRegression:
    return LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target)


def model_files(folder: Path) -> dict[str, tuple[Path, object]]:
    """One file per supported format, each with the in-memory model it was saved from."""
    import skops.io
    import xgboost as xgb
    from skl2onnx import to_onnx

    clf = iris_classifier()
    files: dict[str, tuple[Path, object]] = {}
    joblib.dump(clf, folder / "iris.joblib")
    files["joblib"] = (folder / "iris.joblib", clf)
    with (folder / "iris.pkl").open("wb") as out:
        pickle.dump(clf, out)
    files["pickle"] = (folder / "iris.pkl", clf)
    skops.io.dump(clf, folder / "iris.skops")
    files["skops"] = (folder / "iris.skops", clf)
    onnx = to_onnx(clf, IRIS.data[:1].astype(np.float32), options={id(clf): {"zipmap": False}})
    (folder / "iris.onnx").write_bytes(onnx.SerializeToString())
    files["onnx"] = (folder / "iris.onnx", clf)
    booster = xgb.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1).fit(IRIS.data, IRIS.target)
    booster.save_model(folder / "iris.json")
    files["xgboost-json"] = (folder / "iris.json", booster)
    booster.save_model(folder / "iris.ubj")
    files["xgboost-ubj"] = (folder / "iris.ubj", booster)
    joblib.dump(booster, folder / "xgb.joblib")
    files["xgboost-joblib"] = (folder / "xgb.joblib", booster)
    return files


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    return model_files(tmp_path_factory.mktemp("models"))


@pytest.mark.parametrize(
    "fmt", ["joblib", "pickle", "skops", "onnx", "xgboost-json", "xgboost-ubj", "xgboost-joblib"]
)
def test_bare_model_deploys_and_predicts(server: Server, models: dict, fmt: str) -> None:
    path, model = models[fmt]
    name = f"iris-{fmt}"
    response = server.deploy_file(name, path)
    assert response.status_code == 201, response.text
    assert response.json()["version"] == 1
    rows = IRIS.data[[0, 60, 120]]
    result = server.invoke(name, {"instances": rows.tolist()})
    assert result.status_code == 200, result.text
    body = result.json()
    assert body["predictions"] == [int(p) for p in model.predict(rows)]  # type: ignore[attr-defined]
    expected = model.predict_proba(rows)  # type: ignore[attr-defined]
    assert np.allclose(body["probabilities"], expected, atol=1e-4)


def test_regressor_and_bad_rows(server: Server, tmp_path: Path) -> None:
    data = load_diabetes()
    reg = LinearRegression().fit(data.data, data.target)
    joblib.dump(reg, tmp_path / "diabetes.joblib")
    assert server.deploy_file("diabetes", tmp_path / "diabetes.joblib").status_code == 201
    body = server.invoke("diabetes", {"instances": data.data[:2].tolist()}).json()
    assert np.allclose(body["predictions"], reg.predict(data.data[:2]))
    assert "probabilities" not in body
    wrong = server.invoke("diabetes", {"instances": [[1.0, 2.0]]})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["code"] == "VALIDATION_ERROR"
    missing = server.invoke("diabetes", {"rows": []})
    assert missing.status_code == 400


def test_redeploy_same_content_is_idempotent(server: Server, models: dict) -> None:
    path, _ = models["joblib"]
    first = server.deploy_file("same", path)
    again = server.deploy_file("same", path)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["version"] == first.json()["version"]
    assert again.json()["content_sha256"] == first.json()["content_sha256"]


GOOD = 'def handler(event, context):\n    return {"ok": True, "v": 1}\n'


@pytest.mark.parametrize(
    ("files", "config", "expect"),
    [
        (
            {"handler.py": "def handler(event, context:\n"},
            'handler = "handler:handler"',
            "cannot import handler module",
        ),
        (
            {"handler.py": "import not_a_real_module\n"},
            'handler = "handler:handler"',
            "not_a_real_module",
        ),
        ({"handler.py": GOOD}, 'handler = "handler:missing"', "no callable 'missing'"),
        ({"handler.py": GOOD}, 'handler = "elsewhere:handler"', "not in the bundle"),
        (
            {"handler.py": GOOD, "model.onnx": "this is not onnx"},
            'handler = "handler:handler"\nmodel = "model.onnx"',
            "does not load",
        ),
        (
            {"handler.py": GOOD},
            'handler = "handler:handler"\n[validation]\ninput = {}\nexpected = {ok = false, v = 1}',
            "validation sample failed",
        ),
        (
            {"handler.py": GOOD},
            'handler = "handler:handler"\n[validation]\ninput = {}\npath = "v"\nrange = [2, 3]',
            "outside [2.0, 3.0]",
        ),
        (
            {"handler.py": "raise RuntimeError('boom at import')\n"},
            'handler = "handler:handler"',
            "boom at import",
        ),
    ],
)
def test_broken_bundles_are_refused_and_change_nothing(
    server: Server, tmp_path: Path, files: dict[str, str], config: str, expect: str
) -> None:
    good = write_bundle(tmp_path / "good", GOOD, 'handler = "handler:handler"\n')
    assert server.deploy_folder("guarded", good).status_code in (200, 201)
    before = server.client.get("/v1/functions/guarded").json()
    broken = tmp_path / "broken"
    broken.mkdir()
    for name, text in files.items():
        (broken / name).write_text(text)
    (broken / "coldbrew.toml").write_text(config + "\n")
    response = server.deploy_folder("guarded", broken)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "DEPLOY_ERROR"
    assert expect in error["message"]
    after = server.client.get("/v1/functions/guarded").json()
    assert after["aliases"] == before["aliases"]
    assert len(after["versions"]) == len(before["versions"])
    assert server.invoke("guarded", {}).json() == {"ok": True, "v": 1}


def test_validation_sample_passes(server: Server, tmp_path: Path) -> None:
    config = (
        'handler = "handler:handler"\n[validation]\ninput = {}\nexpected = {ok = true, v = 1}\n'
    )
    bundle = write_bundle(tmp_path / "b", GOOD, config)
    assert server.deploy_folder("validated", bundle).status_code == 201


def test_bundle_with_model_and_yaml_config(server: Server, tmp_path: Path) -> None:
    data = load_breast_cancer()
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(data.data, data.target)
    bundle = tmp_path / "yaml"
    bundle.mkdir()
    joblib.dump(forest, bundle / "forest.joblib")
    (bundle / "app.py").write_text(
        "import numpy\n"
        "def handler(event, context):\n"
        "    result = context.model.predict(numpy.array(event['rows']))\n"
        "    return {'labels': [int(x) for x in result['predictions']]}\n"
    )
    (bundle / "coldbrew.yaml").write_text(
        "handler: app:handler\nmodel: forest.joblib\nmemory_mb: 384\n"
    )
    assert server.deploy_folder("yaml-fn", bundle).status_code == 201
    body = server.invoke("yaml-fn", {"rows": data.data[:3].tolist()}).json()
    assert body["labels"] == forest.predict(data.data[:3]).tolist()


def test_raw_body_deploy_and_refusals(server: Server, models: dict) -> None:
    path, _ = models["onnx"]
    response = server.client.post(
        "/v1/functions", params={"name": "raw", "filename": "m.onnx"}, content=path.read_bytes()
    )
    assert response.status_code == 201, response.text
    unknown = server.client.post(
        "/v1/functions", params={"name": "raw", "filename": "m.bin"}, content=b"x"
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "VALIDATION_ERROR"
    bad_name = server.client.post(
        "/v1/functions",
        params={"name": "no/slash!", "filename": "m.onnx"},
        content=path.read_bytes(),
    )
    assert bad_name.status_code == 400


def test_list_get_delete(server: Server, tmp_path: Path) -> None:
    bundle = write_bundle(
        tmp_path / "d",
        "import os\ndef handler(e, c):\n    return os.getpid()\n",
        'handler = "handler:handler"\n',
    )
    assert server.deploy_folder("doomed", bundle).status_code == 201
    pid = server.invoke("doomed", {}).json()
    names = [f["name"] for f in server.client.get("/v1/functions").json()["functions"]]
    assert "doomed" in names
    info = server.client.get("/v1/functions/doomed").json()
    assert info["aliases"] == {"latest": 1}
    assert info["versions"][0]["config"]["handler"] == "handler:handler"
    assert server.client.delete("/v1/functions/doomed").status_code == 200
    assert server.client.get("/v1/functions/doomed").status_code == 404
    assert server.invoke("doomed", {}).status_code == 404
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(pid)
    assert server.client.delete("/v1/functions/doomed").status_code == 404
