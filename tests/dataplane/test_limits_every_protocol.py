"""Rate limits and quotas hold for every invocation, whatever protocol brought it.

The attacks of issue 12: a key with ``--rate 1/s --burst 2`` got 10 of 10 WebSocket messages
answered (limits were checked only at the handshake), and a function's ``rate_limit`` did not
apply to API Gateway routes or WebSocket messages. Each test here fails when limits live in the
HTTP middleware instead of the data plane.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from websockets.asyncio.client import connect

from security.conftest import SecureServer, deploy, running_secure_server
from support import write_bundle

ECHO = """
def handler(event, context):
    if isinstance(event, dict) and event.get("requestContext", {}).get("eventType") == "MESSAGE":
        return {"statusCode": 200, "body": "pong"}
    return {"statusCode": 200, "body": "ok"}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    with running_secure_server(tmp_path_factory.mktemp("limits")) as server:
        yield server


@pytest.fixture(scope="module")
def admin(server: SecureServer) -> str:
    return server.make_key("admin")


@pytest.fixture(scope="module")
def functions(server: SecureServer, admin: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.mktemp("bundles")
    free = write_bundle(base / "free", ECHO, 'handler = "handler:handler"\n')
    deploy(server, admin, "free", free)
    # A function limited to 2 calls in a burst, refilled once every 100 s: the third call of
    # any protocol inside the test is refused.
    slow = write_bundle(
        base / "slow", ECHO, 'handler = "handler:handler"\nrate_limit = 0.01\nburst = 2\n'
    )
    deploy(server, admin, "slow", slow)
    with server.as_(admin) as client:
        for route, function in (("GET /free-route", "free"), ("GET /slow-route", "slow")):
            body = {"route": route, "function": function, "payload_format": "2.0"}
            response = client.post("/v1/routes", json=body)
            assert response.status_code == 201, response.text


async def _ws_replies(server: SecureServer, target: str, token: str, messages: int) -> list[Any]:
    url = server.url.replace("http://", "ws://") + f"/ws/{target}?token={token}"
    replies = []
    async with connect(url) as ws:
        for _ in range(messages):  # one at a time: each message is one invocation
            await ws.send(json.dumps({"action": "ping"}))
            replies.append(await asyncio.wait_for(ws.recv(), 30))
    return replies


def _throttled(replies: list[Any]) -> int:
    return sum(1 for r in replies if "Too Many Requests" in str(r))


def test_key_rate_limit_holds_for_websocket_messages(
    server: SecureServer, admin: str, functions: None
) -> None:
    key = server.make_key("invoker", ("free",), rate_per_s=0.01, burst=2)
    # The $connect invocation takes one token; of ten messages one more is answered.
    replies = asyncio.run(_ws_replies(server, "free", key, 10))
    assert replies.count("pong") == 1
    assert _throttled(replies) == 9


def test_function_rate_limit_holds_for_websocket_messages(
    server: SecureServer, admin: str, functions: None
) -> None:
    replies = asyncio.run(_ws_replies(server, "slow", admin, 5))
    assert replies.count("pong") == 1  # $connect took the first of the burst of 2
    assert _throttled(replies) == 4


def test_function_rate_limit_holds_for_api_gateway_routes(
    server: SecureServer, admin: str, functions: None
) -> None:
    # The route shares the function's bucket with every other protocol: the WebSocket test
    # above may have emptied it already, so only the refusal is certain.
    with server.as_(admin) as client:
        statuses = [client.get("/slow-route").status_code for _ in range(4)]
        free = [client.get("/free-route").status_code for _ in range(4)]
    assert statuses[-1] == 429 and statuses.count(200) <= 2
    assert free == [200] * 4


def test_key_quota_holds_for_every_protocol_together(
    server: SecureServer, admin: str, functions: None
) -> None:
    """One daily quota of 4, spent across four protocols: the fifth call is refused."""
    key = server.make_key("invoker", ("free",), daily_quota=4)
    with server.as_(key) as client:
        assert client.post("/v1/functions/free/invoke", json={}).status_code == 200
        assert client.get("/free-route").status_code == 200
    lam = boto3.client(
        "lambda",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key="unused",
        config=Config(retries={"max_attempts": 1}),
    )
    assert lam.invoke(FunctionName="free", Payload=b"{}")["StatusCode"] == 200
    replies = asyncio.run(_ws_replies(server, "free", key, 0))  # $connect: the fourth call
    assert replies == []
    with server.as_(key) as client:
        refused = client.post("/v1/functions/free/invoke", json={})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "QUOTA_EXCEEDED"
    with pytest.raises(lam.exceptions.TooManyRequestsException):
        lam.invoke(FunctionName="free", Payload=b"{}")
