"""Rollouts on a real server: a candidate failing 5 % of its invocations is rolled back inside
its first step (audit log and alert say why), one whose answers feedback says are wrong is
rolled back on accuracy, a healthy one reaches 100 %, and a rollout survives a gateway
restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from coldbrew.cli.main import app
from support import Server, write_bundle

HANDLER = """
CALLS = [0]

def handler(event, context):
    CALLS[0] += 1
    if FAIL_EVERY and CALLS[0] % FAIL_EVERY == 0:
        raise RuntimeError("every %dth call fails" % FAIL_EVERY)
    return {"version": int(context.function_version)}
"""
CONFIG = "handler = 'handler:handler'\nmax_instances = 1\n"
# A classifier of parity: version 1 is right, version 2 answers the other class every time.
PARITY = """
def handler(event, context):
    return {"predictions": [(event["x"] + OFFSET) % 2]}
"""
LOGGED = CONFIG + "log_predictions = 1.0\n"  # feedback is joined to the prediction log


@pytest.fixture(scope="module")
def roll(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("coldbrew-home")
    env = {"COLDBREW_ROLLOUT_INTERVAL_S": "0.25", "COLDBREW_PREDICTION_FLUSH_INTERVAL_S": "0.2"}
    server = Server(home, env)
    server.start()
    base = tmp_path_factory.mktemp("bundles")
    for n, fail_every in enumerate([0, 20, 0], start=1):  # v2 fails 1 call in 20 (5 %)
        code = HANDLER + f"\nFAIL_EVERY = {fail_every}  # v{n}\n"
        folder = write_bundle(base / f"v{n}", code, CONFIG)
        deployed = server.deploy_folder("roll", folder)
        assert deployed.status_code in (200, 201), deployed.text
        assert deployed.json()["version"] == n
    for n in (1, 2, 3):  # warm: cold starts are not what these tests judge
        server.invoke(f"roll:{n}", {})
    yield server
    server.stop()


class Traffic:
    """Invokes ``target`` back to back in a thread until stopped."""

    def __init__(self, url: str, target: str) -> None:
        self.url, self.target = url, target
        self.stopped = threading.Event()
        self.versions: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stopped.is_set():
                r = client.post(f"/v1/functions/{self.target}/invoke", json={})
                self.versions.append(int(r.headers.get("x-coldbrew-executed-version", 0)))

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        self.thread.join(30)


def put_alias(server: Server, alias: str, version: int) -> None:
    assert server.client.put(
        f"/v1/functions/roll/aliases/{alias}", json={"version": version}
    ).is_success


def status(server: Server, function: str = "roll") -> dict[str, Any]:
    response = server.client.get(f"/v1/functions/{function}/rollout")
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(server: Server, states: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = status(server)
        if current["state"] in states:
            return current
        time.sleep(0.2)
    raise AssertionError(f"rollout still {status(server)}")


def alias(server: Server, name: str) -> dict[str, Any]:
    aliases = server.client.get("/v1/functions/roll/aliases").json()["aliases"]
    return next(a for a in aliases if a["name"] == name)


def test_a_failing_candidate_is_rolled_back_within_one_step(roll: Server) -> None:
    put_alias(roll, "prod", 1)
    body = {
        "to": 2,
        "alias": "prod",
        "steps": [25, 100],
        "step_duration": "60s",
        "min_samples": 60,
    }
    started = roll.client.post("/v1/functions/roll/rollout", json=body)
    assert started.status_code == 201, started.text
    assert alias(roll, "prod")["weights"] == {"2": 0.25}
    began = time.monotonic()
    with Traffic(roll.url, "roll:prod") as traffic:
        done = wait_for(roll, {"rolled_back", "succeeded", "aborted"}, 40)
    assert done["state"] == "rolled_back", done
    assert time.monotonic() - began < 60  # inside the first step
    assert done["step"] == 0 and "error rate" in done["reason"]
    assert {2, 1} <= set(traffic.versions)
    back = alias(roll, "prod")
    assert back["version"] == 1 and not back["weights"]

    audit = roll.client.get("/v1/audit").json()["events"]
    rollback = next(e for e in audit if e["action"] == "rollout.rollback")
    assert rollback["target"] == "roll" and "error rate" in rollback["details"]["reason"]
    assert any(e["action"] == "rollout.start" for e in audit)  # the user's, by the middleware
    recent = roll.client.get("/v1/alerts").json()["recent"]
    assert any(e["rule"] == "rollout_rollback" and e["function"] == "roll" for e in recent)
    shown = roll.client.get("/v1/stats").json()["rollouts"]  # what the dashboard shows
    assert any(r["state"] == "rolled_back" and "error rate" in r["reason"] for r in shown)


def test_a_candidate_with_wrong_answers_is_rolled_back_on_accuracy(
    roll: Server, tmp_path: Path
) -> None:
    for n, offset in ((1, 0), (2, 1)):
        code = PARITY + f"\nOFFSET = {offset}\n"
        deployed = roll.deploy_folder("parity", write_bundle(tmp_path / f"p{n}", code, LOGGED))
        assert deployed.status_code in (200, 201), deployed.text
    assert roll.client.put("/v1/functions/parity/aliases/prod", json={"version": 1}).is_success
    args = [
        "rollout",
        "start",
        "parity",
        "--to",
        "2",
        "--alias",
        "prod",
        "--steps",
        "50,100",
        "--step-duration",
        "60s",
        "--min-samples",
        "100000",
        "--min-accuracy",
        "0.9",
        "--min-feedback",
        "10",
        "--url",
        roll.url,
    ]  # fmt: skip  (min-samples: errors and latency never decide here, accuracy alone does)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "accuracy >= 90.0%" in result.output
    pending: dict[str, int] = {}  # request id -> x, until the prediction log has it
    versions: dict[str, int] = {}
    deadline = time.monotonic() + 30
    x = 0
    with httpx.Client(base_url=roll.url, timeout=30) as client:
        while status(roll, "parity")["state"] == "running" and time.monotonic() < deadline:
            for _ in range(10):
                got = client.post("/v1/functions/parity:prod/invoke", json={"x": x})
                assert got.status_code == 200, got.text
                rid = got.headers["x-request-id"]
                pending[rid], versions[rid] = x, int(got.headers["x-coldbrew-executed-version"])
                x += 1
            items = [{"request_id": rid, "label": v % 2} for rid, v in pending.items()]
            sent = client.post("/v1/functions/parity/feedback", json={"items": items})
            assert sent.status_code == 200, sent.text
            pending = {rid: pending[rid] for rid in sent.json()["unmatched"]}
            time.sleep(0.1)
    done = status(roll, "parity")
    assert done["state"] == "rolled_back", done
    assert done["step"] == 0 and "accuracy" in done["reason"] and "bound 90.0%" in done["reason"]
    assert {1, 2} <= set(versions.values())
    judged = done["history"][-1]["candidate"]
    assert judged["feedback"] >= 10 and judged["accuracy"] == 0.0
    back = roll.client.get("/v1/functions/parity/aliases").json()["aliases"]
    assert next(a for a in back if a["name"] == "prod")["version"] == 1
    audit = roll.client.get("/v1/audit").json()["events"]
    assert any(
        e["action"] == "rollout.rollback"
        and e["target"] == "parity"
        and "accuracy" in e["details"]["reason"]
        for e in audit
    )


def test_a_healthy_candidate_reaches_100(roll: Server) -> None:
    put_alias(roll, "prod", 1)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "rollout", "start", "roll", "--to", "3", "--alias", "prod", "--steps", "20,50,100",
            "--step-duration", "1.5s", "--min-samples", "30", "--max-p95-ratio", "5",
            "--url", roll.url,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 → 3" in result.output
    with Traffic(roll.url, "roll:prod") as traffic:
        done = wait_for(roll, {"rolled_back", "succeeded", "aborted"}, 40)
    assert done["state"] == "succeeded", done["reason"]
    assert [h["action"] for h in done["history"]] == ["advance", "advance", "complete"]
    final = alias(roll, "prod")
    assert final["version"] == 3 and not final["weights"]
    assert traffic.versions[-1] == 3
    shown = runner.invoke(app, ["rollout", "status", "roll", "--url", roll.url])
    assert "succeeded" in shown.output


def test_pause_resume_abort_and_refusals(roll: Server) -> None:
    put_alias(roll, "prod", 1)
    base = "/v1/functions/roll/rollout"
    bad = roll.client.post(base, json={"to": 1, "alias": "prod"})
    assert bad.status_code == 400  # the baseline itself
    assert roll.client.post(base, json={"to": 99, "alias": "prod"}).status_code == 404
    assert roll.client.post(base, json={"to": 3, "steps": "5,50"}).status_code == 400
    for bad in ({"min_accuracy": "x"}, {"min_accuracy": 2}, {"min_feedback": 0}):
        assert roll.client.post(base, json={"to": 3, "alias": "prod", **bad}).status_code == 400
    ok = roll.client.post(base, json={"to": 3, "alias": "prod", "step_duration": "10m"})
    assert ok.status_code == 201
    assert roll.client.post(base, json={"to": 3, "alias": "prod"}).status_code == 409
    assert roll.client.post(f"{base}/pause").json()["state"] == "paused"
    assert roll.client.post(f"{base}/pause").status_code == 409
    assert roll.client.post(f"{base}/resume").json()["state"] == "running"
    aborted = roll.client.post(f"{base}/abort").json()
    assert aborted["state"] == "aborted"
    assert alias(roll, "prod")["version"] == 1 and not alias(roll, "prod")["weights"]
    assert roll.client.post(f"{base}/abort").status_code == 404


def test_a_rollout_survives_a_restart(tmp_path: Path) -> None:
    server = Server(tmp_path / "home", {"COLDBREW_ROLLOUT_INTERVAL_S": "0.25"})
    server.start()
    try:
        for n in (1, 2):
            code = HANDLER + f"\nFAIL_EVERY = 0  # v{n}\n"
            deployed = server.deploy_folder("roll", write_bundle(tmp_path / f"v{n}", code, CONFIG))
            assert deployed.status_code in (200, 201), deployed.text
        body = {"to": 2, "from": 1, "steps": "10,100", "step_duration": "1h"}
        assert server.client.post("/v1/functions/roll/rollout", json=body).status_code == 201
    finally:
        server.stop()
    again = Server(tmp_path / "home", {"COLDBREW_ROLLOUT_INTERVAL_S": "0.25"})
    again.start()
    try:
        time.sleep(0.6)  # a few controller passes
        current = status(again)
        assert current["state"] == "running" and current["step"] == 0
        assert alias(again, "latest")["weights"] == {"2": 0.1}
        assert again.client.post("/v1/functions/roll/rollout/abort").json()["state"] == "aborted"
        assert alias(again, "latest")["version"] == 1
    finally:
        again.stop()
