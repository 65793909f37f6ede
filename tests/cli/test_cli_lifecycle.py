"""``coldbrew deploy NAME --model``, ``--replace-handler``, ``coldbrew restart`` and the template
line of ``coldbrew info``, against a real ``coldbrew serve``."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import pytest
from cli_support import ServeProcess
from click.testing import Result
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from typer.testing import CliRunner

from coldbrew.cli.main import app

HANDLER = """
import numpy as np

def handler(event, context):
    return {"kind": "custom", "pred": context.model.predict(np.asarray(event["x"]))["predictions"]}
"""


def run(runner: CliRunner, url: str, *args: str) -> Result:
    return runner.invoke(app, [*args, "--url", url])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lifecycle-models")
    x, y = load_iris(return_X_y=True)
    paths = {}
    for label in (0, 2):
        paths[f"c{label}"] = folder / f"c{label}.joblib"
        model = DummyClassifier(strategy="constant", constant=label).fit(x, y)
        joblib.dump(model, paths[f"c{label}"])
    return paths


def test_model_update_refusal_and_restart(
    runner: CliRunner, serve: ServeProcess, models: dict[str, Path], tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "handler.py").write_text(HANDLER)
    (bundle / "model.joblib").write_bytes(models["c0"].read_bytes())
    (bundle / "coldbrew.toml").write_text(
        'handler = "handler:handler"\nmodel = "model.joblib"\nbatching.mode = "off"\n'
    )
    assert run(runner, serve.url, "deploy", str(bundle), "-n", "life").exit_code == 0
    event = json.dumps({"x": [[1, 2, 3, 4]]})

    updated = run(runner, serve.url, "deploy", "life", "--model", str(models["c2"]))
    assert updated.exit_code == 0, updated.output
    assert updated.stdout.startswith("deployed life version 2")
    answer = run(runner, serve.url, "invoke", "life", "--data", event)
    assert json.loads(answer.stdout) == {"kind": "custom", "pred": [2]}

    refused = run(runner, serve.url, "deploy", str(models["c0"]), "-n", "life")
    assert refused.exit_code == 1
    assert "HANDLER_WOULD_BE_REPLACED" in refused.stderr and "--replace-handler" in refused.stderr

    info = run(runner, serve.url, "info", "life")
    assert info.exit_code == 0 and "version 2:" in info.stdout and "template" in info.stdout

    restarted = run(runner, serve.url, "restart", "life")
    assert restarted.exit_code == 0, restarted.output
    assert restarted.stdout.startswith("restarted life version 2: 1 instance(s) replaced")
    assert run(runner, serve.url, "restart", "life:9").exit_code == 1

    replaced = run(
        runner, serve.url, "deploy", str(models["c0"]), "-n", "life", "--replace-handler"
    )
    assert replaced.exit_code == 0, replaced.output
    builtin = run(runner, serve.url, "invoke", "life", "--data", '{"instances": [[1, 2, 3, 4]]}')
    assert json.loads(builtin.stdout)["predictions"] == [0]
