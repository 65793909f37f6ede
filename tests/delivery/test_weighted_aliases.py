"""Weighted aliases on a real server: the split holds on the native fast path and on Lambda's
Invoke, sticky keys never switch, and the alias/version API speaks boto3."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from coldbrew.cli.main import app
from support import Server, write_bundle

HANDLER = """
def handler(event, context):
    return {"version": int(context.function_version), "tag": TAG}
"""
CONFIG = "handler = 'handler:handler'\nmax_instances = 2\n"


def deploy(server: Server, folder: Path, tag: str) -> int:
    write_bundle(folder, HANDLER + f"\nTAG = {tag!r}\n", CONFIG)
    response = server.deploy_folder("split", folder)
    assert response.status_code in (200, 201), response.text
    return int(response.json()["version"])


@pytest.fixture(scope="module")
def split_server(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Server:
    base = tmp_path_factory.mktemp("bundles")
    assert [deploy(server, base / t, t) for t in ("one", "two", "three")] == [1, 2, 3]
    return server


def put_alias(server: Server, alias: str, body: dict[str, Any]) -> dict[str, Any]:
    response = server.client.put(f"/v1/functions/split/aliases/{alias}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def _invoke_many(
    url: str, target: str, n: int, headers: list[dict[str, str]] | None = None, body: Any = None
) -> list[int]:
    """``n`` invocations, 16 at a time; the executed version of each, from the header."""
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> int:
            async with gate:
                extra = headers[i] if headers else {}
                event = body[i] if isinstance(body, list) else (body or {})
                response = await client.post(
                    f"/v1/functions/{target}/invoke", json=event, headers=extra
                )
                assert response.status_code == 200, response.text
                executed = int(response.headers["x-coldbrew-executed-version"])
                assert response.json()["version"] == executed  # it ran there, too
                return executed

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def invoke_many(server: Server, target: str, n: int, **kwargs: Any) -> list[int]:
    return asyncio.run(_invoke_many(server.url, target, n, **kwargs))


def test_put_alias_answers_with_its_weights(split_server: Server) -> None:
    answer = put_alias(split_server, "canary", {"version": 1, "weights": {"2": 0.25}})
    assert answer["version"] == 1 and answer["weights"] == {"2": 0.25}
    listed = split_server.client.get("/v1/functions/split/aliases").json()["aliases"]
    assert {"name": "canary", "weights": {"2": 0.25}}.items() <= next(
        a for a in listed if a["name"] == "canary"
    ).items()


@pytest.mark.parametrize(
    "body",
    [
        {"version": 1, "weights": {"2": 1.5}},
        {"version": 1, "weights": {"2": 0.6, "3": 0.6}},
        {"version": 1, "weights": {"1": 0.2}},
        {"version": 1, "weights": {"x": 0.2}},
        {"version": 1, "weights": [0.2]},
        {"version": 1, "weights": {"2": 0.2}, "sticky": "user.id"},
        {"version": 1, "weights": {"9": 0.2}},
    ],
)
def test_bad_splits_are_refused(split_server: Server, body: dict[str, Any]) -> None:
    response = split_server.client.put("/v1/functions/split/aliases/bad", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"] in ("VALIDATION_ERROR", "NOT_FOUND")


def test_a_quarter_split_over_4000_invocations(split_server: Server) -> None:
    put_alias(split_server, "canary", {"version": 1, "weights": {"2": 0.25}})
    n, p = 4000, 0.25
    counts = Counter(invoke_many(split_server, "split:canary", n))
    assert set(counts) == {1, 2}
    bound = 4.5 * math.sqrt(n * p * (1 - p))  # ~1 in 150,000 to fail by chance
    assert abs(counts[2] - n * p) < bound, counts


def test_metrics_and_dashboard_per_version(split_server: Server) -> None:
    """After the split above: each version's counters, and the dashboard's split and
    side-by-side error rate and p95."""
    text = split_server.client.get("/metrics").text
    for version in ("1", "2"):
        assert (
            f'coldbrew_invocations_total{{function="split",status="OK",version="{version}"}}'
            in text
        )
    stats = split_server.client.get("/v1/stats?seconds=900").json()
    split = next(f for f in stats["functions"] if f["name"] == "split")
    assert split["splits"]["canary"] == {"1": 0.75, "2": 0.25}
    rows = {row["version"]: row for row in split["versions"]}
    assert {1, 2} <= set(rows)
    assert rows[2]["invocations"] > 500 and rows[2]["error_rate"] == 0
    assert rows[2]["p95_ms"] is not None


def test_sticky_header_never_switches(split_server: Server) -> None:
    put_alias(split_server, "sticky", {"version": 1, "weights": {"2": 0.5}})
    keys = [f"user-{i % 100}" for i in range(400)]
    got = invoke_many(
        split_server, "split:sticky", 400, headers=[{"X-Coldbrew-Sticky-Key": k} for k in keys]
    )
    by_key: dict[str, set[int]] = {}
    for key, version in zip(keys, got, strict=True):
        by_key.setdefault(key, set()).add(version)
    assert all(len(v) == 1 for v in by_key.values()), by_key
    assert {next(iter(v)) for v in by_key.values()} == {1, 2}  # and both versions get keys


def test_sticky_json_path_never_switches(split_server: Server) -> None:
    put_alias(split_server, "bypath", {"version": 1, "weights": {"3": 0.5}, "sticky": "$.user.id"})
    events = [{"user": {"id": i % 50}, "n": i} for i in range(300)]
    got = invoke_many(split_server, "split:bypath", 300, body=events)
    by_key: dict[int, set[int]] = {}
    for event, version in zip(events, got, strict=True):
        by_key.setdefault(event["user"]["id"], set()).add(version)
    assert all(len(v) == 1 for v in by_key.values()), by_key
    assert {next(iter(v)) for v in by_key.values()} == {1, 3}


def test_plain_alias_after_removing_weights(split_server: Server) -> None:
    put_alias(split_server, "canary", {"version": 1, "weights": {"2": 0.25}})
    put_alias(split_server, "canary", {"version": 2})
    assert set(invoke_many(split_server, "split:canary", 50)) == {2}


@pytest.fixture(scope="module")
def lam(split_server: Server) -> Iterator[Any]:
    client = boto3.client(
        "lambda",
        endpoint_url=split_server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="y",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=30),
    )
    yield client
    client.close()


def test_boto3_alias_api(lam: Any) -> None:
    created = lam.create_alias(
        FunctionName="split",
        Name="live",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}},
    )
    assert created["FunctionVersion"] == "1"
    assert created["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.3}
    assert created["AliasArn"].endswith(":function:split:live")
    with pytest.raises(ClientError) as again:
        lam.create_alias(FunctionName="split", Name="live", FunctionVersion="1")
    assert again.value.response["Error"]["Code"] == "ResourceConflictException"

    got = lam.get_alias(FunctionName="split", Name="live")
    assert got["RoutingConfig"]["AdditionalVersionWeights"] == {"2": 0.3}
    names = [a["Name"] for a in lam.list_aliases(FunctionName="split")["Aliases"]]
    assert "live" in names and "latest" in names

    executed = Counter(
        lam.invoke(FunctionName="split", Qualifier="live", Payload=b"{}")["ExecutedVersion"]
        for _ in range(200)
    )
    assert set(executed) == {"1", "2"}, executed

    moved = lam.update_alias(
        FunctionName="split", Name="live", RoutingConfig={"AdditionalVersionWeights": {}}
    )
    assert moved["FunctionVersion"] == "1" and "RoutingConfig" not in moved
    moved = lam.update_alias(FunctionName="split", Name="live", FunctionVersion="3")
    assert moved["FunctionVersion"] == "3"
    response = lam.invoke(FunctionName="split:live", Payload=b"{}")
    assert response["ExecutedVersion"] == "3"

    lam.delete_alias(FunctionName="split", Name="live")
    with pytest.raises(ClientError) as gone:
        lam.get_alias(FunctionName="split", Name="live")
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_boto3_versions(lam: Any) -> None:
    published = lam.publish_version(FunctionName="split")
    assert published["Version"] == "3"
    listed = lam.list_versions_by_function(FunctionName="split")["Versions"]
    assert [v["Version"] for v in listed] == ["$LATEST", "1", "2", "3"]
    page = lam.list_versions_by_function(FunctionName="split", MaxItems=2)
    assert len(page["Versions"]) == 2 and page["NextMarker"]
    with pytest.raises(ClientError) as missing:
        lam.list_versions_by_function(FunctionName="nope")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_cli_alias_set_with_weights(split_server: Server) -> None:
    runner = CliRunner()
    url = ["--url", split_server.url]
    result = runner.invoke(app, ["alias", "set", "split", "cli", "1", "--weight", "2=0.25", *url])
    assert result.exit_code == 0, result.output
    assert "v1: 75%, v2: 25%" in result.output
    listed = runner.invoke(app, ["alias", "ls", "split", *url])
    assert "v2: 25%" in listed.output
    shown = json.loads(runner.invoke(app, ["alias", "ls", "split", "--json", *url]).output)
    assert next(a for a in shown if a["name"] == "cli")["weights"] == {"2": 0.25}
    bad = runner.invoke(app, ["alias", "set", "split", "cli", "1", "--weight", "2:0.25", *url])
    assert bad.exit_code != 0
