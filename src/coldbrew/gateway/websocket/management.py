"""The ``@connections`` management API, as ``boto3.client("apigatewaymanagementapi",
endpoint_url="http://host:port/ws")`` calls it.

``POST /ws/@connections/{id}`` sends the raw body as one frame (text when it is UTF-8, else
binary), ``GET`` describes the connection, ``DELETE`` closes it (its $disconnect then runs).
Errors use the AWS REST-JSON shape botocore parses: an ``x-amzn-ErrorType`` header and a
``{"message": ...}`` body, so clients get ``client.exceptions.GoneException`` (410) for a
connection that is not (or no longer) open. With auth on, the caller needs invoke permission on
the connection's function (the API key as bearer token or as the SigV4 access key id; see
docs/SECURITY.md); a connection outside its scope is Gone, like one that does not exist.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from coldbrew import errors
from coldbrew.gateway.auth import current
from coldbrew.gateway.body import read_body
from coldbrew.gateway.targets import split_qualifier
from coldbrew.gateway.websocket.connections import Connection, connections_for
from coldbrew.gateway.websocket.ownership import Answer, ownership_for, shared
from coldbrew.platform import Platform


def aws_error(status: int, error_type: str, message: str) -> Response:
    return Response(
        orjson.dumps({"message": message}),
        status,
        headers={"x-amzn-ErrorType": error_type},
        media_type="application/json",
    )


def _allowed(request: Request, function: str) -> bool:
    principal = current(request)
    return principal.sees(split_qualifier(function)[0]) and principal.can("invoke")


def _connection(request: Request) -> Connection | None:
    """The open connection, if the caller may reach its function (else, as for a connection
    that does not exist: GoneException)."""
    connection = connections_for(request.app).get(request.path_params["connection_id"])
    if connection is None or not _allowed(request, connection.function):
        return None
    return connection


async def _elsewhere(request: Request, op: str, data: bytes = b"") -> Answer | None:
    """Ask the gateway holding the connection (websocket/ownership.py); None: Gone."""
    connection_id = request.path_params["connection_id"]
    if connections_for(request.app).get(connection_id) is not None:
        return None  # ours, but the caller may not reach it
    ownership = ownership_for(request.app)
    function = await ownership.function_of(connection_id)
    if function is None or not _allowed(request, function):
        return None
    answer = await ownership.forward(connection_id, op, data)
    return None if answer.status == 410 else answer


def _gone(request: Request) -> Response:
    connection_id = request.path_params["connection_id"]
    return aws_error(410, "GoneException", f"connection {connection_id} is gone")


async def post_to_connection(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    connection = _connection(request)
    if connection is None and not shared(request.app):
        return _gone(request)  # one gateway: nowhere else to look
    try:
        data = await read_body(request, platform.settings.max_payload_bytes)
    except errors.PayloadTooLarge as exc:
        return aws_error(413, "PayloadTooLargeException", exc.message)
    if connection is None:
        answer = await _elsewhere(request, "post", data)
        return _gone(request) if answer is None else Response(status_code=200)
    try:
        frame: str | bytes = data.decode()
    except UnicodeDecodeError:
        frame = data
    if not await connection.send(frame):
        return _gone(request)
    return Response(status_code=200)


async def get_connection(request: Request) -> Response:
    connection = _connection(request)
    if connection is None:
        answer = await _elsewhere(request, "get")
        if answer is None:
            return _gone(request)
        return Response(answer.body, 200, media_type="application/json")
    return Response(orjson.dumps(connection.describe()), 200, media_type="application/json")


async def delete_connection(request: Request) -> Response:
    connection = _connection(request)
    if connection is None:
        answer = await _elsewhere(request, "delete")
        return _gone(request) if answer is None else Response(status_code=204)
    await connection.close(1000, "Connection closed by the server")
    return Response(status_code=204)
