"""The Lambda Invoke API, driven by the real boto3 ``lambda`` client against a real server."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from support import Server, write_bundle

HANDLER = """
import json, time

def handler(event, context):
    if isinstance(event, dict):
        if event.get("fail"):
            raise ValueError("boom: " + event["fail"])
        if event.get("sleep"):
            time.sleep(event["sleep"])
        if event.get("touch"):
            with open(event["touch"], "w") as f:
                f.write(context.aws_request_id)
    print("hello from the handler")
    cc = context.client_context
    return {
        "event": event,
        "tag": TAG,
        "version": context.function_version,
        "arn": context.invoked_function_arn,
        "custom": cc.custom if cc else None,
        "app_title": cc.client.app_title if cc and cc.client else None,
    }
"""
CONFIG = "handler = 'handler:handler'\nmax_instances = 1\nmax_queue = 0\ntimeout_s = 1\n"


def _deploy(server: Server, folder: Path, name: str, tag: str) -> int:
    write_bundle(folder, HANDLER + f"\nTAG = {tag!r}\n", CONFIG)
    response = server.deploy_folder(name, folder)
    assert response.status_code in (200, 201), response.text
    return int(response.json()["version"])


@pytest.fixture(scope="module")
def lam(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("bundles")
    assert _deploy(server, base / "v1", "echo", "one") == 1
    assert _deploy(server, base / "v2", "echo", "two") == 2
    assert server.client.put("/v1/functions/echo/aliases/prod", json={"version": 1}).is_success
    client = boto3.client(
        "lambda",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="y",
        # No client-side retries: a 429 must reach the test as it was sent.
        config=Config(retries={"total_max_attempts": 1}, read_timeout=30),
    )
    yield client
    client.close()


def _payload(response: dict[str, Any]) -> Any:
    return json.loads(response["Payload"].read())


def test_sync_invoke(lam: Any) -> None:
    response = lam.invoke(FunctionName="echo", Payload=json.dumps({"x": 1}))
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "2"
    body = _payload(response)
    assert body["event"] == {"x": 1} and body["tag"] == "two"
    assert response["ResponseMetadata"]["RequestId"]


@pytest.mark.parametrize(
    ("function_name", "qualifier", "version"),
    [
        ("echo:prod", None, "1"),
        ("echo", "prod", "1"),
        ("echo:1", None, "1"),
        ("echo", "2", "2"),
        ("echo", "$LATEST", "2"),
        ("arn:aws:lambda:us-east-1:000000000000:function:echo", None, "2"),
        ("arn:aws:lambda:us-east-1:000000000000:function:echo:prod", None, "1"),
        ("000000000000:function:echo:1", None, "1"),
        ("000000000000:function:echo", "prod", "1"),
    ],
)
def test_qualifiers_and_arns(
    lam: Any, function_name: str, qualifier: str | None, version: str
) -> None:
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    response = lam.invoke(FunctionName=function_name, Payload=b"{}", **kwargs)
    assert response["ExecutedVersion"] == version
    assert _payload(response)["tag"] == ("one" if version == "1" else "two")


def test_tail_logs(lam: Any) -> None:
    response = lam.invoke(FunctionName="echo", Payload=b"{}", LogType="Tail")
    log = base64.b64decode(response["LogResult"]).decode()
    assert "hello from the handler" in log
    assert "REPORT RequestId" in log
    assert len(base64.b64decode(response["LogResult"])) <= 4096


def test_client_context(lam: Any) -> None:
    context = {"custom": {"tenant": "acme"}, "client": {"app_title": "shop"}}
    encoded = base64.b64encode(json.dumps(context).encode()).decode()
    body = _payload(lam.invoke(FunctionName="echo", Payload=b"{}", ClientContext=encoded))
    assert body["custom"] == {"tenant": "acme"} and body["app_title"] == "shop"


def test_unhandled_error(lam: Any) -> None:
    response = lam.invoke(FunctionName="echo", Payload=json.dumps({"fail": "bad input"}))
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    body = _payload(response)
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "boom: bad input"
    assert body["requestId"] == response["ResponseMetadata"]["RequestId"]
    assert isinstance(body["stackTrace"], list) and body["stackTrace"]


def test_timeout_is_a_function_error(lam: Any) -> None:
    response = lam.invoke(FunctionName="echo", Payload=json.dumps({"sleep": 3}))
    assert response["FunctionError"] == "Unhandled"
    assert _payload(response)["errorType"] == "Sandbox.Timedout"


def _error(call: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response


def test_service_errors(lam: Any) -> None:
    missing = _error(lambda: lam.invoke(FunctionName="nope", Payload=b"{}"))
    assert missing["Error"]["Code"] == "ResourceNotFoundException"
    assert missing["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert missing["Error"]["Message"]

    bad = _error(lambda: lam.invoke(FunctionName="echo", Payload=b"{not json"))
    assert bad["Error"]["Code"] == "InvalidRequestContentException"
    assert bad["ResponseMetadata"]["HTTPStatusCode"] == 400

    bad_context = _error(lambda: lam.invoke(FunctionName="echo", ClientContext="!!!"))
    assert bad_context["Error"]["Code"] == "InvalidRequestContentException"

    mismatch = _error(lambda: lam.invoke(FunctionName="echo:1", Qualifier="2", Payload=b"{}"))
    assert mismatch["Error"]["Code"] == "InvalidParameterValueException"

    big = b'"' + b"x" * (6 * 1024 * 1024) + b'"'
    large = _error(lambda: lam.invoke(FunctionName="echo", Payload=big))
    assert large["Error"]["Code"] == "RequestEntityTooLargeException"
    assert large["ResponseMetadata"]["HTTPStatusCode"] == 413

    big_event = b'"' + b"x" * (256 * 1024) + b'"'
    large_event = _error(
        lambda: lam.invoke(FunctionName="echo", InvocationType="Event", Payload=big_event)
    )
    assert large_event["Error"]["Code"] == "RequestEntityTooLargeException"


def test_throttled(lam: Any) -> None:
    # max_instances = 1 and max_queue = 0: a second invocation while one runs is refused.
    slow = threading.Thread(
        target=lam.invoke, kwargs={"FunctionName": "echo:1", "Payload": b'{"sleep": 0.8}'}
    )
    slow.start()
    try:
        time.sleep(0.3)
        throttled = _error(lambda: lam.invoke(FunctionName="echo:1", Payload=b"{}"))
    finally:
        slow.join(10)
    assert throttled["Error"]["Code"] == "TooManyRequestsException"
    assert throttled["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert throttled["ResponseMetadata"]["HTTPHeaders"]["retry-after"]
    assert throttled["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"


def test_event_invocation_runs(lam: Any, server: Server) -> None:
    # Observed through the async events API, not a file the handler writes: the handler runs
    # as its function's own uid with a private TMPDIR (docs/SECURITY.md "Isolation").
    response = lam.invoke(
        FunctionName="echo", InvocationType="Event", Payload=json.dumps({"x": "event"})
    )
    assert response["StatusCode"] == 202
    request_id = response["ResponseMetadata"]["RequestId"]
    deadline = time.monotonic() + 15
    while True:
        found = server.client.get(f"/v1/functions/echo/events/{request_id}")
        assert found.status_code == 200, found.text
        event = found.json()
        if event["state"] != "queued" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert event["state"] == "succeeded", event
    assert event["attempts"] == 1 and event["failures"] == 0
    assert event["executed_version"] == 2 and event["last_error"] is None


def test_dry_run(lam: Any) -> None:
    assert lam.invoke(FunctionName="echo", InvocationType="DryRun")["StatusCode"] == 204
    missing = _error(lambda: lam.invoke(FunctionName="nope", InvocationType="DryRun"))
    assert missing["Error"]["Code"] == "ResourceNotFoundException"


def test_get_and_list_functions(lam: Any) -> None:
    config = lam.get_function(FunctionName="echo")["Configuration"]
    assert config["FunctionName"] == "echo"
    assert config["FunctionArn"] == "arn:aws:lambda:us-east-1:000000000000:function:echo"
    assert config["Version"] == "2"
    assert config["MemorySize"] == 512 and config["Timeout"] == 1
    assert config["Handler"] == "handler:handler" and config["Runtime"] == "python3.11"
    assert len(base64.b64decode(config["CodeSha256"])) == 32
    assert config["LastModified"]
    assert (
        lam.get_function(FunctionName="echo", Qualifier="prod")["Configuration"]["Version"] == "1"
    )
    missing = _error(lambda: lam.get_function(FunctionName="nope"))
    assert missing["Error"]["Code"] == "ResourceNotFoundException"
    names = [f["FunctionName"] for f in lam.list_functions()["Functions"]]
    assert "echo" in names
    pages = lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 1})
    assert "echo" in [f["FunctionName"] for page in pages for f in page["Functions"]]
