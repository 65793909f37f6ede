"""The /ui dashboard in headless Chromium: its numbers change live as traffic arrives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support import Server, write_bundle

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
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"dashboard screenshot: {shot}")
        finally:
            browser.close()
