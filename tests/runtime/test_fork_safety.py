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

# Runs in a fresh interpreter: argv[1] = manifest JSON, argv[2] = "runtime" (children load
# the models) or "version" (the parent loads them, children only predict).
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
    from coldbrew.runtime.loaders import load_model

    manifest = json.load(open(sys.argv[1]))
    mode = sys.argv[2]
    x = np.asarray(manifest["x"])
    report = {"threads_after_imports": threads_after_imports, "threads_after_coldbrew":
              os_threads()}

    def load_all():
        return {m["path"]: load_model(m["path"], m["format"]) for m in manifest["models"]}

    preloaded = load_all() if mode == "version" else None
    report["threads_after_load"] = os_threads()

    def child():
        models = preloaded if preloaded is not None else load_all()
        for m in manifest["models"]:
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


def _run_template(manifest: Path, mode: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", TEMPLATE_SCRIPT, str(manifest), mode],
        capture_output=True,
        text=True,
        timeout=TOTAL_TIMEOUT_S,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report: dict[str, Any] = json.loads(lines[-1].removeprefix("REPORT "))
    assert report["exit_codes"] == [0] * CHILDREN, f"{report}\nstdout:\n{proc.stdout}"
    return report


def test_runtime_template_children_load_and_predict(manifest: Path) -> None:
    """Runtime template: libraries imported, nothing loaded; each instance loads its model."""
    report = _run_template(manifest, "runtime")
    # Importing the loaders must not start anything (they import the libraries lazily).
    assert report["threads_after_coldbrew"] == report["threads_after_imports"]


def test_version_template_children_predict_preloaded_models(manifest: Path) -> None:
    """Version template: models loaded (no prediction) before the fork; instances predict."""
    report = _run_template(manifest, "version")
    # Loading must not start thread pools in the template (ORT and XGBoost pinned to 1).
    assert report["threads_after_load"] == report["threads_after_imports"]


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
