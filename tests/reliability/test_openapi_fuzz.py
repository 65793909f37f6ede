"""``GET /openapi.json`` is truthful, and schemathesis finds no server error through it (issue 12,
item 8).

The fuzz runs against a real auth-on server with an admin key and three functions deployed:
``fz-echo`` (two versions and an alias; its handler answers a constant whatever the event, so
any 5xx is coldbrew's, not the function's), ``fz-model`` (a bare ONNX model on the built-in
handler: bad instances must be a 4xx) and ``fz-doomed``, the only function DELETE may name (the
others are needed by every other operation). Path parameters ``name`` are drawn from the
deployed names as well as from the document's own schema, so most requests reach real
functions instead of stopping at NOT_FOUND.

Bounded for 2 cores: ``MAX_EXAMPLES`` per operation, no deadline per example (a restart or a
deploy's trial instance takes tens of ms), the whole module in 1-2 minutes. The counts
(requests sent, 5xx seen) are printed at the end (``pytest -s``) for docs/RELIABILITY.md.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from starlette.routing import Route, WebSocketRoute  # noqa: E402

from coldbrew.gateway import app as gateway_app  # noqa: E402
from coldbrew.gateway import openapi  # noqa: E402
from coldbrew.registry.security import SecurityStore  # noqa: E402
from coldbrew.security.keyring import Keyring, KeySpec  # noqa: E402
from support import Server, write_bundle  # noqa: E402

MAX_EXAMPLES = 20
ECHO = """
def handler(event, context):
    return {"ok": True}
"""
FUNCTIONS = ("fz-echo", "fz-model")
DOOMED = "fz-doomed"
TALLY: Counter[str] = Counter()


# -- the document is truthful -----------------------------------------------------------------


def test_every_served_route_is_documented() -> None:
    document = openapi.build(gateway_app.routes())
    missing = []
    for route in gateway_app.routes():
        if isinstance(route, WebSocketRoute) or not isinstance(route, Route):
            continue
        if route.path_format == openapi.CATCH_ALL:
            continue
        for method in route.methods or ():
            if method == "HEAD":
                continue
            if method.lower() not in document["paths"].get(route.path_format, {}):
                missing.append(f"{method} {route.path_format}")
    assert not missing, missing
    assert openapi.CATCH_ALL not in document["paths"]
    assert "/ws/{name}" not in document["paths"] and "/stream/{name}" not in document["paths"]


def test_every_described_operation_is_served() -> None:
    served = {(method, route.path_format) for method, route in openapi.served(gateway_app.routes())}
    assert set(openapi.OPERATIONS) - served == set()


def test_path_parameters_come_from_the_routes() -> None:
    document = openapi.build(gateway_app.routes())
    alias = document["paths"]["/v1/functions/{name}/aliases/{alias}"]["put"]
    assert [p["name"] for p in alias["parameters"] if p["in"] == "path"] == ["name", "alias"]
    deploy = document["paths"]["/v1/functions"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/octet-stream"} <= set(deploy)
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["code", "message"]
    lam = document["paths"]["/2015-03-31/functions/{function}/invocations"]["post"]
    assert lam["externalDocs"]["url"].startswith("https://docs.aws.amazon.com/lambda")


# -- a live server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    home = tmp_path_factory.mktemp("fuzz")
    server = Server(
        home,
        env={
            "COLDBREW_AUTH": "on",
            "COLDBREW_JWT_SECRET": "fuzz-jwt-secret-that-is-long-enough-0123456789",
            "COLDBREW_API_KEY": "",
        },
    )
    server.start()
    store = SecurityStore(f"sqlite:///{home / 'registry.db'}")
    try:
        admin = Keyring(store).create(KeySpec(role="admin"))[1]
    finally:
        store.close()
    server.client.headers["Authorization"] = f"Bearer {admin}"
    try:
        _deploy_all(server, tmp_path_factory.mktemp("fuzz-bundles"))
        yield server, admin
    finally:
        server.stop()
        statuses = {k: v for k, v in sorted(TALLY.items()) if k.isdigit()}
        print(f"\nschemathesis: {TALLY['requests']} requests, {TALLY['5xx']} answered 5xx")
        print(f"schemathesis statuses: {statuses}")


def _deploy_all(server: Server, base: Path) -> None:
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    for name in ("fz-echo", DOOMED):
        bundle = write_bundle(base / name, ECHO, 'handler = "handler:handler"\n')
        deployed = server.deploy_folder(name, bundle)
        assert deployed.status_code == 201, deployed.text
    (base / "fz-echo" / "handler.py").write_text(ECHO + "# v2\n")
    assert server.deploy_folder("fz-echo", base / "fz-echo").json()["version"] == 2
    assert server.client.put("/v1/functions/fz-echo/aliases/prod", json={"version": 1}).is_success
    iris = load_iris()
    model = LogisticRegression(max_iter=300).fit(iris.data, iris.target)
    onnx = to_onnx(model, iris.data[:1].astype(np.float32), options={id(model): {"zipmap": False}})
    (base / "model").mkdir()
    (base / "model" / "m.onnx").write_bytes(onnx.SerializeToString())
    (base / "model" / "coldbrew.toml").write_text('model = "m.onnx"\n')
    deployed = server.deploy_folder("fz-model", base / "model")
    assert deployed.status_code == 201, deployed.text
    for name in FUNCTIONS:
        assert server.invoke(name, {"instances": [[1, 2, 3, 4]]}).status_code == 200


def test_openapi_json_is_open(fuzzed: tuple[Server, str]) -> None:
    server, _ = fuzzed
    response = httpx.get(f"{server.url}/openapi.json")  # no credentials
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.")
    assert "/v1/functions/{name}/invoke" in response.json()["paths"]
    assert httpx.get(f"{server.url}/v1/keys").status_code == 401


# Values the fuzz did not generate and a reading of the handlers did: digits that are not ASCII
# ("²".isdigit() is True, int("²") raises), numbers past SQLite's 64 bits, inf and nan.
HOSTILE = [
    ("GET", "/v1/functions/fz-echo/events?limit=%C2%B2", None),
    ("GET", "/v1/functions/fz-echo/dlq?limit=%C2%B2", None),
    ("GET", "/v1/functions/fz-echo/results?after=%C2%B2", None),
    ("GET", "/v1/functions/fz-echo/results?after=99999999999999999999999", None),
    ("DELETE", "/v1/routes/%C2%B2", None),
    ("DELETE", "/v1/routes/99999999999999999999999", None),
    ("GET", "/v1/usage?limit=1e999", None),
    ("GET", "/v1/functions/fz-echo/logs?tail=nan", None),
    ("GET", "/v1/functions/fz-echo/logs?tail=1e999", None),
    ("GET", "/v1/stats?seconds=nan", None),
    ("GET", "/v1/cost?always_on_hourly=inf", None),
    ("POST", "/v1/functions/fz-echo/rollout", {"to": "\u00b2"}),
]


@pytest.mark.parametrize(("method", "path", "body"), HOSTILE, ids=lambda v: str(v)[:60])
def test_hostile_values_are_4xx(
    fuzzed: tuple[Server, str], method: str, path: str, body: Any
) -> None:
    server, _ = fuzzed
    server.client.post("/v1/routes", json={"route": "GET /fz-hostile", "function": "fz-echo"})
    with httpx.Client(base_url=server.url, headers=server.client.headers) as client:
        response = client.request(method, path, json=body)  # a fresh connection each time
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"], response.text


def _fuzzable(document: dict[str, Any]) -> dict[str, Any]:
    """The served document, with the deployed functions offered as path parameters."""
    document = copy.deepcopy(document)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "path" or parameter["name"] not in ("name", "function"):
                    continue
                if path == "/v1/functions/{name}" and method == "delete":
                    parameter["schema"] = {"enum": [DOOMED]}  # never a function others need
                else:
                    known = [*FUNCTIONS, "fz-echo:1", "fz-echo:prod", "fz-echo:latest"]
                    parameter["schema"] = {"anyOf": [{"enum": known}, parameter["schema"]]}
    return document


def test_the_server_serves_this_document(fuzzed: tuple[Server, str]) -> None:
    """The fuzz below reads the document built from the route table at import (schemathesis
    parametrizes at collection, before any server runs): it must be the one served."""
    server, _ = fuzzed
    assert server.client.get("/openapi.json").json() == DOCUMENT


DOCUMENT = openapi.build(gateway_app.routes())
schema = schemathesis.openapi.from_dict(_fuzzable(DOCUMENT))


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: Any, fuzzed: tuple[Server, str]) -> None:
    server, admin = fuzzed
    TALLY["requests"] += 1
    response = case.call(base_url=server.url, headers={"Authorization": f"Bearer {admin}"})
    TALLY[str(response.status_code)] += 1
    if response.status_code >= 500:
        TALLY["5xx"] += 1
    case.validate_response(response, checks=[not_a_server_error])
