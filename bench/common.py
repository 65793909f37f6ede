"""Shared pieces of the benchmarks: the models, process groups, and a coldbrew server to drive.

Every process a benchmark starts runs in its own session (so its whole process group can be
signalled, children included) and is registered in a ``Processes`` set that stops them all on
exit, on an exception and on Ctrl-C. Nothing here listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- the models


@dataclass(frozen=True)
class BenchModel:
    """A trained model saved to disk, one request row and the prediction it must get."""

    name: str
    path: Path
    row: list[float]
    expected: int

    def body(self) -> bytes:
        """The exact request body every contender gets: one row, built-in handler shape."""
        import json

        return json.dumps({"instances": [self.row]}, separators=(",", ":")).encode()


def train_forest(out_dir: Path) -> BenchModel:
    """The benchmark model of issues 3 and 4: a 100-tree forest on breast cancer, joblib."""
    import joblib
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    data = load_breast_cancer()
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(data.data, data.target)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.joblib"
    joblib.dump(model, path)
    row = [float(v) for v in data.data[0]]
    return BenchModel("forest", path, row, int(model.predict([row])[0]))


def train_digits_onnx(out_dir: Path) -> BenchModel:
    """The quickstart's digits classifier (scaler + logistic regression), exported to ONNX."""
    import importlib.util

    from sklearn.datasets import load_digits

    train = BENCH_DIR.parent / "examples" / "digits_onnx" / "train.py"
    spec = importlib.util.spec_from_file_location("bench_digits_train", train)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = module.build(out_dir)
    row = [float(v) for v in load_digits().data[0]]
    return BenchModel("onnx", path, row, int(load_digits().target[0]))


def train_xgboost(out_dir: Path) -> BenchModel:
    """A 100-tree XGBoost classifier on breast cancer, saved as a native booster (model.json)."""
    import xgboost
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    model = xgboost.XGBClassifier(n_estimators=100, max_depth=4, n_jobs=1, random_state=0)
    model.fit(data.data, data.target)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.json"
    model.get_booster().save_model(path)
    row = [float(v) for v in data.data[0]]
    return BenchModel("xgboost", path, row, int(model.predict([row])[0]))


def prediction_of(body: Any) -> int | None:
    """The first prediction in a contender's answer: ``{"predictions": [p]}`` or ``[p]``."""
    if isinstance(body, dict):
        body = body.get("predictions")
    if isinstance(body, list) and body:
        first = body[0]
        return int(first) if isinstance(first, (int, float)) else None
    return None


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Proc:
    """A child in its own session; stopping it signals the group, then any stray descendant."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        import psutil

        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            descendants = []
        _signal_group(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(self.pid, signal.SIGKILL)
            self.popen.wait(5)
        # Ray starts helpers in sessions of their own: stop those by pid.
        _, survivors = psutil.wait_procs(descendants, timeout=3)
        for child in survivors:
            with suppress(psutil.Error):
                child.kill()


def _signal_group(pid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Processes:
    """Every process a benchmark started; ``stop_all`` runs on exit, errors and Ctrl-C."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[Proc] = []

    def start(self, name: str, argv: list[str], **kwargs: Any) -> Proc:
        proc = Proc(name, argv, self.log_dir / f"{name}.log", **kwargs)
        self.running.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        if proc in self.running:
            self.running.remove(proc)
        proc.stop()

    def stop_all(self) -> None:
        while self.running:
            self.stop(self.running[-1])


@contextmanager
def managed(log_dir: Path) -> Iterator[Processes]:
    """Processes stopped however the block ends; SIGTERM is turned into KeyboardInterrupt."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    procs = Processes(log_dir)
    try:
        yield procs
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        signal.signal(signal.SIGTERM, previous)


def wait_http(
    url: str, proc: Proc, timeout_s: float, method: str = "GET", body: bytes | None = None
) -> None:
    """Poll ``url`` until it answers 2xx; fail early if the process died."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            try:
                response = client.request(
                    method, url, content=body, headers={"content-type": "application/json"}
                )
                if response.status_code < 300:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout_s:g} s:\n{proc.tail()}")


# --------------------------------------------------------------------------- coldbrew


def write_bundle(folder: Path, model: BenchModel, config: str, nonce: str = "") -> Path:
    """A bundle with the model under the built-in handler; ``nonce`` makes a distinct version."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / model.path.name
    target.write_bytes(model.path.read_bytes())
    (folder / "coldbrew.toml").write_text(f'model = "{model.path.name}"\n{config}')
    if nonce:
        (folder / "nonce.txt").write_text(nonce)
    return folder


def pack(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(folder)))
    return buffer.getvalue()


class Coldbrew:
    """``coldbrew serve`` as a subprocess with its own home, driven over its REST API."""

    def __init__(
        self,
        procs: Processes,
        home: Path,
        name: str = "coldbrew",
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "coldbrew.cli.main",
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--home",
            str(home),
        ]
        self.proc = procs.start(name, argv, env={"COLDBREW_LOG_LEVEL": "warning", **(env or {})})
        wait_http(f"{self.url}/healthz", self.proc, timeout_s=120)
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def deploy(self, name: str, folder: Path) -> dict[str, Any]:
        response = self.client.post(
            "/v1/functions", data={"name": name}, files={"file": ("bundle.tar.gz", pack(folder))}
        )
        if response.status_code >= 300:
            raise RuntimeError(f"deploy of {name} failed: {response.status_code} {response.text}")
        return dict(response.json())

    def invoke(self, name: str, body: bytes) -> Any:
        response = self.client.post(
            f"/v1/functions/{name}/invoke",
            content=body,
            headers={"content-type": "application/json"},
        )
        response.raise_for_status()
        return response.json()

    def delete(self, name: str) -> None:
        self.client.delete(f"/v1/functions/{name}").raise_for_status()

    def pools(self, name: str) -> list[dict[str, Any]]:
        return list(self.client.get(f"/v1/functions/{name}").json()["pools"])


# --------------------------------------------------------------------------- statistics


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
