"""The /ui dashboard in headless Chromium: its numbers change live as traffic arrives."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from support import Server, write_bundle

SERVER_ENV = {"COLDBREW_ALERT_MAX_PSI": "0.5"}  # the bound the quality panel colours against
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_dashboard_updates_live(server: Server, tmp_path: Path) -> None:
    if not shutil.which(CHROMIUM) and os.environ.get("COLDBREW_REQUIRE_SERVICES") != "1":
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    bundle = write_bundle(
        tmp_path / "b",
        "def handler(event, context):\n    return {'ok': True}\n",
        'handler = "handler:handler"\nmemory_mb = 256\n',
    )
    assert server.deploy_folder("ui-fn", bundle).status_code == 201
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 800})
            page.goto(f"{server.url}/ui")
            row = page.locator('tr[data-function="ui-fn"] td.inv')
            row.wait_for(timeout=10_000)
            before = int(page.locator("#t-invocations").inner_text())
            for _ in range(7):
                assert server.invoke("ui-fn", {}).status_code == 200
            page.wait_for_function(
                f"Number(document.getElementById('t-invocations').textContent) >= {before + 7}",
                timeout=10_000,
            )
            assert int(row.inner_text()) >= 7
            assert page.locator("#t-cost").inner_text() != "$0"
            assert page.locator("#c-rate polyline").count() == 1
            # Async: an event of a failing function without retries is dead-lettered at once;
            # the async table and the dead-letter tile say so.
            failing = write_bundle(
                tmp_path / "f",
                "def handler(event, context):\n    raise ValueError('no')\n",
                'handler = "handler:handler"\nmemory_mb = 256\n',
            )
            assert server.deploy_folder("ui-fail", failing).status_code == 201
            config = {"MaximumRetryAttempts": 0}
            path = "/2019-09-25/functions/ui-fail/event-invoke-config"
            assert server.client.put(path, json=config).status_code == 200
            answer = server.client.post("/v1/functions/ui-fail/invoke?async=1", json={})
            assert answer.status_code == 202
            page.wait_for_function(
                "document.querySelector('tr[data-async=\"ui-fail\"] td.dead')?.textContent === '1'",
                timeout=20_000,
            )
            assert int(page.locator("#t-dead").inner_text()) >= 1
            assert page.locator("#c-async polyline").count() == 2
            quality_panel(server, page, tmp_path)
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"dashboard screenshot: {shot}")
        finally:
            browser.close()


SCORED = """
def handler(event, context):
    p = (event["x"] % 10) / 10 + 0.05
    label = "yes" if p >= 0.5 else "no"
    return {"predictions": [label], "probabilities": [[1 - p, p]], "classes": ["no", "yes"]}
"""


def quality_panel(server: Server, page: Any, tmp_path: Path) -> None:
    """Feedback on a logged classifier with a reference set: the panel shows its accuracy,
    ECE, Brier and the PSI of each input feature, red above COLDBREW_ALERT_MAX_PSI."""
    bundle = write_bundle(
        tmp_path / "q",
        SCORED,
        'handler = "handler:handler"\nlog_predictions = 1.0\n'
        '[quality]\nreference = "reference.jsonl"\n',
    )
    reference = [{"x": i % 10, "y": i % 7} for i in range(210)]  # x drifts below, y does not
    (bundle / "reference.jsonl").write_text("\n".join(json.dumps(e) for e in reference) + "\n")
    assert server.deploy_folder("ui-q", bundle).status_code == 201
    items, right = [], 0
    for x in range(40):
        got = server.invoke("ui-q", {"x": x, "y": x % 7})
        truth = "yes" if x % 3 else "no"
        right += got.json()["predictions"][0] == truth
        items.append({"request_id": got.headers["x-request-id"], "label": truth})
    done = server.client.post("/v1/functions/ui-q/feedback", json={"items": items})
    assert done.json()["accepted"] == 40, done.text
    (want,) = server.client.get("/v1/functions/ui-q/quality").json()["versions"]
    assert want["accuracy"] == right / 40
    page.locator("#q-fn").select_option("ui-q")
    row = page.locator('tr[data-quality="1"]')
    row.wait_for(timeout=5_000)
    assert row.locator("td.n").inner_text() == "40"
    assert row.locator("td.accuracy").inner_text() == f"{right / 40 * 100:.1f}%"
    assert row.locator("td.ece").inner_text() == f"{want['calibration']['ece']:.3f}"
    assert row.locator("td.brier").inner_text() == f"{want['calibration']['brier']:.3f}"
    x, y = (row.locator(f'.psi[data-feature="{f}"]') for f in ("x", "y"))
    assert x.inner_text() == f"x {want['drift']['x']['psi']:.3f}"
    assert want["drift"]["x"]["psi"] > 0.5 > want["drift"]["y"]["psi"]
    assert "over" in x.get_attribute("class") and "over" not in y.get_attribute("class")
    assert "alert bound 0.5" in page.locator("#q-note").inner_text()
