"""Test support: a real coldbrew server in its own process, on a free loopback port."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

STARTUP_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_service(what: str, exc: BaseException) -> None:
    """Skip the test whose service is unavailable, or fail it under COLDBREW_REQUIRE_SERVICES=1
    (CI, where every service must be there)."""
    if os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required (COLDBREW_REQUIRE_SERVICES=1): {exc}")
    pytest.skip(f"{what} unavailable: {exc}")


def wait_for(check: Any, timeout: float, what: str) -> Any:
    """Poll ``check`` every 0.1 s until it returns something truthy (returned), or fail naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def pack_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if "__pycache__" not in path.parts and path.is_file():
                tar.add(path, arcname=str(path.relative_to(folder)))
    return buffer.getvalue()


class Server:
    """A running ``coldbrew serve`` and an HTTP client for it."""

    def __init__(self, home: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "COLDBREW_HOME": str(home),
            "COLDBREW_PORT": str(self.port),
            "COLDBREW_REAP_INTERVAL_S": "0.2",
            **(env or {}),
        }
        self.log_path = home / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from coldbrew.gateway.server import run;"
                    " from coldbrew.settings import Settings; run(Settings())",
                ],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def stop(self) -> None:
        if self.process and self.process.poll() is not None:
            # It died under the tests: say how, so the failure can be understood from CI logs.
            print(f"server exited with {self.process.returncode}; last log lines:")
            print("\n".join(self.log_path.read_text(errors="replace").splitlines()[-60:]))
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.client.close()

    # --- helpers --------------------------------------------------------------------------------
    def deploy_file(self, name: str, path: Path) -> httpx.Response:
        with path.open("rb") as file:
            return self.client.post(
                "/v1/functions", data={"name": name}, files={"file": (path.name, file)}
            )

    def deploy_folder(self, name: str, folder: Path) -> httpx.Response:
        return self.client.post(
            "/v1/functions",
            data={"name": name},
            files={"file": ("bundle.tar.gz", pack_folder(folder))},
        )

    def invoke(self, target: str, event: Any = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(f"/v1/functions/{target}/invoke", json=event, **kwargs)

    def instances(self, name: str) -> list[dict[str, Any]]:
        info = self.client.get(f"/v1/functions/{name}").json()
        return [i for pool in info["pools"] for i in pool["instances"]]


def write_bundle(folder: Path, handler_code: str, config: str) -> Path:
    """A bundle folder with ``handler.py`` and ``coldbrew.toml``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(handler_code)
    (folder / "coldbrew.toml").write_text(config)
    return folder


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is as good as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False
    return True
