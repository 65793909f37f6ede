"""Ensembles and routers on a real server: members fanned out through the data plane (each
metered), combined by vote / mean of probabilities, a quorum that survives a member killed
mid-request or too slow, and routers choosing a member by a field of the event."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import Server

MEMBER = """
import time

def handler(event, context):
    if SLOW and isinstance(event, dict) and event.get("sleep"):
        time.sleep(event["sleep"])
    return {"predictions": [LABEL], "probabilities": [PROBA], "classes": ["x", "y"]}
"""
MEMBER_CONFIG = "handler = 'handler:handler'\nmax_instances = 2\n"


def ensemble(members: list[str], **options: Any) -> str:
    lines = ['kind = "ensemble"', "[ensemble]", f"members = {members!r}"]
    lines += [f"{k} = {v!r}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def ens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("coldbrew-home"))
    server.start()
    base: Path = tmp_path_factory.mktemp("bundles")

    def deploy(name: str, config: str, code: str | None = None) -> None:
        folder = base / name
        folder.mkdir()
        (folder / "coldbrew.toml").write_text(config)
        if code is not None:
            (folder / "handler.py").write_text(code)
        deployed = server.deploy_folder(name, folder)
        assert deployed.status_code in (200, 201), deployed.text

    for name, label, proba, slow in (
        ("m-a", "x", [0.6, 0.4], False),
        ("m-b", "x", [0.55, 0.45], False),
        ("m-slow", "y", [0.0, 1.0], True),
    ):
        code = MEMBER + f"\nLABEL = {label!r}\nPROBA = {proba!r}\nSLOW = {slow}\n"
        deploy(name, MEMBER_CONFIG, code)
    members = ["m-a", "m-b", "m-slow"]
    deploy("vote", ensemble(members, quorum=2, member_timeout_s=20))
    deploy("quick", ensemble(members, quorum=2, member_timeout_s=0.5))
    deploy("all3", ensemble(members, quorum=3, member_timeout_s=0.5))
    deploy("proba", ensemble(members, combine="mean_proba"))
    deploy("nested", ensemble(["vote", "m-b:1"], quorum=2))
    router = (
        'kind = "router"\n[router]\nfield = "$.model"\ndefault = "m-a"\n'
        '[router.routes]\nfast = "m-a"\nslow = "m-slow:1"\n'
    )
    deploy("pick", router)
    strict = 'kind = "router"\n[router]\nfield = "$.model"\n[router.routes]\nfast = "m-a"\n'
    deploy("strict", strict)
    combiner = (
        "def handler(event, context):\n"
        "    labels = [r['result']['predictions'][0] for r in event['results']]\n"
        "    return {'predictions': [min(labels)], 'seen': len(labels), 'event': event['event']}\n"
    )
    deploy("pick-min", "handler = 'handler:handler'\n", combiner)
    deploy("by-fn", ensemble(members, combine="function:pick-min"))
    classifier = (
        "def handler(event, context):\n"
        "    return {'route': 'slow' if event.get('big') else 'fast'}\n"
    )
    deploy("sizer", "handler = 'handler:handler'\n", classifier)
    deploy(
        "classify",
        'kind = "router"\n[router]\nclassifier = "sizer"\n'
        '[router.routes]\nfast = "m-a"\nslow = "m-slow"\n',
    )
    for name in members:  # warm: cold starts are not what these tests look at
        server.invoke(name, {})
    yield server
    server.stop()


def members_of(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["member"]: m for m in answer["members"]}


def test_vote(ens: Server) -> None:
    response = ens.invoke("vote", {"instances": [[1, 2]]})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["predictions"] == ["x"]  # x, x, y
    assert answer["answered"] == 3 and answer["quorum"] == 2
    assert all(m["ok"] and m["version"] == 1 for m in answer["members"])


def test_each_member_invocation_is_metered(ens: Server) -> None:
    def count(name: str) -> int:
        return int(ens.client.get(f"/v1/usage?function={name}").json()["count"])

    before = {n: count(n) for n in ("m-a", "m-b", "m-slow", "vote")}
    assert ens.invoke("vote", {}).status_code == 200
    time.sleep(1.5)  # the meter is written in the background
    after = {n: count(n) for n in before}
    assert all(after[n] == before[n] + 1 for n in before), (before, after)


def test_a_member_killed_mid_request_still_answers_with_quorum(ens: Server) -> None:
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(
        target=lambda: result.update(r=ens.invoke("vote", {"sleep": 5})), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    busy: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not busy:
        busy = [i for i in ens.instances("m-slow") if i["inflight"] and i["pid"]]
        time.sleep(0.05)
    assert busy, "the slow member never started"
    os.kill(busy[0]["pid"], signal.SIGKILL)
    thread.join(20)
    response = result["r"]
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["answered"] == 2 and answer["predictions"] == ["x"]
    assert members_of(answer)["m-slow"] == {
        "member": "m-slow",
        "ok": False,
        "error": "INSTANCE_CRASHED",
        "ms": members_of(answer)["m-slow"]["ms"],
    }


def test_a_slow_member_is_not_waited_for(ens: Server) -> None:
    started = time.monotonic()
    response = ens.invoke("quick", {"sleep": 3})
    assert time.monotonic() - started < 2.5
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["answered"] == 2 and members_of(answer)["m-slow"]["error"] == "TIMEOUT"


def test_without_quorum_the_call_fails_and_says_who_answered(ens: Server) -> None:
    response = ens.invoke("all3", {"sleep": 3})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "FUNCTION_ERROR" and error["errorType"] == "QuorumNotMet"
    assert "2 of 3 members answered, 3 needed" in error["errorMessage"]
    assert "m-slow: TIMEOUT" in error["errorMessage"]


def test_mean_of_probabilities(ens: Server) -> None:
    answer = ens.invoke("proba", {}).json()
    # (0.6 + 0.55 + 0) / 3 = 0.383 for x, 0.617 for y: the mean says y, a vote would say x.
    assert answer["predictions"] == ["y"] and answer["classes"] == ["x", "y"]
    assert answer["probabilities"][0] == pytest.approx([1.15 / 3, 1.85 / 3])


def test_an_ensemble_of_an_ensemble(ens: Server) -> None:
    answer = ens.invoke("nested", {}).json()
    assert answer["answered"] == 2 and answer["predictions"] == ["x"]


def test_router_by_field(ens: Server) -> None:
    fast = ens.invoke("pick", {"model": "fast"}).json()
    assert fast["route"] == "fast" and fast["member"] == "m-a"
    assert fast["result"]["predictions"] == ["x"]
    slow = ens.invoke("pick", {"model": "slow"}).json()
    assert slow["member"] == "m-slow:1" and slow["version"] == 1
    assert ens.invoke("pick", {"model": "other"}).json()["member"] == "m-a"  # the default
    refused = ens.invoke("strict", {"model": "other"})
    assert refused.status_code == 400 and "no route for 'other'" in refused.text


def test_lambda_invoke_of_an_ensemble(ens: Server) -> None:
    response = ens.client.post("/2015-03-31/functions/vote/invocations", content=b"{}")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == ["x"]
    assert response.headers["x-amz-executed-version"] == "1"


def test_combined_by_a_function(ens: Server) -> None:
    answer = ens.invoke("by-fn", {"x": 1}).json()
    assert answer["predictions"] == ["x"] and answer["seen"] == 3
    assert answer["event"] == {"x": 1} and answer["answered"] == 3


def test_router_by_classifier(ens: Server) -> None:
    assert ens.invoke("classify", {"big": True}).json()["member"] == "m-slow"
    small = ens.invoke("classify", {}).json()
    assert small["route"] == "fast" and small["result"]["predictions"] == ["x"]
