"""Crash loops back off (issue 12, item 6): a version whose handler raises at import is not
re-forked for every caller, and its callers learn why at once (502 INIT_ERROR, Lambda's
Runtime.ImportModuleError on the Invoke API), never a 429 after the whole queue wait.

The broken handler imports fine in the deploy's trial load (AWS_LAMBDA_FUNCTION_VERSION is
"trial" there) and raises in every real instance, as code that reaches a model store or a
database only in production would."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from coldbrew.cli.main import app as cli
from support import Server, write_bundle

GOOD = """
def handler(event, context):
    return {"ok": True, "version": context.function_version}
"""
BROKEN = """
import os

VERSION = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
print(f"IMPORT version={VERSION}", flush=True)
if VERSION != "trial":
    raise RuntimeError("model store unreachable")

def handler(event, context):
    return {"ok": True}
"""
CONFIG = 'handler = "handler:handler"\nmax_instances = 2\nqueue_timeout_s = 10\n'
CALLERS = 20


@pytest.fixture(scope="module")
def crashy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("crashloop"))
    server.start()
    base = tmp_path_factory.mktemp("bundles")
    try:
        good = server.deploy_folder("crashy", write_bundle(base / "good", GOOD, CONFIG))
        assert good.status_code == 201, good.text
        assert server.invoke("crashy", {}).status_code == 200
        broken = server.deploy_folder("crashy", write_bundle(base / "broken", BROKEN, CONFIG))
        assert broken.status_code == 201, broken.text  # the trial load passed
        yield server
    finally:
        server.stop()


def _starts(server: Server) -> int:
    """Real (non-trial) imports of the broken version: one per instance start attempt."""
    log = server.home / "logs" / "functions" / "crashy.log"
    return log.read_text(errors="replace").count("IMPORT version=2")


def _breaker(server: Server) -> dict[str, object]:
    pools = server.client.get("/v1/functions/crashy").json()["pools"]
    return next(p["breaker"] for p in pools if p["version"] == 2)


def _breaker_state(server: Server) -> str:
    """The state, where a version with no pool counts as closed: a restarted pool holds no
    instances and a fresh breaker, so the reaper may forget it at once, and the next call
    builds a new pool whose breaker starts closed."""
    pools = server.client.get("/v1/functions/crashy").json()["pools"]
    return next((str(p["breaker"]["state"]) for p in pools if p["version"] == 2), "closed")


def test_concurrent_callers_get_init_error_at_once(crashy: Server) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(CALLERS) as pool, httpx.Client(base_url=crashy.url) as client:
        responses = list(
            pool.map(
                lambda _: client.post("/v1/functions/crashy/invoke", json={}, timeout=30),
                range(CALLERS),
            )
        )
    elapsed = time.monotonic() - started
    codes = [r.json()["error"]["code"] for r in responses]
    assert codes == ["INIT_ERROR"] * CALLERS, codes  # never THROTTLED
    assert all(r.status_code == 502 for r in responses)
    assert elapsed < 5, elapsed  # queue_timeout_s is 10: nobody waited for it
    error = responses[0].json()["error"]
    assert error["errorType"] == "RuntimeError"
    assert error["errorMessage"] == "model store unreachable"
    assert "Traceback" not in responses[0].text and "File " not in responses[0].text
    assert int(responses[0].headers["retry-after"]) >= 1
    # Bounded: the breaker opened after 3 failures (max_instances=2 may add one in flight).
    assert _starts(crashy) <= 4, _starts(crashy)
    assert _breaker(crashy)["state"] == "open"


def test_while_open_no_instance_is_forked(crashy: Server) -> None:
    before = _starts(crashy)
    for _ in range(10):
        response = crashy.invoke("crashy", {})
        assert response.json()["error"]["code"] == "INIT_ERROR"
    assert _starts(crashy) <= before + 1  # at most the one half-open trial
    shown = CliRunner().invoke(cli, ["info", "crashy", "--url", crashy.url])
    assert shown.exit_code == 0 and "instances fail to start" in shown.output, shown.output


def test_one_trial_after_the_backoff(crashy: Server) -> None:
    # Open long enough to be sure the backoff (1 s, then 2 s, ...) has passed for a trial.
    retry = float(str(_breaker(crashy)["retry_after_s"]))
    time.sleep(retry + 0.2)
    before = _starts(crashy)
    assert crashy.invoke("crashy", {}).json()["error"]["code"] == "INIT_ERROR"
    assert _starts(crashy) == before + 1
    breaker = _breaker(crashy)
    assert breaker["state"] == "open" and int(str(breaker["trips"])) >= 2


def test_lambda_invoke_reports_an_import_module_error(crashy: Server) -> None:
    response = crashy.client.post("/2015-03-31/functions/crashy/invocations", content=b"{}")
    assert response.status_code == 200, response.text
    assert response.headers["x-amz-function-error"] == "Unhandled"
    body = response.json()
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"] == (
        "Unable to import module 'handler': RuntimeError: model store unreachable"
    )
    assert body["stackTrace"] == []


def test_a_restart_is_not_blocked_by_the_breaker(crashy: Server) -> None:
    assert _breaker(crashy)["state"] == "open"
    restarted = crashy.client.post("/v1/functions/crashy/restart")
    assert restarted.status_code == 200, restarted.text
    assert _breaker_state(crashy) == "closed"
    before = _starts(crashy)
    assert crashy.invoke("crashy", {}).json()["error"]["code"] == "INIT_ERROR"
    assert _starts(crashy) == before + 1  # a start was tried at once, not refused


def test_a_fixed_deploy_is_not_blocked_by_the_old_breaker(crashy: Server, tmp_path: Path) -> None:
    code = GOOD + "# the fix\n"  # new content: a new version (the same would reuse version 1)
    fixed = crashy.deploy_folder("crashy", write_bundle(tmp_path / "fixed", code, CONFIG))
    assert fixed.status_code == 201, fixed.text
    response = crashy.invoke("crashy", {})
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "version": "3"}
    assert crashy.invoke("crashy:2", {}).json()["error"]["code"] == "INIT_ERROR"
