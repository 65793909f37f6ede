"""The template scenario: heavy libraries imported (and models maybe loaded) in a parent that
then forks instances, each of which must load and predict without hanging.

Each scenario runs in a fresh interpreter so pytest's own state (libraries pytest already
used, threads it started) cannot hide or cause a problem. The parent bounds every wait and
kills children that overrun, so a regression shows up as a failure, not a hung test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io
import xgboost as xgb
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

CHILDREN = 4
TOTAL_TIMEOUT_S = 60

# Runs in a fresh interpreter: argv[1] = manifest JSON. First as a runtime template (children
# load the models), then as a version template (the parent loads them, children only predict):
# one interpreter for both, since the first scenario leaves the parent as it was (only forked
# children loaded anything) and importing these libraries is most of the time. Prints one
# REPORT line per scenario.
TEMPLATE_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, time

    def os_threads():
        return len(os.listdir("/proc/self/task"))

    import numpy as np
    import sklearn, sklearn.ensemble, sklearn.linear_model
    import onnxruntime
    import xgboost
    import skops.io
    threads_after_imports = os_threads()
    from coldbrew.runtime.loaders import enter_instance, load_model

    manifest = json.load(open(sys.argv[1]))
    x = np.asarray(manifest["x"])
    threads_after_coldbrew = os_threads()

    def load_all():
        # threads=2: PyTorch and LightGBM may use two, but only from enter_instance on.
        return {m["path"]: load_model(m["path"], m["format"], threads=2)
                for m in manifest["models"]}

    def scenario(mode):
        report = {"mode": mode, "threads_after_imports": threads_after_imports,
                  "threads_after_coldbrew": threads_after_coldbrew}
        preloaded = load_all() if mode == "version" else None
        report["threads_after_load"] = os_threads()
        if preloaded is not None:  # the version template's warm-up: one prediction per model
            for m in manifest["models"]:
                preloaded[m["path"]].predict(x[:1])
        report["threads_after_warm_up"] = os_threads()

        def child():
            models = preloaded if preloaded is not None else load_all()
            for m in manifest["models"]:
                enter_instance(models[m["path"]])
                out = models[m["path"]].predict(x)
                if out["predictions"] != m["expected"]:
                    print(f"wrong predictions for {m['path']}: {out['predictions']}", flush=True)
                    os._exit(3)
            os._exit(0)

        pids = []
        for _ in range(int(manifest["children"])):
            pid = os.fork()
            if pid == 0:
                try:
                    child()
                except BaseException as exc:
                    print(f"child failed: {type(exc).__name__}: {exc}", flush=True)
                finally:
                    os._exit(4)
            pids.append(pid)

        deadline = time.monotonic() + float(manifest["timeout_s"])
        codes = {}
        while len(codes) < len(pids) and time.monotonic() < deadline:
            for pid in pids:
                if pid not in codes:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        codes[pid] = os.waitstatus_to_exitcode(status)
            time.sleep(0.02)
        for pid in pids:
            if pid not in codes:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                codes[pid] = "timeout"
        report["exit_codes"] = [codes[pid] for pid in pids]
        print("REPORT " + json.dumps(report), flush=True)

    scenario("runtime")
    scenario("version")
    """
)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small model per format, and the predictions each must give on the same rows."""
    folder = tmp_path_factory.mktemp("fork-models")
    cancer = load_breast_cancer()
    x = cancer.data[:20]
    models: list[dict[str, Any]] = []

    def add(path: Path, fmt: str, expected: np.ndarray) -> None:
        models.append({"path": str(path), "format": fmt, "expected": expected.tolist()})

    rf = RandomForestClassifier(n_estimators=10, random_state=0).fit(cancer.data, cancer.target)
    joblib.dump(rf, folder / "rf.joblib")
    add(folder / "rf.joblib", "joblib", rf.predict(x))

    logreg = make_pipeline(StandardScaler(), LogisticRegression()).fit(cancer.data, cancer.target)
    skops.io.dump(logreg, folder / "lr.skops")
    add(folder / "lr.skops", "skops", logreg.predict(x))

    x32 = cancer.data.astype(np.float32)
    onnx_rf = RandomForestClassifier(n_estimators=10, random_state=0).fit(x32, cancer.target)
    (folder / "rf.onnx").write_bytes(to_onnx(onnx_rf, x32[:1]).SerializeToString())
    add(folder / "rf.onnx", "onnx", onnx_rf.predict(x32[:20]))

    # n_jobs=2: a model that, unpinned, would use an OpenMP pool inside each child.
    xgbc = xgb.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=2)
    xgbc.fit(cancer.data, cancer.target)
    joblib.dump(xgbc, folder / "xgb.joblib")
    add(folder / "xgb.joblib", "joblib", xgbc.predict(x))

    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 2},
        xgb.DMatrix(cancer.data, label=cancer.target),
        num_boost_round=10,
    )
    booster.save_model(folder / "booster.ubj")
    p = booster.predict(xgb.DMatrix(x))
    add(folder / "booster.ubj", "xgboost", (p >= 0.5).astype(int))

    _add_torch_and_lightgbm(folder, cancer.data, cancer.target, x, add)

    path = folder / "manifest.json"
    path.write_text(
        json.dumps(
            {
                "x": x.tolist(),
                "models": models,
                "children": CHILDREN,
                "timeout_s": TOTAL_TIMEOUT_S - 15,
            }
        )
    )
    return path


def _add_torch_and_lightgbm(
    folder: Path, data: np.ndarray, target: np.ndarray, x: np.ndarray, add: Any
) -> None:
    """TorchScript, torch.export, a LightGBM Booster and an LGBMClassifier (n_jobs=-1)."""
    import lightgbm as lgb
    import torch

    torch.manual_seed(0)
    scale = torch.tensor(1.0 / data.std(axis=0), dtype=torch.float32)
    net = torch.nn.Sequential(
        torch.nn.Linear(30, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2), torch.nn.Softmax(dim=1)
    ).eval()
    with torch.no_grad():
        net[0].weight.mul_(scale)
        expected = net(torch.from_numpy(x.astype(np.float32))).argmax(dim=1).numpy()
    torch.jit.script(net).save(str(folder / "net.pt"))
    add(folder / "net.pt", "torchscript", expected)
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (torch.zeros(4, 30),), dynamic_shapes={"input": {0: batch}})
    torch.export.save(program, str(folder / "net.pt2"))
    add(folder / "net.pt2", "torch_export", expected)

    booster = lgb.train(
        {"objective": "binary", "num_threads": 2, "verbose": -1},
        lgb.Dataset(data, label=target),
        num_boost_round=10,
    )
    booster.save_model(str(folder / "gbm.txt"))
    add(folder / "gbm.txt", "lightgbm", (booster.predict(x) >= 0.5).astype(int))
    clf = lgb.LGBMClassifier(n_estimators=10, n_jobs=-1, verbose=-1).fit(data, target)
    joblib.dump(clf, folder / "lgbm.joblib")
    add(folder / "lgbm.joblib", "joblib", clf.predict(x))


TemplateRun = tuple[dict[str, dict[str, Any]], str]  # reports by mode, the run's output


@pytest.fixture(scope="module")
def template_run(manifest: Path) -> TemplateRun:
    """Both scenarios' reports by mode, and the interpreter's output for failure messages."""
    proc = subprocess.run(
        [sys.executable, "-c", TEMPLATE_SCRIPT, str(manifest)],
        capture_output=True,
        text=True,
        timeout=2 * TOTAL_TIMEOUT_S,
    )
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    reports = [json.loads(ln.removeprefix("REPORT ")) for ln in lines]
    return {r["mode"]: r for r in reports}, output


def _run_template(template_run: TemplateRun, mode: str) -> dict[str, Any]:
    reports, output = template_run
    assert mode in reports, output
    report = reports[mode]
    assert report["exit_codes"] == [0] * CHILDREN, f"{report}\n{output}"
    return report


def test_runtime_template_children_load_and_predict(
    template_run: TemplateRun,
) -> None:
    """Runtime template: libraries imported, nothing loaded; each instance loads its model."""
    report = _run_template(template_run, "runtime")
    # Importing the loaders must not start anything (they import the libraries lazily).
    assert report["threads_after_coldbrew"] == report["threads_after_imports"]


def test_version_template_children_predict_preloaded_models(
    template_run: TemplateRun,
) -> None:
    """Version template: models loaded (no prediction) before the fork; instances predict."""
    report = _run_template(template_run, "version")
    # Loading must not start thread pools in the template (ORT, XGBoost, LightGBM and torch
    # pinned to 1), and neither may the warm-up prediction a version template makes.
    assert report["threads_after_load"] == report["threads_after_imports"]
    assert report["threads_after_warm_up"] == report["threads_after_imports"]


# Why the rules above matter: GNU OpenMP's worker pool does not survive fork(). A parent that
# ran one multi-threaded XGBoost prediction leaves children that hang forever on their first
# multi-threaded one. Bounded by a short deadline, after which the child is killed.
HANG_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    import numpy as np, xgboost as xgb
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    booster = xgb.train({"objective": "binary:logistic", "nthread": 2},
                        xgb.DMatrix(data.data, label=data.target), 5)
    booster.inplace_predict(data.data)  # the template "warms up": OpenMP pool started
    pid = os.fork()
    if pid == 0:
        booster.inplace_predict(np.tile(data.data, (20, 1)))
        os._exit(0)
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("RESULT exited", os.waitstatus_to_exitcode(status), flush=True)
            sys.exit(0)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    print("RESULT hung", flush=True)
    """
)


def test_openmp_pool_started_before_fork_hangs_children() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", HANG_SCRIPT, "4"], capture_output=True, text=True, timeout=60
    )
    assert "RESULT" in proc.stdout, proc.stderr
    if "RESULT exited" in proc.stdout:
        pytest.skip(f"this OpenMP runtime survives fork ({proc.stdout.strip()})")
    assert "RESULT hung" in proc.stdout


# --- what a version template inspects before it forks (coldbrew.runtime.forksafety) ---------

INSPECT_SCRIPT = textwrap.dedent(
    """
    import json, os, socket, subprocess, sys, threading, time
    from coldbrew.runtime import forksafety

    baseline = forksafety.snapshot()
    # What a handler module might do at import:
    threading.Thread(target=time.sleep, args=(30,), daemon=True, name="poller").start()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("127.0.0.1", 9))
    data = open(sys.argv[1])
    child = subprocess.Popen(["sleep", "30"])
    found = forksafety.inspect(baseline)
    child.kill()
    print("REPORT " + json.dumps({"found": found, "port": port, "child": child.pid,
                                  "client_port": client.getsockname()[1],
                                  "clean": forksafety.inspect(forksafety.snapshot())}))
    """
)


def test_inspection_describes_threads_sockets_files_and_children(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("1,2\n")
    proc = subprocess.run(
        [sys.executable, "-c", INSPECT_SCRIPT, str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    assert lines, proc.stderr
    report = json.loads(lines[0].removeprefix("REPORT "))
    found, port = report["found"], report["port"]
    assert "thread 'poller' started" in found
    assert f"listening socket on 127.0.0.1:{port} opened" in found
    assert f"socket to 127.0.0.1:{port} opened" in found  # the client end
    assert f"socket to 127.0.0.1:{report['client_port']} opened" in found  # the accepted end
    assert "UDP socket to 127.0.0.1:9 opened" in found
    assert f"file {data} opened" in found
    assert f"child process {report['child']} (sleep) started" in found
    assert report["clean"] == []  # nothing new since a fresh snapshot


@pytest.mark.parametrize(
    ("findings", "init", "hooks", "reason"),
    [
        ([], "auto", False, None),
        (
            ["socket to 127.0.0.1:5432 opened"],
            "auto",
            False,
            "socket to 127.0.0.1:5432 opened at import",
        ),
        (["socket to 127.0.0.1:5432 opened"], "auto", True, None),  # the hook reopens it
        (["thread 'poller' started"], "auto", True, "thread 'poller' started at import"),
        (["thread 'poller' started"], "shared", False, None),  # the user said so
        ([], "per-instance", False, 'init = "per-instance" in coldbrew.toml'),
        (
            ["a opened", "b opened", "c opened", "d opened", "e opened"],
            "auto",
            False,
            "a opened, b opened, c opened and 2 more at import",
        ),
    ],
)
def test_verdict(findings: list[str], init: str, hooks: bool, reason: str | None) -> None:
    from coldbrew.runtime.forksafety import verdict

    assert verdict(findings, init, hooks, "at import")[0] == reason


def test_addresses_from_proc_net() -> None:
    import socket

    from coldbrew.runtime.forksafety import _address

    assert _address("0100007F:1538", socket.AF_INET) == "127.0.0.1:5432"
    six = "00000000000000000000000001000000:1F90"
    assert _address(six, socket.AF_INET6) == "[::1]:8080"


# --- the runtime template's preload starts no thread ------------------------------------------


def _template_threads(
    preload: list[str], tmp_path: Path, env: dict[str, str], maps: list[str] | None = None
) -> int:
    import os

    from coldbrew.backends.local import TemplateServer

    server = TemplateServer(preload, tmp_path / "template.log", {"COLDBREW_SPARES": "0", **env})
    server.start()
    try:
        assert server.server is not None
        if maps is not None:  # the libraries it has loaded
            maps.append(Path(f"/proc/{server.server.pid}/maps").read_text())
        return len(os.listdir(f"/proc/{server.server.pid}/task"))
    finally:
        server.stop()


def test_runtime_template_preload_leaves_one_thread(tmp_path: Path) -> None:
    """The default preload starts no thread, except the one idle thread onnxruntime's own
    import starts (a timed wait inside its library, present since the first release; the
    version-template checks count it in their baseline)."""
    import re

    from coldbrew.settings import Settings

    # One template start: the preload logs every import that started threads, so "only
    # onnxruntime's, and nothing else since" is checked without a second start that leaves
    # onnxruntime out.
    preload = Settings().preload_modules
    maps: list[str] = []
    threads = _template_threads(preload, tmp_path, {}, maps)
    log = (tmp_path / "template.log").read_text()
    started = re.findall(r"importing (\S+) started (\d+) thread", log)
    assert started == ([("onnxruntime", "1")] if "onnxruntime" in preload else []), log
    assert 1 <= threads <= 1 + len(started)
    # skops.io imports torch when it can: not into the runtime template unless asked.
    assert "libtorch" not in maps[0]


FAKE_TORCH = "import threading, time\nthreading.Thread(target=time.sleep, args=(60,)).start()\n"
OPPORTUNIST = "try:\n    import torch\nexcept ImportError:\n    torch = None\n"


def test_preload_imports_thread_starters_only_when_asked(tmp_path: Path) -> None:
    """A preloaded library that imports torch when it can (as skops.io does) does not bring
    torch's threads into the template; naming torch in preload_modules still does."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(FAKE_TORCH)
    (tmp_path / "opportunist.py").write_text(OPPORTUNIST)
    env = {"PYTHONPATH": str(tmp_path)}
    assert _template_threads(["opportunist"], tmp_path, env) == 1
    assert _template_threads(["opportunist", "torch"], tmp_path, env) == 2
