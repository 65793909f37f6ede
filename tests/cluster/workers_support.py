"""A ``coldbrew serve --workers N`` process for the cluster tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from support import free_port


class Workers:
    """A running ``coldbrew serve --workers N`` (its own process group) and a client for it."""

    def __init__(self, home: Path, workers: int, env: dict[str, str]) -> None:
        self.home = home
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "COLDBREW_HOME": str(home),
            "COLDBREW_PORT": str(self.port),
            "COLDBREW_REAP_INTERVAL_S": "0.2",
            **env,
        }
        self.log_path = home.parent / f"{home.name}-workers.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def start(self, timeout_s: float = 120) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "coldbrew.cli.main",
                    "serve",
                    "--workers",
                    str(self.workers),
                ],
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.wait_for(lambda: len(self.gateways()) == self.workers, timeout_s)

    def gateways(self) -> list[dict[str, Any]]:
        """The live workers of this supervisor, by worker index (from GET /v1/nodes)."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"supervisor exited: {self.log_path.read_text()[-3000:]}")
        try:
            answer = self.client.get("/v1/nodes", timeout=5).json()
        except (httpx.TransportError, ValueError):
            return []
        mine = [
            g
            for node in answer["nodes"]
            for g in node["gateways"]
            if g["worker"] is not None
            and self.socket_of(g["worker"]).exists()
            and _child_of(g["pid"], self.process.pid)
        ]
        return sorted(mine, key=lambda g: g["worker"])

    def socket_of(self, worker: int) -> Path:
        return self.home / "run" / "workers" / f"gateway-{worker}.sock"

    def worker_client(self, worker: int) -> httpx.Client:
        """A client reaching one worker alone, through its own Unix socket."""
        transport = httpx.HTTPTransport(uds=str(self.socket_of(worker)))
        return httpx.Client(transport=transport, base_url="http://worker", timeout=60)

    @staticmethod
    def wait_for(check: Any, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError("timed out")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.client.close()


def _child_of(pid: int, parent: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1]) == parent
    except (OSError, ValueError, IndexError):
        return False
