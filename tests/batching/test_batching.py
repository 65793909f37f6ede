"""Adaptive batching end to end: many callers, one model call, every answer to its sender."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier

from support import Server, write_bundle

WINE = load_wine()


@pytest.fixture(scope="module")
def forest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RandomForestClassifier]:
    model = RandomForestClassifier(n_estimators=30, random_state=1).fit(WINE.data, WINE.target)
    path = tmp_path_factory.mktemp("wine") / "wine.joblib"
    joblib.dump(model, path)
    return path, model


def deploy_model(server: Server, name: str, path: Path, batching: str) -> None:
    bundle = path.parent / name
    bundle.mkdir(exist_ok=True)
    (bundle / path.name).write_bytes(path.read_bytes())
    (bundle / "coldbrew.toml").write_text(
        f'model = "{path.name}"\nmax_instances = 1\n[batching]\n{batching}\n'
    )
    response = server.deploy_folder(name, bundle)
    assert response.status_code == 201, response.text


def test_concurrent_callers_get_their_own_rows(server: Server, forest) -> None:  # type: ignore[no-untyped-def]
    path, model = forest
    deploy_model(server, "wine-auto", path, 'mode = "auto"\nmax_batch_size = 32')
    expected = model.predict(WINE.data)
    local = threading.local()

    def call(i: int) -> tuple[int, httpx.Response]:
        if not hasattr(local, "client"):  # one keep-alive connection per calling thread
            local.client = httpx.Client(base_url=server.url, timeout=30)
        rows = WINE.data[i : i + 1 + i % 3].tolist()  # 1 to 3 rows per caller
        return i, local.client.post("/v1/functions/wine-auto/invoke", json={"instances": rows})

    with ThreadPoolExecutor(32) as executor:
        answers = list(executor.map(call, range(150)))
    sizes = []
    for i, response in answers:
        assert response.status_code == 200, response.text
        n = 1 + i % 3
        assert response.json()["predictions"] == expected[i : i + n].tolist()
        assert len(response.json()["probabilities"]) == n
        assert response.headers["x-request-id"]
        sizes.append(int(response.headers["x-coldbrew-batch-size"]))
    assert max(sizes) > 1, "32 concurrent callers on one instance must share batches"
    assert len({r.headers["x-request-id"] for _, r in answers}) == 150


def test_bad_rows_fail_only_their_sender(server: Server, forest) -> None:  # type: ignore[no-untyped-def]
    path, model = forest
    deploy_model(server, "wine-mixed", path, 'mode = "fixed"\nmax_wait_ms = 300')
    good = WINE.data[:2].tolist()
    events = [{"instances": good}, {"instances": [[1.0, 2.0]]}, {"rows": 1}, {"instances": good}]
    with ThreadPoolExecutor(4) as executor:
        responses = list(executor.map(lambda e: server.invoke("wine-mixed", e), events))
    assert [r.status_code for r in responses] == [200, 400, 400, 200]
    assert responses[1].json()["error"]["code"] == "VALIDATION_ERROR"
    assert responses[0].json()["predictions"] == model.predict(np.array(good)).tolist()
    assert max(int(r.headers["x-coldbrew-batch-size"]) for r in responses) > 1


def test_lone_request_is_not_delayed_in_auto_mode(server: Server, forest) -> None:  # type: ignore[no-untyped-def]
    path, _ = forest
    deploy_model(server, "wine-lone", path, 'mode = "auto"')
    server.invoke("wine-lone", {"instances": WINE.data[:1].tolist()})
    response = server.invoke("wine-lone", {"instances": WINE.data[:1].tolist()})
    assert response.headers["x-coldbrew-batch-size"] == "1"


def test_fixed_mode_waits_to_fill(server: Server, forest) -> None:  # type: ignore[no-untyped-def]
    path, _ = forest
    deploy_model(
        server, "wine-fixed", path, 'mode = "fixed"\nmax_wait_ms = 400\nmax_batch_size = 4'
    )
    server.invoke("wine-fixed", {"instances": WINE.data[:1].tolist()})  # cold start out of the way
    started = time.monotonic()
    with ThreadPoolExecutor(4) as executor:
        responses = list(
            executor.map(
                lambda i: server.invoke("wine-fixed", {"instances": WINE.data[i : i + 1].tolist()}),
                range(4),
            )
        )
    assert all(r.status_code == 200 for r in responses)
    assert {r.headers["x-coldbrew-batch-size"] for r in responses} == {"4"}
    assert time.monotonic() - started < 5


BATCH_HANDLER = """
def handler(event, context):
    return {"single": event["x"]}

def batch(events, contexts):
    out = []
    for event, context in zip(events, contexts):
        if event.get("x") == "boom":
            out.append(ValueError("bad x"))
        else:
            out.append({"x": event["x"], "n": len(events), "id": context.aws_request_id})
    return out
"""


def test_custom_batch_handler_opt_in(server: Server, tmp_path: Path) -> None:
    config = (
        'handler = "handler:handler"\nbatch_handler = "handler:batch"\nmax_instances = 1\n'
        '[batching]\nmode = "fixed"\nmax_wait_ms = 300\n'
    )
    bundle = write_bundle(tmp_path / "b", BATCH_HANDLER, config)
    assert server.deploy_folder("custom-batch", bundle).status_code == 201
    events = [{"x": 1}, {"x": "boom"}, {"x": 3}]
    with ThreadPoolExecutor(3) as executor:
        responses = list(
            executor.map(
                lambda e: server.invoke("custom-batch", e, headers={"x-request-id": f"r-{e['x']}"}),
                events,
            )
        )
    assert responses[0].json()["x"] == 1 and responses[0].json()["id"] == "r-1"
    assert responses[2].json()["x"] == 3 and responses[2].json()["id"] == "r-3"
    assert responses[1].status_code == 500
    assert responses[1].json()["error"]["errorType"] == "ValueError"


def test_handlers_without_batch_handler_are_not_batched(server: Server, tmp_path: Path) -> None:
    bundle = write_bundle(
        tmp_path / "p", "def handler(e, c):\n    return e\n", 'handler = "handler:handler"\n'
    )
    assert server.deploy_folder("plain-nobatch", bundle).status_code == 201
    assert server.invoke("plain-nobatch", {"a": 1}).headers["x-coldbrew-batch-size"] == "1"
