"""Invoking functions over HTTP: the Lambda contract, errors, qualifiers and payload checks."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from support import Server, write_bundle

LAMBDA_HANDLER = """
import json, os

def handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    if event.get("bad_request"):
        return {"statusCode": 400, "headers": {"X-Why": "bad"},
                "body": json.dumps({"error": {"code": "VALIDATION_ERROR", "message": "nope"}})}
    return {
        "event": event,
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "identity": context.identity,
        "client_context": context.client_context,
        "remaining": context.get_remaining_time_in_millis(),
        "env_greeting": os.environ.get("GREETING"),
        "env_fn": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
    }
"""

CONFIG = """
handler = "handler:handler"
memory_mb = 256
timeout_s = 7

[environment]
GREETING = "hello"

[schema]
type = "object"
properties = { n = { type = "integer", minimum = 0 } }
"""


@pytest.fixture(scope="module")
def lambda_fn(server: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    bundle = write_bundle(tmp_path_factory.mktemp("lambda") / "b", LAMBDA_HANDLER, CONFIG)
    response = server.deploy_folder("contract", bundle)
    assert response.status_code == 201, response.text
    return "contract"


def test_context_matches_lambda(server: Server, lambda_fn: str) -> None:
    response = server.invoke(lambda_fn, {"n": 1}, headers={"x-request-id": "req-123"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["event"] == {"n": 1}
    assert body["aws_request_id"] == "req-123"
    assert body["function_name"] == "contract"
    assert body["function_version"] == "1"
    assert body["invoked_function_arn"].endswith(":function:contract")
    assert body["memory_limit_in_mb"] == "256"
    assert body["log_group_name"] == "/aws/lambda/contract"
    assert body["log_stream_name"]
    assert body["identity"] is None and body["client_context"] is None
    assert 0 < body["remaining"] <= 7000
    assert body["env_greeting"] == "hello"
    assert body["env_fn"] == "contract"
    assert response.headers["x-request-id"] == "req-123"
    assert response.headers["x-coldbrew-executed-version"] == "1"
    assert response.headers["x-coldbrew-cold-start"] in ("true", "false")
    assert int(response.headers["x-coldbrew-billed-duration-ms"]) >= 1


def test_proxy_response_shape_is_honoured(server: Server, lambda_fn: str) -> None:
    response = server.invoke(lambda_fn, {"bad_request": True})
    assert response.status_code == 400
    assert response.headers["x-why"] == "bad"
    assert response.json() == {"error": {"code": "VALIDATION_ERROR", "message": "nope"}}


def test_handler_exception_is_function_error(server: Server, lambda_fn: str) -> None:
    response = server.invoke(lambda_fn, {"fail": True})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "FUNCTION_ERROR"
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "asked to fail"
    assert any("handler.py" in line for line in error["stackTrace"])
    assert "Traceback" not in response.text


def test_schema_and_json_validation(server: Server, lambda_fn: str) -> None:
    response = server.invoke(lambda_fn, {"n": -1})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert "n" in response.json()["error"]["message"]
    response = server.client.post(f"/v1/functions/{lambda_fn}/invoke", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


def test_payload_too_large(server: Server, lambda_fn: str) -> None:
    response = server.client.post(
        f"/v1/functions/{lambda_fn}/invoke",
        content=b'{"x": "' + b"a" * (6 * 1024 * 1024 + 10) + b'"}',
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_unknown_function_and_qualifier(server: Server, lambda_fn: str) -> None:
    response = server.invoke("nobody-here", {})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"
    assert server.invoke(f"{lambda_fn}:99", {}).status_code == 404
    assert server.invoke(f"{lambda_fn}:prod", {}).status_code == 404
    assert server.client.get("/no/such/route").json()["error"]["code"] == "NOT_FOUND"


def test_qualifiers_pick_versions(server: Server, tmp_path: Path) -> None:
    code = (
        'def handler(event, context):\n    return {"v": %d, "version": context.function_version}\n'
    )
    for n in (1, 2):
        bundle = write_bundle(tmp_path / f"v{n}", code % n, 'handler = "handler:handler"\n')
        assert server.deploy_folder("versioned", bundle).json()["version"] == n
    assert server.invoke("versioned", {}).json() == {"v": 2, "version": "2"}
    assert server.invoke("versioned:1", {}).json() == {"v": 1, "version": "1"}
    assert server.invoke("versioned:$LATEST", {}).json()["v"] == 2
    alias = server.client.put("/v1/functions/versioned/aliases/prod", json={"version": 1})
    assert alias.status_code == 200, alias.text
    assert server.invoke("versioned:prod", {}).json()["v"] == 1
    assert server.invoke("versioned:prod", {}).headers["x-coldbrew-executed-version"] == "1"


def test_handler_output_lands_in_the_function_log(server: Server, tmp_path: Path) -> None:
    code = 'def handler(event, context):\n    print("hello from", context.aws_request_id)\n'
    bundle = write_bundle(tmp_path / "p", code, 'handler = "handler:handler"\n')
    assert server.deploy_folder("printer", bundle).status_code == 201
    assert server.invoke("printer", {}, headers={"x-request-id": "log-me-1"}).status_code == 200
    log = (server.home / "logs" / "functions" / "printer.log").read_text()
    assert "START RequestId: log-me-1" in log
    assert "hello from log-me-1" in log
    assert "REPORT RequestId: log-me-1\tDuration:" in log


LAMBDA_STYLE = """
import logging
import os

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def lambda_handler(event, context):
    logger.info("processing %s", event.get("id"))
    context.log("context.log line\\n")
    return {
        "execution_env": os.environ.get("AWS_EXECUTION_ENV"),
        "task_root": os.environ.get("LAMBDA_TASK_ROOT") == os.getcwd(),
        "remaining_ok": context.get_remaining_time_in_millis() > 0,
    }
"""


def test_lambda_handler_syntax_and_logging(server: Server, tmp_path: Path) -> None:
    """A handler written for Lambda: 'file.function' handler string, root logger, context.log."""
    bundle = tmp_path / "lambda-style"
    bundle.mkdir()
    (bundle / "lambda_function.py").write_text(LAMBDA_STYLE)
    (bundle / "coldbrew.toml").write_text('handler = "lambda_function.lambda_handler"\n')
    response = server.deploy_folder("lambda-style", bundle)
    assert response.status_code == 201, response.text
    result = server.invoke("lambda-style", {"id": "abc"}, headers={"x-request-id": "req-log-1"})
    assert result.json() == {
        "execution_env": "AWS_Lambda_python3.11",
        "task_root": True,
        "remaining_ok": True,
    }
    log = (server.home / "logs" / "functions" / "lambda-style.log").read_text()
    assert "[INFO]" in log and "\treq-log-1\tprocessing abc" in log
    assert "context.log line" in log
    # Instances forked from the version template keep the level the module set at import.
    deadline = time.monotonic() + 10
    while not any(p["version_template"] for p in pools(server, "lambda-style")):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for instance in server.instances("lambda-style"):
        os.kill(instance["pid"], signal.SIGKILL)
    time.sleep(0.3)
    server.invoke("lambda-style", {"id": "forked"}, headers={"x-request-id": "req-log-2"})
    log = (server.home / "logs" / "functions" / "lambda-style.log").read_text()
    assert "\treq-log-2\tprocessing forked" in log


def pools(server: Server, name: str) -> list[dict]:
    return server.client.get(f"/v1/functions/{name}").json()["pools"]
