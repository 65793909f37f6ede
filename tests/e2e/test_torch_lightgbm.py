"""PyTorch and LightGBM models deployed bare, over HTTP: the built-in handler's contract, batched
callers, and cold starts forked from a version template that never hang (issue 13).

Models are built here from a few lines (a small nn.Sequential, LightGBM on breast-cancer data)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from support import Server

CANCER = load_breast_cancer()
ROWS = CANCER.data[[0, 19, 200, 300]]


def torch_net() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2), torch.nn.Softmax(dim=1)
    ).eval()


def reference(net: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return net(torch.from_numpy(x.astype(np.float32))).numpy().astype(np.float64)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray]]:
    """file and the probabilities it must give on ROWS, per format."""
    import lightgbm as lgb
    import torch

    folder = tmp_path_factory.mktemp("torch-lgb")
    net = torch_net()
    torch.jit.script(net).save(str(folder / "net.pt"))
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (torch.zeros(4, 30),), dynamic_shapes={"input": {0: batch}})
    torch.export.save(program, str(folder / "net.pt2"))
    booster = lgb.train(
        {"objective": "binary", "num_threads": 1, "verbose": -1},
        lgb.Dataset(CANCER.data, label=CANCER.target),
        num_boost_round=10,
    )
    booster.save_model(str(folder / "gbm.txt"))
    p = booster.predict(ROWS)
    clf = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(CANCER.data, CANCER.target)
    joblib.dump(clf, folder / "gbm.joblib")
    return {
        "torchscript": (folder / "net.pt", reference(net, ROWS)),
        "torch_export": (folder / "net.pt2", reference(net, ROWS)),
        "lightgbm": (folder / "gbm.txt", np.column_stack([1 - p, p])),
        "lightgbm-joblib": (folder / "gbm.joblib", clf.predict_proba(ROWS)),
    }


def pools(server: Server, name: str) -> list[dict[str, Any]]:
    return server.client.get(f"/v1/functions/{name}").json()["pools"]


def wait_for(predicate: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def check(response: Any, proba: np.ndarray) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"] == proba.argmax(axis=1).tolist()
    assert body["classes"] == [0, 1]
    np.testing.assert_allclose(body["probabilities"], proba, atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export", "lightgbm", "lightgbm-joblib"])
def test_bare_model_deploys_predicts_and_forks(
    server: Server, models: dict[str, tuple[Path, np.ndarray]], fmt: str, tmp_path: Path
) -> None:
    path, proba = models[fmt]
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / path.name).write_bytes(path.read_bytes())
    # threads = 2: each instance may use two, but the template they fork from must hold none.
    (bundle / "coldbrew.toml").write_text(
        f'model = "{path.name}"\nthreads = 2\nidle_timeout_s = 0.5\nmax_instances = 4\n'
        "trust_pickle = true\n"
    )
    name = f"tl-{fmt.replace('_', '-')}"
    deployed = server.deploy_folder(name, bundle)
    assert deployed.status_code == 201, deployed.text
    first = server.invoke(name, {"instances": ROWS.tolist()})
    check(first, proba)
    wait_for(lambda: any(p["version_template"] for p in pools(server, name)))
    wait_for(lambda: not any(p["instances"] for p in pools(server, name)))

    # Four callers at once from zero: forks of the version template, none may hang.
    with ThreadPoolExecutor(4) as executor:
        responses = list(
            executor.map(
                lambda i: server.invoke(name, {"instances": ROWS[i : i + 1].tolist()}, timeout=30),
                range(4),
            )
        )
    for i, response in enumerate(responses):
        check(response, proba[i : i + 1])
    sources = {
        r.headers["x-coldbrew-start-source"]
        for r in responses
        if r.headers.get("x-coldbrew-cold-start") == "true"
    }
    assert any(s.startswith("version-template") for s in sources), sources


def test_bare_pt_file_deploy_and_bad_rows(server: Server, models: dict) -> None:
    path, proba = models["torchscript"]
    deployed = server.deploy_file("tl-bare-pt", path)
    assert deployed.status_code == 201, deployed.text
    check(server.invoke("tl-bare-pt", {"instances": ROWS.tolist()}), proba)
    wrong = server.invoke("tl-bare-pt", {"instances": [[1.0, 2.0]]})
    assert wrong.status_code == 400
    assert "expects 30 features" in json.dumps(wrong.json())


def test_corrupt_pt_is_refused_at_deploy(server: Server, tmp_path: Path) -> None:
    (tmp_path / "broken.pt").write_bytes(b"not a torchscript archive" * 20)
    response = server.deploy_file("tl-broken", tmp_path / "broken.pt")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "DEPLOY_ERROR"
    assert "broken.pt" in error["message"] and "torchscript" in error["message"]


TORCH_HANDLER = """
import os
import torch

torch.set_num_threads(4)  # the issue's report: a pool of 4 threads started at import
model = torch.jit.load(os.path.join(os.path.dirname(__file__), "net.pt"))
with torch.inference_mode():
    model(torch.zeros(8, 30))  # warm-up forward: the pool now runs

def handler(event, context):
    with torch.inference_mode():
        x = torch.tensor(event["instances"], dtype=torch.float32)
        return {"probabilities": model(x).tolist(), "pid": os.getpid()}
"""


def test_torch_handler_with_threads_at_import_never_hangs(
    server: Server, models: dict, tmp_path: Path
) -> None:
    """Forks of a process whose torch pool runs hang on their first forward (5 of 5 before):
    such a version must run its import per instance, and every caller gets an answer."""
    path, proba = models["torchscript"]
    bundle = tmp_path / "h"
    bundle.mkdir()
    (bundle / "net.pt").write_bytes(path.read_bytes())
    (bundle / "handler.py").write_text(TORCH_HANDLER)
    (bundle / "coldbrew.toml").write_text(
        'handler = "handler:handler"\nidle_timeout_s = 0.5\nmax_instances = 4\ntimeout_s = 20\n'
    )
    assert server.deploy_folder("tl-torch-handler", bundle).status_code == 201
    for _round in range(2):  # from zero, then again once any template exists
        with ThreadPoolExecutor(4) as executor:
            responses = list(
                executor.map(
                    lambda i: server.invoke(
                        "tl-torch-handler", {"instances": ROWS[i : i + 1].tolist()}, timeout=40
                    ),
                    range(4),
                )
            )
        for i, response in enumerate(responses):
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(
                response.json()["probabilities"], proba[i : i + 1], atol=1e-5
            )
        wait_for(lambda: not any(p["instances"] for p in pools(server, "tl-torch-handler")))


THREADS_HANDLER = """
import os
import torch

def handler(event, context):
    return {
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "predictions": context.model.predict(__import__("numpy").asarray(event["instances"]))[
            "predictions"
        ],
        "pid": os.getpid(),
    }
"""


def test_instances_take_the_configured_threads(
    server: Server, models: dict, tmp_path: Path
) -> None:
    """threads = 3: every instance (from the runtime template, then from the version template)
    runs torch on 3 intra-op threads; the template itself never left one thread."""
    path, proba = models["torchscript"]
    bundle = tmp_path / "t"
    bundle.mkdir()
    (bundle / "net.pt").write_bytes(path.read_bytes())
    (bundle / "handler.py").write_text(THREADS_HANDLER)
    (bundle / "coldbrew.toml").write_text(
        'handler = "handler:handler"\nmodel = "net.pt"\nthreads = 3\nidle_timeout_s = 0.5\n'
    )
    assert server.deploy_folder("tl-threads", bundle).status_code == 201
    first = server.invoke("tl-threads", {"instances": ROWS.tolist()})
    assert first.status_code == 200, first.text
    assert first.json()["torch_threads"] == 3 and first.json()["interop_threads"] == 1
    assert first.json()["predictions"] == proba.argmax(axis=1).tolist()
    wait_for(lambda: any(p["version_template"] for p in pools(server, "tl-threads")))
    wait_for(lambda: not any(p["instances"] for p in pools(server, "tl-threads")))
    forked = server.invoke("tl-threads", {"instances": ROWS.tolist()})
    assert forked.headers["x-coldbrew-start-source"].startswith("version-template")
    assert forked.json()["torch_threads"] == 3
    assert forked.json()["predictions"] == proba.argmax(axis=1).tolist()
