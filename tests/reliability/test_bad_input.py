"""Hostile input gets a 4xx with a stable code, never a 5xx: names with a trailing newline or
10,000 characters (refused before any instance starts), version numbers that overflow the
database's integers (native, Lambda and v2 APIs), and v2 tensor shapes that cannot exist."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from coldbrew import errors
from coldbrew.registry import names
from support import Server, pack_folder, write_bundle

SLOW_IMPORT_S = 3.0
ECHO = "def handler(event, context):\n    return {'echo': event}\n"
SLOW = f"import time\n\ntime.sleep({SLOW_IMPORT_S})  # a trial instance takes seconds\n\n{ECHO}"
HUGE = "9" * 20
DIGITS_5000 = "9" * 5000  # beyond int()'s 4,300-digit limit too


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("bad-input"))
    server.start()
    folder = tmp_path_factory.mktemp("bundles")
    write_bundle(folder / "echo", ECHO, 'handler = "handler:handler"\n')
    assert server.deploy_folder("echo", folder / "echo").status_code == 201
    iris = load_iris()
    joblib.dump(LogisticRegression(max_iter=500).fit(iris.data, iris.target), folder / "m.joblib")
    assert server.deploy_file("iris", folder / "m.joblib").status_code == 201
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def slow_bundle(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = write_bundle(tmp_path_factory.mktemp("slow"), SLOW, 'handler = "handler:handler"\n')
    return pack_folder(folder)


def _refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.json()["error"]["code"] == code, response.text[:300]
    assert "Traceback" not in response.text


# --- names ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a\n", "a\r", "\na", "a" * 65, "a" * 10_000, "", "-a", "a.b"])
def test_names_are_matched_whole(name: str) -> None:
    with pytest.raises(errors.ValidationError):
        names.check_function_name(name)
    with pytest.raises(errors.ValidationError):
        names.check_alias_name(name)


def test_version_qualifiers() -> None:
    assert names.version_qualifier("7") == 7
    assert names.version_qualifier(str(names.MAX_VERSION)) == names.MAX_VERSION
    for alias in (None, "prod", "$LATEST", "7\n", "٣"):  # not digits: an alias name (or latest)
        assert names.version_qualifier(alias) is None
    for huge in (str(names.MAX_VERSION + 1), HUGE, DIGITS_5000):
        with pytest.raises(errors.NotFound):
            names.version_qualifier(huge)


@pytest.mark.parametrize(
    "name", ["a\n", "echo\n", "a" * 10_000, "a" * 65, "-a", "a b", "é"], ids=repr
)
def test_bad_function_names_are_refused_before_any_work(
    live: Server, slow_bundle: bytes, name: str
) -> None:
    started = time.monotonic()
    multipart = live.client.post(
        "/v1/functions", data={"name": name}, files={"file": ("bundle.tar.gz", slow_bundle)}
    )
    raw = live.client.post(
        "/v1/functions",
        params={"name": name, "filename": "bundle.tar.gz"},
        content=slow_bundle,
    )
    elapsed = time.monotonic() - started
    _refused(multipart, 400, "VALIDATION_ERROR")
    _refused(raw, 400, "VALIDATION_ERROR")
    # A trial instance would have slept SLOW_IMPORT_S importing the handler, twice.
    assert elapsed < SLOW_IMPORT_S, f"{elapsed:.1f} s: an instance was started"
    assert len(multipart.text) < 1000  # the message does not echo 10,000 characters back


def test_a_good_name_is_still_deployed(live: Server, slow_bundle: bytes) -> None:
    """The counterpart: the same bundle under a good name does load (slowly) and deploy."""
    response = live.client.post(
        "/v1/functions", data={"name": "slow_1-ok"}, files={"file": ("b.tar.gz", slow_bundle)}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("alias", ["prod\n", "p" * 10_000, "1"])
def test_bad_alias_names_are_refused(live: Server, alias: str) -> None:
    path = f"/v1/functions/echo/aliases/{quote(alias, safe='')}"  # %0A: a newline in the path
    response = live.client.put(path, json={"version": 1})
    _refused(response, 400, "VALIDATION_ERROR")


# --- versions -------------------------------------------------------------------------------
@pytest.mark.parametrize("qualifier", [HUGE, "2147483648", "9223372036854775808", DIGITS_5000])
def test_overflowing_versions_are_not_found(live: Server, qualifier: str) -> None:
    _refused(live.invoke(f"echo:{qualifier}", {}), 404, "NOT_FOUND")
    lam = live.client.post(f"/2015-03-31/functions/echo:{qualifier}/invocations", json={})
    assert lam.status_code == 404, lam.text[:300]
    assert lam.headers["x-amzn-errortype"] == "ResourceNotFoundException"
    query = live.client.post(
        "/2015-03-31/functions/echo/invocations", params={"Qualifier": qualifier}, json={}
    )
    assert query.status_code == 404, query.text[:300]
    described = live.client.get(f"/2015-03-31/functions/echo:{qualifier}")
    assert described.status_code == 404, described.text[:300]
    for path in ("", "/ready", "/infer"):
        method = "POST" if path == "/infer" else "GET"
        v2 = live.client.request(
            method, f"/v2/models/iris/versions/{qualifier}{path}", json={"inputs": []}
        )
        assert v2.status_code == 404, (path, v2.text[:300])
        assert "error" in v2.json()


def test_a_real_version_still_resolves(live: Server) -> None:
    assert live.invoke("echo:1", {"x": 1}).json() == {"echo": {"x": 1}}
    assert live.client.get("/v2/models/iris/versions/1/ready").status_code == 200


@pytest.mark.parametrize("version", [int(HUGE), 2**31, 10**400, -1, 0, "1e999"])
def test_alias_to_an_overflowing_version_is_refused(live: Server, version: object) -> None:
    body = f'{{"version": {version}}}'.encode() if version == "1e999" else None
    response = live.client.put(
        "/v1/functions/echo/aliases/prod",
        content=body,
        json=None if body else {"version": version},
        headers={"content-type": "application/json"},
    )
    assert response.status_code in (400, 404), response.text[:300]
    assert response.json()["error"]["code"] in ("VALIDATION_ERROR", "NOT_FOUND")


# --- v2 tensor shapes -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "data"),
    [
        ([0, 9223372036854775808], []),
        ([0, 2**62, 4], []),
        ([2**40, 2**40], [1.0]),
        ([-1, 4], [1.0] * 4),
        ([1, -4], [1.0] * 4),
        ([2, 4], [1.0] * 3),
        ([1] * 40, [1.0]),
        ([1, "4"], [1.0] * 4),
        ([1, 4.0], [1.0] * 4),
        ([1, True], [1.0]),
        ("1,4", [1.0] * 4),
    ],
    ids=str,
)
def test_impossible_shapes_are_400(live: Server, shape: object, data: list[float]) -> None:
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": shape, "data": data}]}
    response = live.client.post("/v2/models/iris/infer", json=body)
    assert response.status_code == 400, response.text[:300]
    assert "error" in response.json()


def test_binary_tensor_with_an_overflowing_shape_is_400(live: Server) -> None:
    header = (
        b'{"inputs":[{"name":"input-0","datatype":"FP64","shape":[0,9223372036854775808],'
        b'"parameters":{"binary_data_size":0}}]}'
    )
    response = live.client.post(
        "/v2/models/iris/infer",
        content=header,
        headers={"inference-header-content-length": str(len(header))},
    )
    assert response.status_code == 400, response.text[:300]


@pytest.mark.parametrize("length", ["²", "9" * 5000, "-1", "1e3"])
def test_odd_inference_header_lengths_are_400(live: Server, length: str) -> None:
    response = live.client.post(
        "/v2/models/iris/infer",
        content=b'{"inputs":[]}',
        headers={"inference-header-content-length": length.encode("latin-1")},
    )
    assert response.status_code == 400, response.text[:300]


def test_a_good_tensor_still_infers(live: Server) -> None:
    body = {
        "inputs": [
            {"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
    response = live.client.post("/v2/models/iris/infer", json=body)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["outputs"][0]["name"] == "predictions"


# --- the rest of the REST API ---------------------------------------------------------------
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("GET", "/v1/functions/echo/logs?since=99999999999d", None, {}),
        ("GET", "/v1/audit?since=99999999999d", None, {}),
        ("GET", "/v1/usage?since=99999999999d", None, {}),
        ("POST", "/v1/functions/echo/invoke", b"{}", {"x-coldbrew-deadline-ms": "²"}),
        ("POST", "/v1/keys", b'{"role": "invoker", "daily_quota": 99999999999999999999}', JSON),
        ("POST", "/v1/keys", b'{"role": "invoker", "burst": 2147483648}', JSON),
        ("POST", "/v1/keys", b'{"role": "invoker", "rate_per_s": NaN}', JSON),
        ("POST", "/v1/keys", b'{"role": "invoker", "rate_per_s": 1e999}', JSON),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("/") else None,
)
def test_other_hostile_values_are_4xx(
    live: Server, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> None:
    encoded = {k: v.encode("latin-1") for k, v in headers.items()}
    response = live.client.request(method, path, content=body, headers=encoded)
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


def test_a_huge_deadline_is_capped_not_refused(live: Server) -> None:
    for deadline in (HUGE, DIGITS_5000):
        response = live.invoke("echo", {"x": 1}, headers={"x-coldbrew-deadline-ms": deadline})
        assert response.status_code == 200, response.text[:300]
