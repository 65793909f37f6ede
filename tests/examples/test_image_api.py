"""Example 4, the image classification API, end to end: "10,000 requests a day, p95 < 500 ms,
a model of ~100 MB, under $50 a month".

The bundle is trained from a copy of examples/image_api (no model in it, as in a fresh clone),
deployed with the CLI to a real server, loaded by 8 concurrent HTTP clients (httpx, one
keep-alive connection each) sending held-out digits as 256x256 RGB PNG uploads, and the month
is priced by ``coldbrew cost estimate image-api --per-day 10000`` from the meter's own figures.
The figures are printed (pytest -s) and go into docs/examples/image-api.md.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner, Result

from coldbrew.cli.main import app
from support import Server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "image_api"
REQUESTS = 240
P95_BUDGET_MS = 500.0


def _import(path: Path, name: str) -> ModuleType:
    sys.path.insert(0, str(path.parent))  # client.py imports train.py from its folder
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clone") / "image_api"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("model.npz", "__pycache__"))
    # As the docs say: train first (a subprocess, so BLAS threads never live in pytest).
    t0 = time.monotonic()
    subprocess.run([sys.executable, str(folder / "train.py")], check=True, timeout=300)
    print(f"\ntrained in {time.monotonic() - t0:.1f} s")
    model = folder / "model.npz"
    assert 95e6 < model.stat().st_size < 110e6  # "a model of ~100 MB"
    return folder


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, bundle: Path) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("image-home"))
    server.start()
    try:
        t0 = time.monotonic()
        result = _cli(["deploy", str(bundle), "--name", "image-api", "--url", server.url])
        assert result.exit_code == 0, result.output
        print(f"deployed in {time.monotonic() - t0:.1f} s")
        yield server
    finally:
        server.stop()


def _cli(args: list[str]) -> Result:
    return CliRunner(env={"COLUMNS": "80", "COLDBREW_URL": None}).invoke(app, args)


def test_p95_under_concurrency_8_and_the_monthly_cost(bundle: Path, deployed: Server) -> None:
    client = _import(bundle / "client.py", "image_api_client_under_test")
    figures = client.run(deployed.url, REQUESTS, concurrency=8)
    print(f"\nimage-api under concurrency 8: {json.dumps(figures)}")
    assert figures["requests"] == REQUESTS and figures["errors"] == 0
    assert figures["accuracy"] >= 0.95
    assert figures["p95_ms"] < P95_BUDGET_MS, figures

    estimate = ["cost", "estimate", "image-api", "--per-day", "10000", "--budget", "50"]
    result = _cli([*estimate, "--url", deployed.url, "--json"])
    assert result.exit_code == 0, result.output
    month = json.loads(result.output)
    print(f"cost estimate: {json.dumps(month)}")
    assert month["measured"]["invocations"] >= REQUESTS
    assert month["memory_mb"] == 512
    assert month["within_budget"] is True
    assert month["lambda"]["monthly_usd"] < 50
    text = _cli([*estimate, "--url", deployed.url])
    print(text.output)
    assert "budget $50/month: within" in text.output
    assert max(len(line) for line in text.output.splitlines()) <= 80


def test_bad_uploads_are_400(deployed: Server) -> None:
    not_image = base64.b64encode(b"hello").decode()
    for event in ({}, {"image": "!!"}, {"image": not_image}):
        response = deployed.invoke("image-api", event)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
