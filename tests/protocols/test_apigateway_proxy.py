"""API Gateway proxy integration: routes, events of both payload formats, responses, and real
handler libraries (FastAPI behind Mangum, aws-lambda-powertools resolvers) deployed as bundles."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import (
    APIGatewayProxyEvent,
    APIGatewayProxyEventV2,
)
from typer.testing import CliRunner

from coldbrew.cli.main import app as cli
from support import Server, write_bundle

ECHO = """
def handler(event, context):
    return event  # a bare JSON return: 200 with the JSON
"""
SHAPED = """
import base64

def handler(event, context):
    return {
        "statusCode": 201,
        "headers": {"x-one": "1"},
        "multiValueHeaders": {"x-many": ["a", "b"]},
        "cookies": ["session=abc; Path=/", "theme=dark"],
        "body": base64.b64encode(bytes(range(256))).decode(),
        "isBase64Encoded": True,
    }
"""
FASTAPI = """
from fastapi import APIRouter, FastAPI, Request, Response
from mangum import Mangum

router = APIRouter()

@router.get("/items/{item_id}")
def read_item(item_id: int, q: str | None = None, request: Request = None):
    return {"item_id": item_id, "q": q, "cookie": request.cookies.get("flavour")}

@router.post("/items")
async def create_item(request: Request):
    return {"received": await request.json()}

@router.get("/png")
def png():
    return Response(b"\\x89PNG\\r\\n\\x1a\\n\\x00\\xff", media_type="image/png")

app = FastAPI()
app.include_router(router, prefix="/fast")
app.include_router(router, prefix="/fast1")
handler = Mangum(app, lifespan="off")
"""
POWERTOOLS = """
from aws_lambda_powertools.event_handler import {resolver}

app = {resolver}()

@app.get("/{prefix}/<name>")
def hello(name: str):
    return {{"hello": name, "q": app.current_event.get_query_string_value("q"),
             "kind": type(app.current_event).__name__}}

@app.post("/{prefix}/echo")
def echo():
    return {{"body": app.current_event.json_body}}

def handler(event, context):
    return app.resolve(event, context)
"""
TOML = "handler = 'handler:handler'\n"


def _deploy(server: Server, folder: Path, name: str, code: str, routes: str = "") -> None:
    config = TOML + (f"routes = {routes}\n" if routes else "")
    response = server.deploy_folder(name, write_bundle(folder, code, config))
    assert response.status_code in (200, 201), response.text


def _route(server: Server, route: str, function: str, payload_format: str = "2.0") -> None:
    body = {"route": route, "function": function, "payload_format": payload_format}
    response = server.client.post("/v1/routes", json=body)
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def apigw(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Server:
    base = tmp_path_factory.mktemp("apigw")
    _deploy(server, base / "echo", "echo", ECHO)
    _deploy(server, base / "shaped", "shaped", SHAPED, '["GET /shaped", "1.0 GET /shaped1"]')
    _deploy(server, base / "fast", "fast", FASTAPI)
    rest_code = POWERTOOLS.format(resolver="APIGatewayRestResolver", prefix="ptr")
    http_code = POWERTOOLS.format(resolver="APIGatewayHttpResolver", prefix="pt")
    _deploy(server, base / "ptrest", "ptrest", rest_code)
    _deploy(server, base / "pthttp", "pthttp", http_code)
    _route(server, "ANY /h2/{kind}/{rest+}", "echo", "2.0")
    _route(server, "ANY /r1/echo/{kind}/{rest+}", "echo", "1.0")
    _route(server, "GET /h2/exact/path", "echo:latest", "2.0")
    _route(server, "ANY /fast/{proxy+}", "fast", "2.0")
    _route(server, "ANY /fast1/{proxy+}", "fast", "1.0")
    _route(server, "ANY /pt/{proxy+}", "pthttp", "2.0")
    return server


def _get_event(server: Server, path: str, **kwargs: Any) -> dict[str, Any]:
    response = server.client.request(kwargs.pop("method", "GET"), path, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return dict(response.json())


def test_http_api_event_v2(apigw: Server) -> None:
    event = _get_event(
        apigw,
        "/h2/items/a/b/c?x=1&x=2&y=z",
        method="POST",
        content="héllo",
        headers={"content-type": "text/plain", "cookie": "a=1; b=2", "x-multi": "one"},
    )
    parsed = APIGatewayProxyEventV2(event)
    assert parsed.version == "2.0"
    assert parsed.route_key == "ANY /h2/{kind}/{rest+}"
    assert parsed.raw_path == "/h2/items/a/b/c" and parsed.path == "/h2/items/a/b/c"
    assert parsed.raw_query_string == "x=1&x=2&y=z"
    assert parsed.query_string_parameters == {"x": "1,2", "y": "z"}
    assert parsed.cookies == ["a=1", "b=2"]
    assert "cookie" not in parsed.headers
    assert parsed.headers["x-multi"] == "one"
    assert parsed.headers.get("Content-Type") == "text/plain"
    assert parsed.path_parameters == {"kind": "items", "rest": "a/b/c"}
    assert parsed.http_method == "POST"
    assert parsed.body == "héllo" and parsed.is_base64_encoded is False
    ctx = parsed.request_context
    assert ctx.http.method == "POST" and ctx.http.path == "/h2/items/a/b/c"
    assert ctx.http.source_ip == "127.0.0.1" and ctx.http.protocol == "HTTP/1.1"
    assert ctx.http.user_agent.startswith("python-httpx")
    assert ctx.stage == "$default" and ctx.route_key == parsed.route_key
    assert ctx.request_id and ctx.domain_name == "127.0.0.1" and ctx.domain_prefix
    assert ctx.account_id == "000000000000" and ctx.api_id
    assert ctx.time and ctx.time_epoch > 1_600_000_000_000
    assert not parsed.stage_variables


def test_rest_api_event_v1(apigw: Server) -> None:
    event = _get_event(
        apigw,
        "/r1/echo/items/42?x=1&x=2",
        headers=[("x-multi", "one"), ("x-multi", "two")],
    )
    parsed = APIGatewayProxyEvent(event)
    assert parsed.resource == "/r1/echo/{kind}/{rest+}"
    assert parsed.path == "/r1/echo/items/42" and parsed.http_method == "GET"
    assert parsed.path_parameters == {"kind": "items", "rest": "42"}
    assert parsed.query_string_parameters == {"x": "2"}
    assert parsed.multi_value_query_string_parameters == {"x": ["1", "2"]}
    assert parsed.multi_value_headers["x-multi"] == ["one", "two"]
    assert parsed.headers["x-multi"] == "two"
    assert parsed.body is None and parsed.is_base64_encoded is False
    ctx = parsed.request_context
    assert ctx.http_method == "GET" and ctx.path == "/r1/echo/items/42"
    assert ctx.resource_path == "/r1/echo/{kind}/{rest+}" and ctx.stage == "$default"
    assert ctx.identity.source_ip == "127.0.0.1"
    assert ctx.identity.user_agent.startswith("python-httpx")
    assert ctx.protocol == "HTTP/1.1" and ctx.request_id and ctx.extended_request_id
    assert ctx.request_time and ctx.request_time_epoch > 1_600_000_000_000
    assert ctx.domain_name == "127.0.0.1" and ctx.account_id == "000000000000"
    assert not parsed.stage_variables


# Keys of AWS's sample events (API Gateway developer guide, "payload format version").
SAMPLE_V1_KEYS = {
    "resource", "path", "httpMethod", "headers", "multiValueHeaders", "queryStringParameters",
    "multiValueQueryStringParameters", "pathParameters", "stageVariables", "requestContext",
    "body", "isBase64Encoded",
}  # fmt: skip
SAMPLE_V1_CONTEXT = {
    "accountId", "apiId", "domainName", "domainPrefix", "extendedRequestId", "httpMethod",
    "identity", "path", "protocol", "requestId", "requestTime", "requestTimeEpoch",
    "resourceId", "resourcePath", "stage",
}  # fmt: skip
SAMPLE_V2_KEYS = {
    "version", "routeKey", "rawPath", "rawQueryString", "cookies", "headers",
    "queryStringParameters", "requestContext", "body", "pathParameters", "isBase64Encoded",
}  # fmt: skip
SAMPLE_V2_CONTEXT = {
    "accountId", "apiId", "domainName", "domainPrefix", "http", "requestId", "routeKey",
    "stage", "time", "timeEpoch",
}  # fmt: skip


def test_events_have_the_sample_keys(apigw: Server) -> None:
    v1 = _get_event(apigw, "/r1/echo/k/r?a=b", method="POST", content=b"{}")
    assert set(v1) >= SAMPLE_V1_KEYS and set(v1["requestContext"]) >= SAMPLE_V1_CONTEXT
    assert {"sourceIp", "userAgent", "cognitoIdentityId", "user"} <= set(
        v1["requestContext"]["identity"]
    )
    v2 = _get_event(apigw, "/h2/k/r?a=b", method="POST", content=b"{}", cookies={"c": "1"})
    assert set(v2) >= SAMPLE_V2_KEYS and set(v2["requestContext"]) >= SAMPLE_V2_CONTEXT
    assert set(v2["requestContext"]["http"]) == {
        "method", "path", "protocol", "sourceIp", "userAgent",
    }  # fmt: skip


def test_binary_bodies_are_base64(apigw: Server) -> None:
    raw = bytes(range(256))
    for path, cls in (
        ("/h2/bin/x", APIGatewayProxyEventV2),
        ("/r1/echo/bin/x", APIGatewayProxyEvent),
    ):
        event = cls(
            _get_event(
                apigw, path, method="PUT", content=raw, headers={"content-type": "image/png"}
            )
        )
        assert event.is_base64_encoded is True
        assert base64.b64decode(event.body or "") == raw


def test_route_precedence(apigw: Server) -> None:
    # An exact route beats the greedy one that also matches.
    assert _get_event(apigw, "/h2/exact/path")["routeKey"] == "GET /h2/exact/path"
    assert _get_event(apigw, "/h2/exact/path2")["routeKey"] == "ANY /h2/{kind}/{rest+}"


def test_proxy_response_shape(apigw: Server) -> None:
    for path in ("/shaped", "/shaped1"):
        response = apigw.client.get(path)
        assert response.status_code == 201
        assert response.content == bytes(range(256))
        assert response.headers["x-one"] == "1"
        assert response.headers.get_list("x-many") == ["a", "b"]
        assert response.headers.get_list("set-cookie") == ["session=abc; Path=/", "theme=dark"]


def test_unmatched_path_is_json_not_found(apigw: Server) -> None:
    response = apigw.client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"
    assert apigw.client.delete("/shaped").status_code == 404  # method not routed


@pytest.mark.parametrize("prefix", ["/fast", "/fast1"])
def test_fastapi_behind_mangum(apigw: Server, prefix: str) -> None:
    got = apigw.client.get(f"{prefix}/items/7?q=hi", cookies={"flavour": "mint"})
    assert got.status_code == 200, got.text
    assert got.json() == {"item_id": 7, "q": "hi", "cookie": "mint"}
    posted = apigw.client.post(f"{prefix}/items", json={"name": "x"})
    assert posted.json() == {"received": {"name": "x"}}
    bad = apigw.client.get(f"{prefix}/items/not-a-number")
    assert bad.status_code == 422 and bad.json()["detail"]
    png = apigw.client.get(f"{prefix}/png")
    assert png.headers["content-type"] == "image/png"
    assert png.content == b"\x89PNG\r\n\x1a\n\x00\xff"
    assert apigw.client.get(f"{prefix}/missing").status_code == 404


def test_powertools_resolvers(apigw: Server) -> None:
    result = CliRunner().invoke(
        cli, ["route", "add", "ANY /ptr/{proxy+}", "ptrest", "--payload-format", "1.0",
              "--url", apigw.url],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    http = apigw.client.get("/pt/ada?q=1")
    assert http.json() == {"hello": "ada", "q": "1", "kind": "APIGatewayProxyEventV2"}
    assert apigw.client.post("/pt/echo", json={"a": 1}).json() == {"body": {"a": 1}}
    assert apigw.client.get("/pt/a/b").status_code == 404  # the resolver's own 404
    # The REST API resolver gets payload 1.0 events through the route added above.
    rest = apigw.client.get("/ptr/grace?q=2")
    assert rest.json() == {"hello": "grace", "q": "2", "kind": "APIGatewayProxyEvent"}
    assert apigw.client.post("/ptr/echo", json={"b": 2}).json() == {"body": {"b": 2}}


def test_route_admin_and_cli(apigw: Server) -> None:
    runner = CliRunner()
    added = runner.invoke(cli, ["route", "add", "GET /tmp/{id}", "echo", "--url", apigw.url])
    assert added.exit_code == 0, added.output
    listed = apigw.client.get("/v1/routes").json()["routes"]
    mine = next(r for r in listed if r["route"] == "GET /tmp/{id}")
    assert mine["function"] == "echo" and mine["payload_format"] == "2.0"
    assert {r["route"] for r in listed} >= {"GET /shaped", "GET /shaped1"}
    assert next(r for r in listed if r["route"] == "GET /shaped1")["payload_format"] == "1.0"
    ls = runner.invoke(cli, ["route", "ls", "--json", "--url", apigw.url])
    assert ls.exit_code == 0 and "GET /tmp/{id}" in ls.output
    assert apigw.client.get("/tmp/5").status_code == 200
    duplicate = apigw.client.post("/v1/routes", json={"route": "GET /tmp/{id}", "function": "echo"})
    assert duplicate.status_code == 409
    malformed = apigw.client.post("/v1/routes", json={"route": "GET /{a+}/b", "function": "echo"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "VALIDATION_ERROR"
    removed = runner.invoke(cli, ["route", "rm", str(mine["id"]), "--url", apigw.url])
    assert removed.exit_code == 0, removed.output
    assert apigw.client.get("/tmp/5").status_code == 404
    assert runner.invoke(cli, ["route", "rm", "99999", "--url", apigw.url]).exit_code == 1


def test_reserved_prefix_ignores_case_and_repeated_slashes() -> None:
    from coldbrew.registry.routes import reserved_prefix

    assert reserved_prefix("//v1//functoins") == "/v1"
    assert reserved_prefix("/V2/models/x") == "/v2"
    assert reserved_prefix("/healthz") == "/healthz"
    assert reserved_prefix("/2019-09-25/functions/f/event-invoke-config") == "/2019-09-25"
    assert reserved_prefix("/2019-9-25/x") is None
    assert reserved_prefix("/v1x/items") is None and reserved_prefix("/") is None


def test_every_coldbrew_endpoint_is_reserved() -> None:
    """A new endpoint of coldbrew's own must be added to RESERVED_PREFIXES, or a route could
    take its path (and a mistyped call to it would land in some function)."""
    from coldbrew.gateway.app import routes
    from coldbrew.registry.routes import reserved_prefix

    paths = [getattr(r, "path", "") for r in routes()]
    assert "/{path:path}" in paths  # the API Gateway catch-all itself
    assert [p for p in paths if p != "/{path:path}" and reserved_prefix(p) is None] == []


@pytest.mark.parametrize(
    "route",
    [
        "GET /v1/functoins",
        "ANY /v2/models/{x}",
        "POST /2015-03-31/functions/{f}/invocations",
        "GET /ws",
        "GET /stream/x",
        "GET /metrics",
        "GET /ui/extra",
        "GET /healthz",
        "GET /openapi.json",
        "GET /V1/keys",
    ],
)
def test_routes_under_coldbrew_prefixes_are_refused(apigw: Server, route: str) -> None:
    response = apigw.client.post("/v1/routes", json={"route": route, "function": "echo"})
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "ROUTE_RESERVED"


def test_reserved_paths_never_reach_a_catch_all(apigw: Server) -> None:
    _route(apigw, "ANY /{proxy+}", "echo")
    try:
        assert _get_event(apigw, "/anything/else")["routeKey"] == "ANY /{proxy+}"
        for path in ("/v1/functoins", "/v2/nope", "/2015-03-31/x", "/V1/keys", "/metrics/x"):
            response = apigw.client.get(path)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["error"]["code"] == "NOT_FOUND"
        # A coldbrew endpoint with a method it does not serve is not a route's either.
        put = apigw.client.put("/v1/functions", content=b"{}")
        assert put.status_code in (404, 405) and "error" in put.json()
    finally:
        rows = apigw.client.get("/v1/routes").json()["routes"]
        catch_all = next(r for r in rows if r["route"] == "ANY /{proxy+}")
        assert apigw.client.delete(f"/v1/routes/{catch_all['id']}").status_code == 200
