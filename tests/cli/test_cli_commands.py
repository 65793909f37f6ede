"""Every client command against a real ``coldbrew serve``: parsing, output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import pytest
from cli_support import ServeProcess
from click.testing import Result
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from coldbrew.cli.main import app
from support import free_port

HANDLER = """
def handler(event, context):
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    return {"echo": event, "request_id": context.aws_request_id}
"""


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = load_iris(return_X_y=True)
    path = tmp_path_factory.mktemp("models") / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    return path


@pytest.fixture(scope="module")
def echo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bundles") / "echo"
    (folder / "__pycache__").mkdir(parents=True)
    (folder / "__pycache__" / "junk.pyc").write_bytes(b"not python")
    (folder / "handler.py").write_text(HANDLER)
    (folder / "coldbrew.toml").write_text('handler = "handler:handler"\n')
    return folder


def run(runner: CliRunner, url: str, *args: str, input: str | None = None) -> Result:
    """Run a command against ``url`` (CliRunner keeps stdout and stderr apart)."""
    return runner.invoke(app, [*args, "--url", url], input=input)


def test_deploy_model_file_then_unchanged(
    runner: CliRunner, serve: ServeProcess, iris_model: Path
) -> None:
    first = run(runner, serve.url, "deploy", str(iris_model))
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("deployed iris version 1 (sha256 ")
    again = run(runner, serve.url, "deploy", str(iris_model), "--name", "iris")
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("unchanged: iris version 1")


def test_deploy_folder_and_invoke(
    runner: CliRunner, serve: ServeProcess, echo_bundle: Path
) -> None:
    deployed = run(runner, serve.url, "deploy", str(echo_bundle), "-n", "echo", "-d", "echoes")
    assert deployed.exit_code == 0, deployed.output
    assert "deployed echo version 1" in deployed.stdout

    result = run(runner, serve.url, "invoke", "echo", "--data", '{"a": [1, 2]}', "-v")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["echo"] == {"a": [1, 2]}
    assert "status 200" in result.stderr
    assert "version 1" in result.stderr
    assert "cold start" in result.stderr


def test_invoke_from_file_stdin_and_qualifier(
    runner: CliRunner, serve: ServeProcess, iris_model: Path, tmp_path: Path
) -> None:
    run(runner, serve.url, "deploy", str(iris_model))
    event = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    (tmp_path / "event.json").write_text(json.dumps(event))
    from_file = run(runner, serve.url, "invoke", "iris:1", "--file", str(tmp_path / "event.json"))
    assert from_file.exit_code == 0, from_file.output
    assert json.loads(from_file.stdout)["predictions"] == [0]
    from_stdin = run(
        runner, serve.url, "invoke", "iris:latest", "--data", "-", input=json.dumps(event)
    )
    assert from_stdin.exit_code == 0, from_stdin.output
    assert json.loads(from_stdin.stdout) == json.loads(from_file.stdout)


def test_invoke_errors(runner: CliRunner, serve: ServeProcess, echo_bundle: Path) -> None:
    run(runner, serve.url, "deploy", str(echo_bundle), "-n", "echo")
    missing = run(runner, serve.url, "invoke", "nope", "--data", "{}")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error NOT_FOUND: ")
    assert missing.stdout == ""

    raised = run(runner, serve.url, "invoke", "echo", "--data", '{"fail": true}')
    assert raised.exit_code == 1
    assert "error FUNCTION_ERROR" in raised.stderr
    assert "asked to fail" in raised.stderr

    bad_json = run(runner, serve.url, "invoke", "echo", "--data", "{oops")
    assert bad_json.exit_code == 2
    assert "not valid JSON" in bad_json.output


def test_ls_info_versions(
    runner: CliRunner, serve: ServeProcess, iris_model: Path, echo_bundle: Path
) -> None:
    run(runner, serve.url, "deploy", str(iris_model))
    run(runner, serve.url, "deploy", str(echo_bundle), "-n", "echo")
    run(runner, serve.url, "invoke", "iris", "--data", '{"instances": [[5.1, 3.5, 1.4, 0.2]]}')

    listed = run(runner, serve.url, "ls")
    assert listed.exit_code == 0, listed.output
    assert "NAME" in listed.stdout and "iris" in listed.stdout and "echo" in listed.stdout
    assert "latest→1" in listed.stdout
    as_json = json.loads(run(runner, serve.url, "ls", "--json").stdout)
    assert {"iris", "echo"} <= {f["name"] for f in as_json}

    info = run(runner, serve.url, "info", "iris")
    assert info.exit_code == 0, info.output
    assert "iris.joblib" in info.stdout  # the model file stands for the built-in handler
    assert "ready" in info.stdout or "busy" in info.stdout  # the instance the invoke started
    info_json = json.loads(run(runner, serve.url, "info", "iris", "--json").stdout)
    assert info_json["versions"][0]["number"] == 1

    versions = run(runner, serve.url, "versions", "echo")
    assert versions.exit_code == 0 and "handler:handler" in versions.stdout
    assert json.loads(run(runner, serve.url, "versions", "echo", "--json").stdout)[0]["number"] == 1

    unknown = run(runner, serve.url, "info", "ghost")
    assert unknown.exit_code == 1 and unknown.stderr.startswith("error NOT_FOUND")


def test_aliases_and_rm(runner: CliRunner, serve: ServeProcess, echo_bundle: Path) -> None:
    run(runner, serve.url, "deploy", str(echo_bundle), "-n", "aliased")
    assert run(runner, serve.url, "alias", "set", "aliased", "prod", "1").exit_code == 0
    table = run(runner, serve.url, "alias", "ls", "aliased")
    assert "prod" in table.stdout and "latest" in table.stdout
    via_alias = run(runner, serve.url, "invoke", "aliased:prod", "--data", '{"x": 1}')
    assert via_alias.exit_code == 0, via_alias.output
    bad = run(runner, serve.url, "alias", "set", "aliased", "prod", "9")
    assert bad.exit_code == 1 and bad.stderr.startswith("error NOT_FOUND")
    assert run(runner, serve.url, "alias", "rm", "aliased", "prod").exit_code == 0

    refused = run(runner, serve.url, "rm", "aliased", input="n\n")
    assert refused.exit_code == 1  # aborted at the prompt
    assert run(runner, serve.url, "rm", "aliased", "--yes").stdout == "deleted aliased\n"
    gone = run(runner, serve.url, "invoke", "aliased", "--data", "{}")
    assert gone.exit_code == 1 and "NOT_FOUND" in gone.stderr


def test_unreachable_server(runner: CliRunner) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["ls"], ["info", "x"], ["invoke", "x", "--data", "{}"]):
        result = run(runner, url, *args)
        assert result.exit_code == 2
        assert result.stderr == (
            f"cannot reach the coldbrew server at {url}: is it running? (coldbrew serve)\n"
        )


def test_serve_on_taken_port(runner: CliRunner, serve: ServeProcess, tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--port", str(serve.port), "--home", str(tmp_path)])
    assert result.exit_code == 1
    assert f"port {serve.port} on 127.0.0.1 is already in use" in result.stderr
