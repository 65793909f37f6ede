"""Routes cannot capture what is not theirs (issue 12, item 2), as the attacker tried it.

A deployer scoped to `alpha` added `ANY /{proxy+}`; an admin's mistyped `/v1/functoins` then
reached alpha's handler with the admin's bearer key in `event.headers.authorization`. Each
test below is one step of that attack, and each must fail for the attacker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client as ws_client

from coldbrew.registry.security import SecurityStore
from coldbrew.security.keyring import Keyring, KeySpec
from support import Server, pack_folder, write_bundle

HANDLER = """
CONNECTS = {}

def handler(event, context):
    ctx = event.get("requestContext", {})
    print("EVENT", event.get("rawPath") or event.get("path") or ctx.get("routeKey"), flush=True)
    if ctx.get("eventType") == "CONNECT":
        CONNECTS[ctx["connectionId"]] = event
        return {"statusCode": 200}
    if ctx.get("eventType") == "MESSAGE":
        return {"statusCode": 200, "body": __import__("json").dumps(CONNECTS[ctx["connectionId"]])}
    if ctx.get("eventType") == "DISCONNECT":
        return {"statusCode": 200}
    return event
"""
CONFIG = 'handler = "handler:handler"\nmax_instances = 1\n'


class Secure(Server):
    def key(self, role: str, functions: tuple[str, ...] = ("*",)) -> str:
        store = SecurityStore(f"sqlite:///{self.home / 'registry.db'}")
        try:
            return Keyring(store).create(KeySpec(role=role, functions=functions))[1]
        finally:
            store.close()

    def as_(self, token: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def function_log(self, name: str) -> str:
        path = self.home / "logs" / "functions" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    server = Secure(
        tmp_path_factory.mktemp("capture"),
        env={
            "COLDBREW_AUTH": "on",
            "COLDBREW_JWT_SECRET": "test-jwt-secret-that-is-long-enough-0123456789",
            "COLDBREW_API_KEY": "",
        },
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def keys(secure: Secure, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    made = {
        "admin": secure.key("admin"),
        "deployer": secure.key("deployer", ("alpha",)),
        "viewer": secure.key("viewer", ("alpha",)),
    }
    folder = write_bundle(tmp_path_factory.mktemp("alpha"), HANDLER, CONFIG)
    with secure.as_(made["admin"]) as client:
        files = {"file": ("bundle.tar.gz", pack_folder(folder))}
        deployed = client.post("/v1/functions", data={"name": "alpha"}, files=files)
        assert deployed.status_code == 201, deployed.text
    return made


def _add(client: httpx.Client, route: str, **extra: Any) -> httpx.Response:
    return client.post("/v1/routes", json={"route": route, "function": "alpha", **extra})


@pytest.mark.parametrize("route", ["ANY /{proxy+}", "GET /{proxy+}", "ANY /alpha/{rest+}"])
def test_a_deployer_cannot_add_a_greedy_route(
    secure: Secure, keys: dict[str, str], route: str
) -> None:
    with secure.as_(keys["deployer"]) as deployer:
        refused = _add(deployer, route)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "FORBIDDEN"
        assert route not in {r["route"] for r in deployer.get("/v1/routes").json()["routes"]}


def test_a_deployer_cannot_declare_a_greedy_route_in_its_bundle(
    secure: Secure, keys: dict[str, str], tmp_path: Path
) -> None:
    config = CONFIG + 'routes = ["ANY /{proxy+}"]\n'
    folder = write_bundle(tmp_path / "greedy", HANDLER, config)
    with secure.as_(keys["deployer"]) as deployer:
        files = {"file": ("bundle.tar.gz", pack_folder(folder))}
        refused = deployer.post("/v1/functions", data={"name": "alpha"}, files=files)
        assert refused.status_code == 403, refused.text
        versions = deployer.get("/v1/functions/alpha/versions").json()
        assert len(versions["versions"]) == 1  # nothing was deployed


def test_a_deployer_may_add_its_own_plain_route(secure: Secure, keys: dict[str, str]) -> None:
    with secure.as_(keys["deployer"]) as deployer:
        added = _add(deployer, "GET /alpha/items/{id}")
        assert added.status_code == 201, added.text
        assert added.json()["forward_credentials"] is False
        got = deployer.get("/alpha/items/7")
        assert got.status_code == 200 and got.json()["pathParameters"] == {"id": "7"}
        # Only an admin may hand callers' keys to a function.
        forward = _add(deployer, "GET /alpha/fwd", forward_credentials=True)
        assert forward.status_code == 403, forward.text


@pytest.mark.parametrize("route", ["GET /v1/functoins", "ANY /2015-03-31/{x+}", "GET /ws/alpha"])
def test_nobody_can_route_coldbrew_paths(secure: Secure, keys: dict[str, str], route: str) -> None:
    with secure.as_(keys["admin"]) as admin:
        refused = _add(admin, route)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "ROUTE_RESERVED"


def test_an_admins_typo_and_key_never_reach_a_catch_all(
    secure: Secure, keys: dict[str, str]
) -> None:
    admin_key = keys["admin"]
    with secure.as_(admin_key) as admin:
        added = _add(admin, "ANY /{proxy+}")  # an admin may: it is their platform
        assert added.status_code == 201, added.text
        try:
            typo = admin.get("/v1/functoins")
            assert typo.status_code == 404, typo.text
            assert typo.json()["error"]["code"] == "NOT_FOUND"
            assert "functoins" not in secure.function_log("alpha")  # never reached the handler
            # Paths that are not coldbrew's do reach the route, without coldbrew's credentials.
            event = admin.get("/shop/cart", headers={"X-Api-Key": admin_key}).json()
            assert event["routeKey"] == "ANY /{proxy+}"
            assert "authorization" not in event["headers"]
            assert "x-api-key" not in event["headers"]
            assert admin_key not in json.dumps(event)
        finally:
            admin.delete(f"/v1/routes/{added.json()['id']}")


@pytest.mark.parametrize("role", ["viewer", "deployer"])
def test_a_typo_under_coldbrew_prefixes_is_not_found_for_every_role(
    secure: Secure, keys: dict[str, str], role: str
) -> None:
    with secure.as_(keys[role]) as client:
        for path in ("/v1/functoins", "/2015-03-31/functoins", "/v2/modles"):
            response = client.get(path)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"]["code"] == "NOT_FOUND"


def test_payload_1_0_events_lose_the_credentials_too(secure: Secure, keys: dict[str, str]) -> None:
    with secure.as_(keys["admin"]) as admin:
        body = {"route": "GET /alpha/rest", "function": "alpha", "payload_format": "1.0"}
        assert admin.post("/v1/routes", json=body).status_code == 201
        event = admin.get("/alpha/rest", headers={"X-Api-Key": keys["admin"]}).json()
        assert event["resource"] == "/alpha/rest"
        assert keys["admin"] not in json.dumps(event)
        assert not {"authorization", "x-api-key"} & set(event["multiValueHeaders"])


def test_a_route_that_opts_in_forwards_them(secure: Secure, keys: dict[str, str]) -> None:
    with secure.as_(keys["admin"]) as admin:
        added = _add(admin, "GET /alpha/forwarded", forward_credentials=True)
        assert added.status_code == 201 and added.json()["forward_credentials"] is True
        event = admin.get("/alpha/forwarded").json()
        assert event["headers"]["authorization"] == f"Bearer {keys['admin']}"
    from typer.testing import CliRunner

    from coldbrew.cli.main import app as cli

    env = {"COLDBREW_API_KEY": keys["admin"]}
    listed = CliRunner().invoke(cli, ["route", "ls", "--url", secure.url], env=env)
    assert listed.exit_code == 0, listed.output
    assert "forwarded" in listed.output and "removed" in listed.output


def test_websocket_events_lose_the_token(secure: Secure, keys: dict[str, str]) -> None:
    key = keys["admin"]
    base = secure.url.replace("http://", "ws://")
    with ws_client.connect(
        f"{base}/ws/alpha?token={key}&room=blue",
        additional_headers={"X-Api-Key": key, "X-Team": "ml"},
        open_timeout=15,
    ) as ws:
        ws.send(json.dumps({"action": "show"}))
        event = json.loads(ws.recv(timeout=15))
    assert event["queryStringParameters"] == {"room": "blue"}
    assert event["headers"]["x-team"] == "ml"
    assert "x-api-key" not in event["headers"] and "authorization" not in event["headers"]
    assert key not in json.dumps(event)


def test_only_credential_tokens_leave_the_connect_event() -> None:
    from starlette.datastructures import Headers, QueryParams

    from coldbrew.gateway.websocket.connections import Connection
    from coldbrew.gateway.websocket.events import connect_event

    connection = Connection("c1", "alpha", None, "127.0.0.1", "ua", "h", "http://h/ws")  # type: ignore[arg-type]
    headers = Headers({"authorization": "Bearer x.y.z", "x-team": "ml"})
    jwt = connect_event(connection, "r", headers, QueryParams("token=a.b.c&room=1"))
    assert jwt["queryStringParameters"] == {"room": "1"}
    assert set(jwt["headers"]) == {"x-team"}
    own = connect_event(connection, "r", headers, QueryParams("token=bad"))
    assert own["queryStringParameters"] == {"token": "bad"}  # the application's own parameter
