"""Alerts fire and resolve to webhooks: a real HTTP receiver on loopback gets both POSTs."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from support import Server, write_bundle

FLAKY = """
def handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"ok": True}
"""


class Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        Receiver.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_error_rate_alert_fires_and_resolves_to_a_webhook(tmp_path: Path) -> None:
    receiver = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/alerts"
    server = Server(
        tmp_path / "home",
        env={
            "COLDBREW_ALERT_WEBHOOKS": json.dumps([hook]),
            "COLDBREW_ALERT_INTERVAL_S": "0.3",
            "COLDBREW_ALERT_WINDOW_S": "3",
            "COLDBREW_ALERT_MIN_INVOCATIONS": "3",
        },
    )
    server.start()
    try:
        bundle = write_bundle(tmp_path / "b", FLAKY, 'handler = "handler:handler"\n')
        assert server.deploy_folder("flaky", bundle).status_code == 201
        for _ in range(4):
            server.invoke("flaky", {"fail": True})

        def states() -> list[str]:
            return [
                e["state"]
                for e in Receiver.received
                if e.get("rule") == "error_rate" and e.get("function") == "flaky"
            ]

        deadline = time.monotonic() + 10
        while "firing" not in states() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "firing" in states()
        firing = next(e for e in Receiver.received if e.get("state") == "firing")
        assert firing["source"] == "coldbrew" and firing["message"]
        # Healthy traffic, and the failures slide out of the 3 s window: the alert resolves.
        deadline = time.monotonic() + 15
        while "resolved" not in states() and time.monotonic() < deadline:
            server.invoke("flaky", {})
            time.sleep(0.3)
        assert states()[-1] == "resolved", states()
    finally:
        server.stop()
        receiver.shutdown()
