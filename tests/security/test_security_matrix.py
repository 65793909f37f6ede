"""Every role on every protocol: role x endpoint x expected status, on one auth-on server.

Scoped keys cover ``alpha`` only; ``beta`` exists but is outside their scope, so it must answer
exactly like a function that does not exist (404), never 403.

The route table (``gateway/policy.py``) is checked first, without a server: every route the app
serves comes from it with its rule, and the security middleware classifies each entry's own
path to that entry's rule (no earlier entry shadows it), as the router picks it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.exceptions
import websockets.sync.client as ws_client

from coldbrew.gateway.app import create_app
from coldbrew.gateway.auth import SecurityMiddleware
from coldbrew.gateway.policy import WEBSOCKET, Endpoint, EndpointTable, Rule
from coldbrew.settings import Settings
from security.conftest import SecureServer  # by path: several folders have a conftest.py

ROLES = ["none", "admin", "deployer", "invoker", "viewer"]
# (method, path, json body) -> expected status for none, admin, deployer, invoker, viewer
MATRIX: list[tuple[str, str, Any, tuple[int, int, int, int, int]]] = [
    ("GET", "/healthz", None, (200, 200, 200, 200, 200)),
    ("GET", "/v2/health/live", None, (200, 200, 200, 200, 200)),
    ("GET", "/v1/functions/alpha", None, (401, 200, 200, 200, 200)),
    ("GET", "/v1/functions/beta", None, (401, 200, 404, 404, 404)),
    ("GET", "/v1/functions/nope", None, (401, 404, 404, 404, 404)),
    ("GET", "/v1/functions/alpha/versions", None, (401, 200, 200, 200, 200)),
    ("GET", "/v1/functions/beta/aliases", None, (401, 200, 404, 404, 404)),
    ("GET", "/v1/functions/alpha/logs", None, (401, 200, 200, 200, 200)),
    ("POST", "/v1/functions/alpha/invoke", {}, (401, 200, 200, 200, 403)),
    ("POST", "/v1/functions/beta/invoke", {}, (401, 200, 404, 404, 404)),
    ("POST", "/v1/functions/alpha:latest/invoke", {}, (401, 200, 200, 200, 403)),
    ("PUT", "/v1/functions/alpha/aliases/prod", {"version": 1}, (401, 200, 200, 403, 403)),
    ("PUT", "/v1/functions/beta/aliases/prod", {"version": 1}, (401, 200, 404, 404, 404)),
    ("DELETE", "/v1/functions/beta", None, (401, None, 404, 404, 404)),
    ("POST", "/v1/functions/alpha/restart", None, (401, 200, 200, 403, 403)),
    ("POST", "/v1/functions/beta:latest/restart", None, (401, 200, 404, 404, 404)),
    ("GET", "/2015-03-31/functions/alpha", None, (401, 200, 200, 200, 200)),
    ("GET", "/2015-03-31/functions/beta", None, (401, 200, 404, 404, 404)),
    ("POST", "/2015-03-31/functions/alpha/invocations", {}, (401, 200, 200, 200, 403)),
    ("POST", "/2015-03-31/functions/beta/invocations", {}, (401, 200, 404, 404, 404)),
    (
        "POST",
        "/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:beta/invocations",
        {},
        (401, 200, 404, 404, 404),
    ),
    ("GET", "/v2", None, (401, 200, 200, 200, 200)),
    ("GET", "/v2/models/beta", None, (401, None, 404, 404, 404)),
    ("POST", "/v2/models/beta/infer", {"inputs": []}, (401, None, 404, 404, 404)),
    ("GET", "/metrics", None, (401, 200, 403, 403, 403)),
    ("GET", "/ui", None, (401, 200, 403, 403, 403)),
    ("GET", "/v1/stats", None, (401, 200, 403, 403, 403)),
    ("GET", "/v1/usage", None, (401, 200, 403, 403, 403)),
    ("GET", "/v1/cost", None, (401, 200, 403, 403, 403)),
    ("GET", "/v1/alerts", None, (401, 200, 403, 403, 403)),
    ("GET", "/v1/nodes", None, (401, 200, 403, 403, 403)),
    ("GET", "/v1/keys", None, (401, 200, 403, 403, 403)),
    ("GET", "/v1/audit", None, (401, 200, 403, 403, 403)),
    ("POST", "/v1/gc?dry_run=true", None, (401, 200, 403, 403, 403)),
    ("POST", "/v1/keys", {"role": "admin"}, (401, 201, 403, 403, 403)),
    ("POST", "/v1/routes", {"route": "GET /b", "function": "beta"}, (401, 201, 404, 403, 403)),
    ("POST", "/v1/routes", {"route": "GET /a", "function": "alpha"}, (401, None, 201, 403, 403)),
    ("GET", "/2015-03-31/functions/alpha/aliases", None, (401, 200, 200, 200, 200)),
    ("GET", "/2015-03-31/functions/beta/aliases", None, (401, 200, 404, 404, 404)),
    ("GET", "/2015-03-31/functions/beta/versions", None, (401, 200, 404, 404, 404)),
    ("POST", "/2015-03-31/functions/alpha/versions", {}, (401, 201, 201, 403, 403)),
    ("PUT", "/2015-03-31/functions/beta/aliases/prod", {}, (401, None, 404, 404, 404)),
    ("GET", "/v1/functions/beta/rollout", None, (401, 404, 404, 404, 404)),
    ("POST", "/v1/functions/beta/rollout", {"to": 1}, (401, None, 404, 404, 404)),
    ("POST", "/v1/functions/alpha/rollout/abort", None, (401, 404, 404, 403, 403)),
    ("PUT", "/v1/functions/alpha/shadow", {"version": 99}, (401, 404, 404, 403, 403)),
    ("DELETE", "/v1/functions/beta/shadow", None, (401, 404, 404, 404, 404)),
    ("POST", "/v1/functions/beta/jobs?format=jsonl", {}, (401, 201, 404, 404, 404)),
    ("GET", "/v1/functions/beta/jobs", None, (401, 200, 404, 404, 404)),
    ("GET", "/v1/jobs/nope", None, (401, 404, 404, 404, 404)),
    ("POST", "/v1/jobs/nope/cancel", None, (401, 404, 404, 404, 403)),
    ("GET", "/ws/@connections/nope", None, (401, 410, 410, 410, 403)),
    ("GET", "/some/unrouted/path", None, (401, 404, 404, 404, 403)),
]


def _sample_path(template: str) -> str:
    """A concrete path for a route template: ``{name}`` -> ``alpha``, ``{path:path}`` -> a path."""
    return re.sub(
        r"\{[^}:]+(?::path)?\}", lambda m: "x/y" if ":path" in m[0] else "alpha", template
    )


def test_every_route_is_a_table_entry_with_its_rule(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path))
    security = [m for m in app.user_middleware if m.cls is SecurityMiddleware]
    assert len(security) == 1, "the security middleware must be installed exactly once"
    table: EndpointTable = security[0].kwargs["table"]
    # The router serves exactly the table's routes: a route added any other way has no rule.
    assert len(app.routes) == len(table.endpoints)
    assert all(
        route is entry.route for route, entry in zip(app.routes, table.endpoints, strict=True)
    )
    for entry in table.endpoints:
        assert isinstance(entry, Endpoint) and hasattr(entry.rule, "resolve"), entry
        path = _sample_path(entry.path)
        for method in entry.methods.split():
            rule = table.classify(method, path)
            own = entry.rule.resolve({"name": "alpha", "function": "alpha", "path": "x/y"}, path)
            assert isinstance(rule, Rule) and rule == own, (method, entry.path, rule, own)
            if rule.kind == "function":
                assert rule.function == "alpha", (method, entry.path)
    # Rules are remembered per (method, path) up to a length; past it, the same answer.
    long_name = "a" * 300
    rule = table.classify("GET", f"/v1/functions/{long_name}")
    assert (rule.kind, rule.function) == ("function", long_name)
    assert table.classify("GET", f"/v1/functions/{long_name}") == rule


def test_the_table_refuses_an_entry_without_methods() -> None:
    with pytest.raises(ValueError):
        Endpoint("/v1/x", lambda request: None, "", Rule("admin", "admin"))
    with pytest.raises(ValueError):
        Endpoint("/v1/x", lambda request: None, f"GET {WEBSOCKET}", Rule("admin", "admin"))


@pytest.fixture(scope="module")
def tokens(secure: SecureServer, admin: str, deployed: None) -> dict[str, str | None]:
    return {
        "none": None,
        "admin": admin,
        "deployer": secure.make_key("deployer", ("alpha",)),
        "invoker": secure.make_key("invoker", ("alpha",)),
        "viewer": secure.make_key("viewer", ("alpha",)),
    }


@pytest.mark.parametrize(("method", "path", "body", "expected"), MATRIX)
def test_matrix(
    secure: SecureServer,
    tokens: dict[str, str | None],
    method: str,
    path: str,
    body: Any,
    expected: tuple[int | None, ...],
) -> None:
    for role, status in zip(ROLES, expected, strict=True):
        if status is None:
            continue
        with secure.as_(tokens[role]) as client:
            response = client.request(method, path, json=body)
        assert response.status_code == status, (role, method, path, response.text[:300])
        if status >= 400 and status != 410:
            assert response.json()["error"]["code"], response.text
            assert "Traceback" not in response.text


def test_lists_show_only_the_scope(secure: SecureServer, tokens: dict[str, str | None]) -> None:
    with secure.as_(tokens["invoker"]) as client:
        names = [f["name"] for f in client.get("/v1/functions").json()["functions"]]
        assert names == ["alpha"]
        lam = client.get("/2015-03-31/functions/").json()["Functions"]
        assert [f["FunctionName"] for f in lam] == ["alpha"]
        routes = client.get("/v1/routes").json()["routes"]
        assert all(r["function"] == "alpha" for r in routes)
    with secure.as_(tokens["admin"]) as client:
        names = {f["name"] for f in client.get("/v1/functions").json()["functions"]}
        assert {"alpha", "beta"} <= names


def test_x_api_key_and_sigv4_access_key(
    secure: SecureServer, tokens: dict[str, str | None]
) -> None:
    invoker = tokens["invoker"]
    response = httpx.post(
        f"{secure.url}/v1/functions/alpha/invoke", json={}, headers={"X-Api-Key": invoker}
    )
    assert response.status_code == 200
    import boto3

    lam = boto3.client(
        "lambda",
        endpoint_url=secure.url,
        region_name="us-east-1",
        aws_access_key_id=invoker,
        aws_secret_access_key="unused",
    )
    assert lam.invoke(FunctionName="alpha", Payload=b"{}")["StatusCode"] == 200
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="beta", Payload=b"{}")


def test_websocket_needs_a_token(secure: SecureServer, tokens: dict[str, str | None]) -> None:
    base = secure.url.replace("http", "ws")
    with pytest.raises(websockets.exceptions.InvalidStatus):
        ws_client.connect(f"{base}/ws/alpha", open_timeout=5).close()
    with pytest.raises(websockets.exceptions.InvalidStatus):
        ws_client.connect(f"{base}/ws/beta?token={tokens['invoker']}", open_timeout=5).close()
    with ws_client.connect(f"{base}/ws/alpha?token={tokens['invoker']}", open_timeout=10):
        pass
    headers = {"Authorization": f"Bearer {tokens['invoker']}"}
    with ws_client.connect(f"{base}/ws/alpha", additional_headers=headers, open_timeout=10):
        pass


def test_instances_never_see_gateway_secrets(
    secure: SecureServer, tokens: dict[str, str | None]
) -> None:
    with secure.as_(tokens["invoker"]) as client:
        body = client.post("/v1/functions/alpha/invoke", json={}).json()
    assert body["env"] == []  # no COLDBREW_JWT_SECRET, COLDBREW_AUTH, COLDBREW_API_KEY...
    assert body["cwd"] != str(secure.home) and "bundles" in body["cwd"]
    assert body["tmp"] and body["tmp"] != "/tmp"


def test_revoke_and_rotate(secure: SecureServer, admin: str) -> None:
    with secure.as_(admin) as client:
        created = client.post("/v1/keys", json={"role": "invoker", "functions": "alpha"}).json()
        assert "secret_sha256" not in created and created["key"].startswith("cb_")
        rotated = client.post(f"/v1/keys/{created['id']}/rotate").json()
    with secure.as_(created["key"]) as old:
        assert old.post("/v1/functions/alpha/invoke", json={}).status_code == 401
    with secure.as_(rotated["key"]) as new:
        assert new.post("/v1/functions/alpha/invoke", json={}).status_code == 200
    with secure.as_(admin) as client:
        assert client.delete(f"/v1/keys/{created['id']}").status_code == 200
        listed = client.get("/v1/keys").json()["keys"]
        assert all("secret_sha256" not in k for k in listed)
    time.sleep(1.1)  # other gateways' caches; this one dropped it at once
    with secure.as_(rotated["key"]) as new:
        assert new.post("/v1/functions/alpha/invoke", json={}).status_code == 401


def test_audit_records_who_what_where(
    secure: SecureServer, admin: str, tokens: dict[str, str | None]
) -> None:
    with secure.as_(tokens["deployer"]) as client:
        assert (
            client.put("/v1/functions/alpha/aliases/stable", json={"version": 1}).status_code == 200
        )
    time.sleep(0.3)
    with secure.as_(admin) as client:
        events = client.get("/v1/audit", params={"action": "alias.set", "since": "1h"}).json()[
            "events"
        ]
    mine = [e for e in events if e["details"].get("alias") == "stable"]
    assert mine and mine[0]["actor"].startswith("key:") and mine[0]["target"] == "alpha"
    assert mine[0]["source_ip"] == "127.0.0.1" and mine[0]["outcome"] == "ok"
    with secure.as_(admin) as client:
        deploys = client.get("/v1/audit", params={"action": "function.deploy"}).json()["events"]
    assert {e["target"] for e in deploys} >= {"alpha", "beta"}
