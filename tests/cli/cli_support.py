"""``coldbrew serve`` as a subprocess, for the CLI tests (its own module so tests can import the
type without importing a conftest, whose module name is shared by every test folder)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support import free_port

STARTUP_TIMEOUT_S = 60


class ServeProcess:
    """``python -m coldbrew.cli.main serve`` on a free loopback port with a private home."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "serve.log"
        env = {**os.environ, "COLDBREW_REAP_INTERVAL_S": "0.2"}
        env.pop("COLDBREW_URL", None)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "coldbrew.cli.main",
                    "serve",
                    "--port",
                    str(self.port),
                    "--home",
                    str(home),
                ],
                env=env,
                stdout=log,
                stderr=log,
            )

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("coldbrew serve did not become healthy")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
