"""Open Inference Protocol v2 end to end: a real sklearn model deployed on a real server, called
with tritonclient (its default binary mode) and with plain JSON over httpx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from tritonclient.utils import InferenceServerException

from coldbrew.gateway.oip.tensors import DATATYPES
from support import Server, write_bundle

IRIS = load_iris()
ROWS = IRIS.data[[0, 60, 120, 149]]


def _train(path: Path, c: float) -> LogisticRegression:
    labels = IRIS.target_names[IRIS.target]  # string labels: BYTES outputs
    model = LogisticRegression(C=c, max_iter=1000).fit(IRIS.data, labels)
    joblib.dump(model, path)
    return model


@pytest.fixture(scope="module")
def iris(server: Server, tmp_path_factory: pytest.TempPathFactory) -> LogisticRegression:
    """Two versions of the iris model, plus a function that is not a model."""
    folder = tmp_path_factory.mktemp("oip")
    for c in (0.5, 1.0):  # version 2 is the one `latest` serves
        model = _train(folder / "iris.joblib", c)
        assert server.deploy_file("iris", folder / "iris.joblib").status_code == 201
    plain = write_bundle(folder / "plain", "def handler(event, context):\n    return 1\n", "")
    (plain / "coldbrew.toml").write_text('handler = "handler:handler"\n')
    assert server.deploy_folder("plain", plain).status_code == 201
    return model


@pytest.fixture(scope="module")
def client(server: Server, iris: LogisticRegression) -> Iterator[triton.InferenceServerClient]:
    triton_client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield triton_client
    triton_client.close()


def test_server_health_and_metadata(server: Server, client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert server.client.get("/v2/health/live").json() == {"live": True}
    assert server.client.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_is_read_from_the_model(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("iris")
    assert metadata["name"] == "iris" and metadata["versions"] == ["1", "2"]
    assert metadata["platform"] == "joblib"
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert metadata["outputs"] == [
        {"name": "predictions", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
        {"name": "classes", "datatype": "BYTES", "shape": [3]},
    ]
    assert client.get_model_metadata("iris", model_version="1")["versions"] == ["1", "2"]
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "1")
    assert not client.is_model_ready("nope")


def test_tritonclient_default_binary_mode(
    client: triton.InferenceServerClient, iris: LogisticRegression
) -> None:
    features = triton.InferInput("input-0", list(ROWS.shape), "FP32")
    features.set_data_from_numpy(ROWS.astype(np.float32))  # binary_data=True by default
    result = client.infer("iris", [features], request_id="req-42")
    response = result.get_response()
    assert response["id"] == "req-42" and response["model_version"] == "2"
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    expected = iris.predict(ROWS.astype(np.float32).astype(np.float64))
    assert result.as_numpy("predictions").tolist() == [label.encode() for label in expected]
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), iris.predict_proba(ROWS.astype(np.float32)), rtol=1e-6
    )
    assert result.as_numpy("classes").tolist() == [c.encode() for c in iris.classes_]


def test_tritonclient_selected_outputs(client: triton.InferenceServerClient) -> None:
    features = triton.InferInput("input-0", list(ROWS.shape), "FP64")
    features.set_data_from_numpy(ROWS, binary_data=False)
    wanted = [triton.InferRequestedOutput("probabilities", binary_data=False)]
    result = client.infer("iris", [features], outputs=wanted, model_version="1")
    outputs = result.get_response()["outputs"]
    assert [o["name"] for o in outputs] == ["probabilities"] and "data" in outputs[0]
    assert result.get_response()["model_version"] == "1"
    assert result.as_numpy("probabilities").shape == (4, 3)


@pytest.mark.parametrize("datatype", [name for name in DATATYPES if name != "BYTES"])
@pytest.mark.parametrize("binary", [True, False])
def test_every_numeric_datatype_reaches_the_model(
    client: triton.InferenceServerClient, iris: LogisticRegression, datatype: str, binary: bool
) -> None:
    dtype = DATATYPES[datatype]
    rows = (ROWS > 3).astype(dtype) if datatype == "BOOL" else ROWS.round().astype(dtype)
    features = triton.InferInput("input-0", list(rows.shape), datatype)
    features.set_data_from_numpy(rows, binary_data=binary)
    result = client.infer("iris", [features])
    expected = iris.predict(rows.astype(np.float64))
    assert result.as_numpy("predictions").tolist() == [label.encode() for label in expected]


def test_plain_json_over_http(server: Server, iris: LogisticRegression) -> None:
    request: dict[str, Any] = {
        "id": "json-1",
        "parameters": {"note": "ignored"},
        "inputs": [
            {"name": "x", "datatype": "FP64", "shape": [2, 4], "data": ROWS[:2].tolist()},
        ],
        "outputs": [{"name": "predictions"}, {"name": "classes"}],
    }
    response = server.client.post("/v2/models/iris/infer", json=request)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-coldbrew-executed-version"] == "2"
    body = response.json()
    assert body["id"] == "json-1" and body["model_name"] == "iris"
    assert body["outputs"] == [
        {
            "name": "predictions",
            "datatype": "BYTES",
            "shape": [2],
            "data": iris.predict(ROWS[:2]).tolist(),
        },
        {"name": "classes", "datatype": "BYTES", "shape": [3], "data": list(iris.classes_)},
    ]
    flat = {**request, "inputs": [{**request["inputs"][0], "data": ROWS[:2].ravel().tolist()}]}
    assert server.client.post("/v2/models/iris/infer", json=flat).json() == body
    columns = {  # one tensor per feature, joined column-wise
        "inputs": [
            {"name": name, "datatype": "FP64", "shape": [2], "data": ROWS[:2, i].tolist()}
            for i, name in enumerate(IRIS.feature_names)
        ]
    }
    joined = server.client.post("/v2/models/iris/versions/2/infer", json=columns).json()
    assert joined["outputs"][0]["data"] == body["outputs"][0]["data"]


@pytest.mark.parametrize(
    ("path", "request_body", "status", "message"),
    [
        ("/v2/models/nope/infer", {"inputs": []}, 404, "nope"),
        ("/v2/models/iris/versions/9/infer", {"inputs": []}, 404, "9"),
        ("/v2/models/plain/infer", {"inputs": []}, 404, "not a model function"),
        ("/v2/models/iris/infer", {"inputs": []}, 400, "non-empty list"),
        (
            "/v2/models/iris/infer",
            {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]},
            400,
            "expects 4 features",
        ),
        (
            "/v2/models/iris/infer",
            {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, 4], "data": [1, 2]}]},
            400,
            "needs 8 values",
        ),
        (
            "/v2/models/iris/infer",
            {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]},
            400,
            "not BYTES",
        ),
        (
            "/v2/models/iris/infer",
            {
                "inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 4], "data": [1] * 4}],
                "outputs": [{"name": "logits"}],
            },
            400,
            "unknown output 'logits'",
        ),
    ],
)
def test_errors_are_json_with_a_status(
    server: Server,
    iris: LogisticRegression,
    path: str,
    request_body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    response = server.client.post(path, json=request_body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert server.client.get(path.removesuffix("/infer")).status_code in (200, status)


def test_tritonclient_sees_errors(client: triton.InferenceServerClient) -> None:
    bad = triton.InferInput("input-0", [1, 2], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="expects 4 features") as info:
        client.infer("iris", [bad])
    assert info.value.status() == "400"
    with pytest.raises(InferenceServerException, match=r"nope"):
        client.get_model_metadata("nope")
