"""WebSocket APIs like API Gateway's, end to end: the `websockets` client library talks to a
real server, and a chat-room handler pushes to other connections with boto3's
apigatewaymanagementapi client, as the AWS sample does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import boto3
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from support import Server, write_bundle

TIMEOUT_S = 15

CHAT_HANDLER = """
import contextlib, fcntl, json, os
import boto3

ROOM = os.environ["ROOM_FILE"]
EVENTS = os.environ["EVENTS_DIR"]


@contextlib.contextmanager
def room():
    with open(ROOM, "a+") as file:  # the room is shared by every instance: lock it
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        members = set(file.read().split())
        yield members
        file.seek(0)
        file.truncate()
        file.write("\\n".join(sorted(members)))


def api(ctx):
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"http://{ctx['domainName']}/{ctx['stage']}",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def broadcast(ctx, sender, payload):
    # The posts run outside the room's lock: a slow one must not hold up other connections'
    # $connect and $disconnect.
    client, sent, gone = api(ctx), 0, set()
    with room() as members:
        others = sorted(members - {sender})
    for member in others:
        try:
            client.post_to_connection(ConnectionId=member, Data=json.dumps(payload).encode())
            sent += 1
        except client.exceptions.GoneException:
            gone.add(member)
    if gone:
        with room() as members:
            members -= gone
    return sent


def handler(event, context):
    ctx = event["requestContext"]
    route, me = ctx["routeKey"], ctx["connectionId"]
    if route == "$connect":
        if (event.get("queryStringParameters") or {}).get("token") == "bad":
            return {"statusCode": 401, "body": "bad token"}
        with open(os.path.join(EVENTS, me + ".json"), "w") as file:
            json.dump(event, file)
        with room() as members:
            members.add(me)
        wanted = event["headers"].get("sec-websocket-protocol")
        if wanted:
            return {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": wanted.split(",")[0]}}
        return {"statusCode": 200}
    if route == "$disconnect":
        with room() as members:
            members.discard(me)
        with open(os.path.join(EVENTS, me + ".disconnect.json"), "w") as file:
            json.dump(event, file)
        broadcast(ctx, me, {"left": me})
        return {"statusCode": 200}
    if route == "sendmessage":
        text = json.loads(event["body"])["text"]
        sent = broadcast(ctx, me, {"from": me, "text": text})
        return {"statusCode": 200, "body": json.dumps({"sent": sent})}
    if route == "connectevent":
        with open(os.path.join(EVENTS, me + ".json")) as file:
            return {"statusCode": 200, "body": file.read()}
    if route == "boom":
        raise RuntimeError("boom")
    if route == "plain":
        return {"predictions": [1, 2]}
    if route == "quiet":
        return None
    return {"statusCode": 200, "body": json.dumps({"routeKey": route, "event": event})}
"""


@pytest.fixture(scope="module")
def chat(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ws")
    events = folder / "events"
    events.mkdir()
    # Two functions share these, and each runs as its own uid (docs/SECURITY.md, Isolation).
    (folder / "room").touch(0o666)
    for shared, mode in ((folder, 0o777), (events, 0o777), (folder / "room", 0o666)):
        shared.chmod(mode)
    config = (
        'handler = "handler:handler"\nconcurrency = 4\n\n[environment]\n'
        f'ROOM_FILE = "{folder / "room"}"\nEVENTS_DIR = "{events}"\n'
    )
    bundle = write_bundle(folder / "chat", CHAT_HANDLER, config)
    assert server.deploy_folder("chat", bundle).status_code == 201
    routed = config + (
        '[websocket]\nroute_selection_expression = "$request.body.meta.kind"\n'
        'routes = ["ping", "pong"]\n'
    )
    bundle = write_bundle(folder / "routed", CHAT_HANDLER, routed)
    assert server.deploy_folder("routed", bundle).status_code == 201
    return events


def _log_tail(server: Server, lines: int = 30) -> str:
    """The chat function's and the gateway's last log lines, for a failure's message."""
    out = []
    for log in (
        server.home / "logs" / "functions" / "chat.log",
        server.log_path,
    ):
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"{log.name}:\n" + "\n".join(tail))
    return "\n".join(out) or "no logs"


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 60))


def ws_url(server: Server, target: str) -> str:
    return server.url.replace("http://", "ws://") + f"/ws/{target}"


async def receive(ws: ClientConnection) -> Any:
    """The next frame, skipping "left" notices of earlier tests' connections (the room is
    shared, and their $disconnect may still be running when the next test starts)."""
    while True:
        frame = await asyncio.wait_for(ws.recv(), TIMEOUT_S)
        if not (isinstance(frame, str) and frame.startswith('{"left"')):
            return frame


async def ask(ws: ClientConnection, message: Any) -> Any:
    await ws.send(message if isinstance(message, str | bytes) else json.dumps(message))
    return json.loads(await receive(ws))


async def my_id(ws: ClientConnection) -> str:
    reply = await ask(ws, {"action": "echo"})
    return str(reply["event"]["requestContext"]["connectionId"])


def management(server: Server) -> Any:
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"{server.url}/ws",
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


async def eventually(check: Callable[[], Awaitable[bool] | bool]) -> None:
    for _ in range(100):
        result = check()
        if await result if not isinstance(result, bool) else result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition never became true")


def test_connect_event_has_api_gateway_fields(server: Server, chat: Path) -> None:
    async def scenario() -> None:
        url = ws_url(server, "chat") + "?room=blue&tag=a&tag=b"
        async with connect(url, additional_headers={"X-Team": "ml"}) as ws:
            event = await ask(ws, {"action": "connectevent"})
        ctx = event["requestContext"]
        assert ctx["routeKey"] == "$connect" and ctx["eventType"] == "CONNECT"
        assert ctx["stage"] == "ws" and ctx["domainName"] == server.url.removeprefix("http://")
        assert ctx["callbackUrl"] == f"{server.url}/ws"
        assert ctx["identity"]["sourceIp"] == "127.0.0.1"
        for key in ("connectionId", "requestId", "connectedAt", "requestTimeEpoch", "apiId"):
            assert ctx[key], key
        assert event["headers"]["x-team"] == "ml"
        assert event["queryStringParameters"] == {"room": "blue", "tag": "b"}
        assert event["multiValueQueryStringParameters"]["tag"] == ["a", "b"]
        assert event["isBase64Encoded"] is False

    run(scenario())


def test_route_selection_and_message_events(server: Server, chat: Path) -> None:
    async def scenario() -> None:
        async with connect(ws_url(server, "chat")) as ws:
            echoed = await ask(ws, {"action": "echo", "x": 1})
            assert echoed["routeKey"] == "echo"
            event = echoed["event"]
            ctx = event["requestContext"]
            assert ctx["eventType"] == "MESSAGE" and ctx["messageId"] and ctx["requestId"]
            assert json.loads(event["body"]) == {"action": "echo", "x": 1}
            assert (await ask(ws, "not json"))["routeKey"] == "$default"
            assert (await ask(ws, {"action": 5}))["routeKey"] == "$default"
            binary = await ask(ws, b"\x00\x01")
            assert binary["event"]["isBase64Encoded"] is True
            assert binary["event"]["body"] == "AAE="
            # A plain return value is sent as JSON; None sends nothing.
            assert await ask(ws, {"action": "plain"}) == {"predictions": [1, 2]}
            await ws.send(json.dumps({"action": "quiet"}))
            assert (await ask(ws, {"action": "echo"}))["routeKey"] == "echo"

    run(scenario())


def test_route_selection_expression_from_the_function(server: Server, chat: Path) -> None:
    async def scenario() -> None:
        async with connect(ws_url(server, "routed")) as ws:
            assert (await ask(ws, {"meta": {"kind": "ping"}}))["routeKey"] == "ping"
            assert (await ask(ws, {"meta": {"kind": "other"}}))["routeKey"] == "$default"
            assert (await ask(ws, {"action": "ping"}))["routeKey"] == "$default"

    run(scenario())


def test_handler_errors_keep_the_socket_open(server: Server, chat: Path) -> None:
    async def scenario() -> None:
        async with connect(ws_url(server, "chat")) as ws:
            me = await my_id(ws)
            error = await ask(ws, {"action": "boom"})
            assert error["message"] == "Internal server error"
            assert error["connectionId"] == me and error["requestId"]
            assert await my_id(ws) == me

    run(scenario())


def test_connect_can_refuse_or_pick_a_subprotocol(server: Server, chat: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(server, "chat") + "?token=bad"):
                pass
        assert refused.value.response.status_code == 401
        assert refused.value.response.body == b"bad token"
        async with connect(ws_url(server, "chat"), subprotocols=[Subprotocol("chat.v2")]) as chosen:
            assert chosen.subprotocol == "chat.v2"
        with pytest.raises(InvalidStatus) as missing:
            async with connect(ws_url(server, "nope")):
                pass
        assert missing.value.response.status_code == 404
        assert json.loads(missing.value.response.body)["error"]["code"] == "NOT_FOUND"

    run(scenario())


def test_chat_room_with_boto3(server: Server, chat: Path) -> None:
    """Alice's message reaches Bob through the handler's @connections push; Bob drops without
    a close frame, his $disconnect runs, and pushes to him then fail with GoneException."""
    api = management(server)

    async def scenario() -> None:
        async with connect(ws_url(server, "chat")) as alice:
            alice_id = await my_id(alice)
            bob = await connect(ws_url(server, "chat"), user_agent_header="bob-agent/1.0")
            bob_id = await my_id(bob)
            reply = await ask(alice, {"action": "sendmessage", "text": "hi bob"})
            assert reply["sent"] >= 1
            pushed = json.loads(await receive(bob))
            assert pushed == {"from": alice_id, "text": "hi bob"}

            described = await asyncio.to_thread(api.get_connection, ConnectionId=bob_id)
            assert described["Identity"] == {"SourceIp": "127.0.0.1", "UserAgent": "bob-agent/1.0"}
            assert described["LastActiveAt"] >= described["ConnectedAt"]
            await asyncio.to_thread(api.post_to_connection, ConnectionId=bob_id, Data=b"direct")
            assert await receive(bob) == "direct"

            bob.transport.abort()  # a dropped client: no close frame
            left = f'{{"left": "{bob_id}"}}'
            try:
                while (frame := await asyncio.wait_for(alice.recv(), TIMEOUT_S)) != left:
                    assert frame.startswith('{"left"')  # an earlier test's connection
            except TimeoutError:
                raise AssertionError(
                    f"no {left} within {TIMEOUT_S} s; {_log_tail(server)}"
                ) from None
            gone = (chat / f"{bob_id}.disconnect.json").read_text()
            assert json.loads(gone)["requestContext"]["eventType"] == "DISCONNECT"
            with pytest.raises(api.exceptions.GoneException):
                await asyncio.to_thread(api.post_to_connection, ConnectionId=bob_id, Data=b"x")
            with pytest.raises(api.exceptions.GoneException):
                await asyncio.to_thread(api.get_connection, ConnectionId=bob_id)

    run(scenario())


def test_delete_connection_closes_the_socket(server: Server, chat: Path) -> None:
    api = management(server)

    async def scenario() -> None:
        async with connect(ws_url(server, "chat")) as ws:
            me = await my_id(ws)
            await asyncio.to_thread(api.delete_connection, ConnectionId=me)
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        await eventually(lambda: (chat / f"{me}.disconnect.json").exists())
        with pytest.raises(api.exceptions.GoneException):
            await asyncio.to_thread(api.delete_connection, ConnectionId=me)

    run(scenario())


def test_binary_pushes_and_plain_http_errors(server: Server, chat: Path) -> None:
    async def scenario() -> None:
        async with connect(ws_url(server, "chat")) as ws:
            me = await my_id(ws)
            url = f"/ws/@connections/{me}"
            pushed = await asyncio.to_thread(server.client.post, url, content=b"\xff\x00")
            assert pushed.status_code == 200
            assert await receive(ws) == b"\xff\x00"
        gone = server.client.post("/ws/@connections/unknown", content=b"x")
        assert gone.status_code == 410
        assert gone.headers["x-amzn-errortype"] == "GoneException"
        assert "message" in gone.json()

    run(scenario())
