"""Feedback and accuracy in production: the accuracy, MAE, confusion matrix and calibration
the server reports equal what this test computes from the answers it got and the labels it
sent; the gauges, the CLI and the quality alerts (accuracy, ECE, PSI) agree. Input drift is
measured against a reference set or the deploy's validation sample."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from coldbrew.cli import quality_cmds
from coldbrew.observe.calibration import Point, probabilities_of, reliability
from coldbrew.observe.drift import psi
from coldbrew.observe.drift_watch import Measured, psi_rule
from coldbrew.observe.quality import predicted_value, quality_rules, score
from coldbrew.observe.reference import features_of_csv
from support import Server, write_bundle

CLASSIFIER = """
def handler(event, context):
    return {"predictions": [event["x"] % 3]}
"""
REGRESSOR = """
def handler(event, context):
    return {"estimate": event["x"] * 0.5}
"""
LOGGED = 'handler = "handler:handler"\nlog_predictions = 1.0\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        tmp_path_factory.mktemp("feedback-home"),
        env={
            "COLDBREW_ALERT_MIN_ACCURACY": "0.9",
            "COLDBREW_ALERT_INTERVAL_S": "0.3",
            "COLDBREW_ALERT_MIN_FEEDBACK": "20",
            "COLDBREW_ALERT_MAX_ECE": "0.1",
            "COLDBREW_ALERT_MAX_PSI": "0.25",
            "COLDBREW_ALERT_DRIFT_INTERVAL_S": "0.3",
            "COLDBREW_ALERT_MIN_DRIFT_INPUTS": "50",
        },
    )
    running.start()
    yield running
    running.stop()


def truth(x: int) -> int:
    """The label: the model is right except for every 5th x and some of every 7th."""
    if x % 5 == 0:
        return (x + 1) % 3
    if x % 7 == 0:
        return 0
    return x % 3


def test_classification_accuracy_and_confusion(server: Server, tmp_path: Path) -> None:
    assert server.deploy_folder("clf", write_bundle(tmp_path / "c", CLASSIFIER, LOGGED)).is_success
    answers = {}
    for x in range(300):
        got = server.invoke("clf", {"x": x})
        assert got.status_code == 200
        answers[got.headers["x-request-id"]] = (x, got.json()["predictions"][0])
    items = [{"request_id": rid, "label": truth(x)} for rid, (x, _) in answers.items()]
    items.append({"request_id": "never-made", "label": 1})
    done = server.client.post("/v1/functions/clf/feedback", json={"items": items})
    assert done.status_code == 200, done.text
    assert done.json()["accepted"] == 300 and done.json()["unmatched"] == ["never-made"]

    # Computed here from what the function answered and the labels sent.
    right = sum(predicted == truth(x) for x, predicted in answers.values())
    expected_accuracy = right / 300
    confusion = Counter((truth(x), predicted) for x, predicted in answers.values())
    assert 0.6 < expected_accuracy < 0.9  # the case is not trivial

    report = server.client.get("/v1/functions/clf/quality").json()
    (version,) = report["versions"]
    assert version["n"] == 300 and version["accuracy"] == pytest.approx(expected_accuracy)
    assert version["days"][0]["n"] == 300 and version["mae"] is None
    labels = version["confusion"]["labels"]
    assert labels == [0, 1, 2]
    for i, t in enumerate(labels):
        for j, p in enumerate(labels):
            assert version["confusion"]["matrix"][i][j] == confusion[(t, p)]

    # Feedback again for one request replaces, never double counts.
    rid, (x, predicted) = next(iter(answers.items()))
    again = server.client.post(
        "/v1/functions/clf/feedback", json={"request_id": rid, "label": predicted}
    )
    assert again.json()["accepted"] == 1
    fixed = right + (predicted != truth(x))
    after = server.client.get("/v1/functions/clf/quality").json()["versions"][0]
    assert after["n"] == 300 and after["accuracy"] == pytest.approx(fixed / 300)

    metrics = server.client.get("/metrics").text
    gauge = re.search(r'coldbrew_quality_accuracy\{function="clf",version="1"\} ([0-9.]+)', metrics)
    assert gauge and float(gauge.group(1)) == pytest.approx(fixed / 300)

    # Accuracy below COLDBREW_ALERT_MIN_ACCURACY (0.9): the alert fires.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alerts = server.client.get("/v1/alerts").json()
        if any(a.get("rule") == "accuracy" for a in alerts.get("active", [])):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no accuracy alert: {alerts}")

    shown = subprocess.run(
        [sys.executable, "-m", "coldbrew.cli.main", "quality", "clf", "--url", server.url],
        capture_output=True,
        timeout=60,
        env={**os.environ, "COLDBREW_HOME": str(server.home)},
    )
    assert shown.returncode == 0, shown.stderr
    assert f"accuracy {fixed / 300:.1%}" in shown.stdout.decode()
    assert "confusion matrix" in shown.stdout.decode()


def test_regression_mae(server: Server, tmp_path: Path) -> None:
    config = LOGGED + '[quality]\ntask = "regression"\nprediction = "$.estimate"\n'
    assert server.deploy_folder("reg", write_bundle(tmp_path / "r", REGRESSOR, config)).is_success
    errors, items = [], []
    for x in range(50):
        got = server.invoke("reg", {"x": x})
        value = x * 0.5 + (x % 4) * 0.25  # the truth
        errors.append(abs(got.json()["estimate"] - value))
        items.append({"request_id": got.headers["x-request-id"], "value": value})
    done = server.client.post("/v1/functions/reg/feedback", json={"items": items}).json()
    assert done["accepted"] == 50
    version = server.client.get("/v1/functions/reg/quality").json()["versions"][0]
    assert version["mae"] == pytest.approx(sum(errors) / len(errors))
    assert version["accuracy"] is None and version["confusion"] is None


def test_bad_feedback_is_a_clear_4xx(server: Server, tmp_path: Path) -> None:
    assert server.deploy_folder("fbk", write_bundle(tmp_path / "b", CLASSIFIER, LOGGED)).is_success
    for body in ({}, {"items": []}, {"request_id": 3, "label": 1}, {"request_id": "r"}):
        answer = server.client.post("/v1/functions/fbk/feedback", json=body)
        assert answer.status_code == 400, body
        assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
    missing = server.client.post(
        "/v1/functions/nope/feedback", json={"request_id": "r", "label": 1}
    )
    assert missing.status_code == 404


def test_scoring_rules() -> None:
    assert score("auto", 1, 1.0) == (None, 0.0)  # a float makes it regression
    assert score("classification", 1, 1.0) == (True, None)
    assert score("auto", "cat", "dog") == (False, None)
    assert score("regression", 2, 3.5) == (None, 1.5)
    with pytest.raises(ValueError):
        score("regression", "a", 1)
    assert predicted_value({"predictions": [7]}, None) == 7
    assert predicted_value({"out": {"p": [1, 2]}}, "$.out.p[1]") == 2
    assert predicted_value(4, None) == 4
    recent = [(0.0, True, None)] * 15 + [(0.0, False, None)] * 5
    (rule,) = quality_rules("f:1", recent, 0.8, None, 20, 60)
    assert rule.firing and rule.value == 0.75
    (rule,) = quality_rules("f:1", recent[:19], 0.8, None, 20, 60)
    assert not rule.firing  # not enough feedback yet
    assert json.dumps(rule.message)


def test_input_drift_against_the_reference_set(server: Server, tmp_path: Path) -> None:
    rng = random.Random(3)
    reference = [{"a": rng.gauss(0, 1), "b": rng.gauss(5, 2)} for _ in range(1000)]
    bundle = write_bundle(
        tmp_path / "d",
        CLASSIFIER.replace('event["x"] % 3', "0"),
        LOGGED + '[quality]\nreference = "reference.jsonl"\n',
    )
    (bundle / "reference.jsonl").write_text("\n".join(json.dumps(e) for e in reference) + "\n")
    assert server.deploy_folder("drifty", bundle).is_success
    sent = [{"a": rng.gauss(1.0, 1), "b": rng.gauss(5, 2)} for _ in range(300)]  # a shifts
    for event in sent:
        assert server.invoke("drifty", event).status_code == 200
    (version,) = server.client.get("/v1/functions/drifty/quality").json()["versions"]
    found = version["drift"]
    assert found["a"]["n"] == 300 and found["a"]["psi"] > 0.25  # a real shift
    assert found["b"]["psi"] < 0.1  # stable
    for name in ("a", "b"):  # exactly the PSI of what was sent against the reference
        want = psi([e[name] for e in reference], [e[name] for e in sent])
        assert found[name]["psi"] == pytest.approx(want, abs=1e-5)
    metrics = server.client.get("/metrics").text
    assert 'coldbrew_quality_psi{feature="a",function="drifty",version="1"}' in metrics
    # The periodic check over the quality window fires the psi rule (COLDBREW_ALERT_MAX_PSI).
    fired = wait_alert(server, "psi", "drifty:1")
    assert "a " in fired["message"] and fired["value"] > 0.25


def wait_alert(server: Server, rule: str, target: str, state: str = "firing") -> dict:
    """The alert event of ``rule`` for ``target`` in ``state``, within a few seconds."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alerts = server.client.get("/v1/alerts").json()
        pool = alerts["active"] if state == "firing" else alerts["recent"]
        for event in pool:
            if (event["rule"], event["function"], event["state"]) == (rule, target, state):
                return event
        time.sleep(0.2)
    raise AssertionError(f"no {state} {rule} alert for {target}: {alerts}")


def cli(server: Server, *args: str) -> str:
    shown = subprocess.run(
        [sys.executable, "-m", "coldbrew.cli.main", *args, "--url", server.url],
        capture_output=True,
        timeout=60,
        env={**os.environ, "COLDBREW_HOME": str(server.home)},
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.decode()


def test_accuracy_dropping_fires_the_rule_and_recovering_resolves_it(
    server: Server, tmp_path: Path
) -> None:
    bundle = write_bundle(tmp_path / "a", CLASSIFIER, LOGGED)
    assert server.deploy_folder("acc", bundle).is_success
    answers = [server.invoke("acc", {"x": x}) for x in range(40)]
    ids = [(a.headers["x-request-id"], a.json()["predictions"][0]) for a in answers]
    right = [{"request_id": rid, "label": p} for rid, p in ids]
    assert server.client.post("/v1/functions/acc/feedback", json={"items": right[:20]}).is_success
    time.sleep(0.7)  # two alert passes at 100%
    active = server.client.get("/v1/alerts").json()["active"]
    assert not any(a["function"] == "acc:1" for a in active)
    # The truth of the next 20 disagrees with every prediction: accuracy 50% < 90%.
    wrong = [{"request_id": rid, "label": p + 1} for rid, p in ids[20:]]
    assert server.client.post("/v1/functions/acc/feedback", json={"items": wrong}).is_success
    fired = wait_alert(server, "accuracy", "acc:1")
    assert fired["value"] == pytest.approx(0.5) and fired["threshold"] == 0.9
    # Corrected feedback replaces the wrong one: back to 100%, the alert resolves.
    assert server.client.post("/v1/functions/acc/feedback", json={"items": right[20:]}).is_success
    wait_alert(server, "accuracy", "acc:1", "resolved")


CALIBRATED = """
def handler(event, context):
    p = (event["x"] * 37 % 100) / 100  # the model's probability of "yes"
    label = "yes" if p >= 0.5 else "no"
    return {"predictions": [label], "probabilities": [[1 - p, p]], "classes": ["no", "yes"]}
"""


def test_calibration_reliability_ece_and_brier(server: Server, tmp_path: Path) -> None:
    assert server.deploy_folder("cal", write_bundle(tmp_path / "k", CALIBRATED, LOGGED)).is_success
    rng = random.Random(7)
    items, seen = [], []
    for x in range(60):
        got = server.invoke("cal", {"x": x})
        body = got.json()
        predicted, p_yes = body["predictions"][0], body["probabilities"][0][1]
        truth = "yes" if rng.random() < 0.5 + (p_yes - 0.5) / 3 else "no"  # overconfident
        items.append({"request_id": got.headers["x-request-id"], "label": truth})
        seen.append((predicted, p_yes, truth))
    done = server.client.post("/v1/functions/cal/feedback", json={"items": items}).json()
    assert done["accepted"] == 60

    # Computed here: top-label confidence in ten equal bins; the binary Brier score.
    bins: dict[int, list[tuple[float, bool]]] = {}
    for predicted, p_yes, truth in seen:
        confidence = p_yes if predicted == "yes" else 1 - p_yes
        bins.setdefault(min(int(confidence * 10), 9), []).append((confidence, predicted == truth))
    ece = sum(
        len(m) / 60 * abs(sum(c for _, c in m) / len(m) - sum(p for p, _ in m) / len(m))
        for m in bins.values()
    )
    brier = sum((p - (t == "yes")) ** 2 for _, p, t in seen) / 60  # sklearn's brier_score_loss
    assert ece > 0.1  # the case is not trivial: the ECE rule must fire

    (version,) = server.client.get("/v1/functions/cal/quality").json()["versions"]
    calibration = version["calibration"]
    assert calibration["n"] == 60
    assert calibration["ece"] == pytest.approx(ece, abs=1e-5)
    assert calibration["brier"] == pytest.approx(brier, abs=1e-5)
    assert [b["n"] for b in calibration["bins"]] == [len(bins[k]) for k in sorted(bins)]
    for row in calibration["bins"]:
        members = bins[round(row["low"] * 10)]
        assert row["accuracy"] == pytest.approx(sum(c for _, c in members) / len(members))

    metrics = server.client.get("/metrics").text
    for name, want in (("ece", ece), ("brier", brier)):
        gauge = re.search(
            rf'coldbrew_quality_{name}\{{function="cal",version="1"\}} ([0-9.]+)', metrics
        )
        assert gauge and float(gauge.group(1)) == pytest.approx(want, abs=1e-5)
    fired = wait_alert(server, "ece", "cal:1")
    assert fired["value"] == pytest.approx(ece, abs=1e-5)
    shown = cli(server, "quality", "cal")
    assert f"ECE {ece:.3f}, Brier {brier:.3f}" in shown


def test_input_drift_against_the_validation_sample(server: Server, tmp_path: Path) -> None:
    rng = random.Random(5)
    sample = [(rng.gauss(0, 1), rng.gauss(5, 2)) for _ in range(500)]
    handler = CLASSIFIER.replace('event["x"] % 3', "0")
    config = LOGGED + '[validation]\nsample = "validation.csv"\n'
    bundle = write_bundle(tmp_path / "v", handler, config)
    lines = ["a,b,kind", *(f"{a},{b},row" for a, b in sample)]
    (bundle / "validation.csv").write_text("\n".join(lines) + "\n")
    assert server.deploy_folder("valid", bundle).is_success
    sent = [{"a": rng.gauss(0, 1), "b": rng.gauss(7, 2)} for _ in range(150)]  # b shifts
    for event in sent:
        assert server.invoke("valid", event).status_code == 200
    (version,) = server.client.get("/v1/functions/valid/quality").json()["versions"]
    assert version["drift_reference"] == {
        "source": "validation.sample",
        "path": "validation.csv",
        "rows": 500,
    }
    for i, name in enumerate("ab"):
        want = psi([row[i] for row in sample], [e[name] for e in sent])
        assert version["drift"][name]["psi"] == pytest.approx(want, abs=1e-5)
    assert version["drift"]["b"]["psi"] > 0.25 > version["drift"]["a"]["psi"]
    wait_alert(server, "psi", "valid:1")

    (bundle / "validation.csv").unlink()  # named but missing: refused at deploy
    refused = server.deploy_folder("valid", bundle)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "DEPLOY_ERROR"
    assert "validation.csv" in refused.json()["error"]["message"]


def test_calibration_and_drift_rules() -> None:
    built_in = {"predictions": [1], "probabilities": [[0.2, 0.8]], "classes": [0, 1]}
    assert probabilities_of(built_in, None) == {0.0: 0.2, 1.0: 0.8}
    assert probabilities_of({"p": 0.7}, "$.p") == pytest.approx({1.0: 0.7, 0.0: 0.3})
    assert probabilities_of({"p": {"cat": 0.6, "dog": 0.4}}, "$.p") == {"cat": 0.6, "dog": 0.4}
    assert probabilities_of({"probabilities": [[2.0, 3.0]]}, None) is None  # logits are not
    assert probabilities_of({"predictions": [1]}, None) is None
    three = reliability([Point(0.8, True, 0.04), Point(0.8, False, 0.64), Point(0.95, True, 0.0)])
    assert three is not None and three["ece"] == pytest.approx((2 * 0.3 + 0.05) / 3, abs=1e-6)
    recent = [(0.0, True, None, 0.9, 0.01)] * 10 + [(0.0, False, None, 0.9, 0.81)] * 10
    accuracy, ece = quality_rules("f:1", recent, 0.4, None, 20, 60, max_ece=0.3)
    assert not accuracy.firing and ece.firing and ece.value == pytest.approx(0.4)
    (ece,) = quality_rules("f:1", recent[:19], None, None, 20, 60, max_ece=0.3)
    assert not ece.firing  # not enough feedback with probabilities
    measured = Measured(0.0, 80, {"a": {"psi": 0.4, "n": 80}, "b": {"psi": 0.05, "n": 80}})
    rule = psi_rule("f:2", measured, 0.25, 50, 3600)
    assert rule.firing and rule.value == 0.4 and "a 0.40" in rule.message
    assert not psi_rule("f:2", measured, 0.25, 100, 3600).firing  # too few inputs
    features, rows = features_of_csv(b"age,city\n31,Oslo\n40,Bergen\n,Molde\n")
    assert rows == 3 and features["age"] == features["x0"] == [31.0, 40.0]
    assert "city" not in features and "x1" not in features
    reference = {"source": "validation.sample", "path": "validation.csv", "rows": 500}
    heading = quality_cmds.drift_heading(reference)
    assert heading == "input drift vs the validation sample validation.csv (500 rows)"
    console = Console(record=True)
    console.print(quality_cmds._drift({"b": {"psi": 1.9, "n": 150}}))
    assert "shifted" in console.export_text()
