"""@connections from any gateway: a WebSocket client on gateway A, boto3's
apigatewaymanagementapi against gateway B (two ``coldbrew serve`` processes sharing one
registry and one Redis). Without the ownership records B would answer Gone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from support import Server, write_bundle

HANDLER = """
def handler(event, context):
    ctx = event["requestContext"]
    if ctx["routeKey"] in ("$connect", "$disconnect"):
        return {"statusCode": 200}
    return {"statusCode": 200, "body": ctx["connectionId"]}
"""


@pytest.fixture(scope="module")
def gateways(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[tuple[Server, Server]]:
    shared = tmp_path_factory.mktemp("shared")
    env = {
        "COLDBREW_DATABASE_URL": f"sqlite:///{shared / 'registry.db'}",
        "COLDBREW_REDIS_URL": redis_url,
    }
    a = Server(tmp_path_factory.mktemp("gw-a"), env=env)
    b = Server(tmp_path_factory.mktemp("gw-b"), env=env)
    a.start()
    try:
        b.start()
        try:
            bundle = write_bundle(shared / "echo", HANDLER, 'handler = "handler:handler"\n')
            assert a.deploy_folder("wsecho", bundle).status_code == 201
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


def management(server: Server) -> Any:
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"{server.url}/ws",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def test_connections_api_reaches_a_socket_on_another_gateway(
    gateways: tuple[Server, Server],
) -> None:
    a, b = gateways
    api = management(b)

    async def scenario() -> None:
        async with connect(a.url.replace("http://", "ws://") + "/ws/wsecho") as ws:
            await ws.send("who am i")
            me = await asyncio.wait_for(ws.recv(), 15)
            assert isinstance(me, str) and len(me) == 12

            await asyncio.to_thread(api.post_to_connection, ConnectionId=me, Data=b"from b")
            assert await asyncio.wait_for(ws.recv(), 15) == "from b"
            await asyncio.to_thread(api.post_to_connection, ConnectionId=me, Data=b"\xff\x00")
            assert await asyncio.wait_for(ws.recv(), 15) == b"\xff\x00"
            described = await asyncio.to_thread(api.get_connection, ConnectionId=me)
            assert described["Identity"]["SourceIp"] == "127.0.0.1"

            await asyncio.to_thread(api.delete_connection, ConnectionId=me)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 15)
        for _ in range(50):  # the owner forgets it once its $disconnect ran
            try:
                await asyncio.to_thread(api.post_to_connection, ConnectionId=me, Data=b"x")
            except api.exceptions.GoneException:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("a closed connection was not Gone")

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_unknown_connection_is_gone_on_every_gateway(gateways: tuple[Server, Server]) -> None:
    for server in gateways:
        api = management(server)
        with pytest.raises(api.exceptions.GoneException):
            api.post_to_connection(ConnectionId="AAAAAAAAAAAA", Data=b"x")
