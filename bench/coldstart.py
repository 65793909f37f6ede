"""The cost of a cold start, per tier of warmth, side by side in one run (issue 3).

For each model (the breast-cancer forest as joblib, the digits classifier as ONNX, an XGBoost
booster, a small PyTorch network as TorchScript, a LightGBM booster) and ``--repeats`` times
each:

  (a) toy path: a fresh ``python`` that imports the library, loads the model and predicts once;
  (b) coldbrew, runtime template: the first invocation of a freshly deployed version (a fork of
      the shared template, then the model load);
  (c) coldbrew, version template: after the instance scaled to zero (``idle_timeout_s = 0.3``)
      with the version template kept, the next invocation (a fork with the model loaded);
  (d) a warm coldbrew invocation, for reference;
  (p) per-instance init (``init = "per-instance"``, what a version whose import opens a socket or
      starts a thread gets): after the instance scaled to zero, the next invocation (a fork of
      the runtime template that imports and loads the version itself);
  (e) with ``--ray``: Ray Serve's first request after its deployment scaled to zero
      (``min_replicas=0``), forest only, ``--ray-repeats`` times.

(b)-(d) are measured by the client over HTTP (keep-alive connection, loopback) and also report
the server's ``x-coldbrew-init-duration-ms``. Medians and ratios; the machine is noisy.

    python bench/coldstart.py [--repeats 10] [--ray] [--out coldstart.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    HOST,
    BenchModel,
    Coldbrew,
    Processes,
    fmt,
    free_port,
    managed,
    median,
    prediction_of,
    ratio,
    train_digits_onnx,
    train_forest,
    train_xgboost,
    wait_http,
    write_bundle,
)

TOY = {
    "forest": "import joblib, sklearn.ensemble; m = joblib.load(P); print(int(m.predict([R])[0]))",
    "onnx": (
        "import numpy as np, onnxruntime as ort; s = ort.InferenceSession(P, "
        "providers=['CPUExecutionProvider']); x = np.asarray([R], dtype=np.float32); "
        "print(int(s.run(None, {s.get_inputs()[0].name: x})[0][0]))"
    ),
    "xgboost": (
        "import numpy as np, xgboost as xgb; b = xgb.Booster(model_file=P); "
        "print(int(b.inplace_predict(np.asarray([R]))[0] >= 0.5))"
    ),
    "torch": (
        "import torch; torch.set_num_threads(1); m = torch.jit.load(P); "
        "print(int(m(torch.tensor([R], dtype=torch.float32)).argmax(1)[0]))"
    ),
    "lightgbm": (
        "import numpy as np, lightgbm as lgb; b = lgb.Booster(model_file=P); "
        "print(int(b.predict(np.asarray([R]), num_threads=1)[0] >= 0.5))"
    ),
}


def train_torch(out_dir: Path) -> BenchModel:
    """A 30-64-2 softmax network on breast cancer (inputs standardised inside the network),
    trained for 200 full-batch steps and saved as TorchScript (model.pt)."""
    import torch
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target)
    torch.manual_seed(0)
    scale = torch.nn.Linear(30, 30)
    with torch.no_grad():  # a fixed standardisation: (x - mean) / std
        scale.weight.copy_(torch.diag(1 / x.std(0)))
        scale.bias.copy_(-x.mean(0) / x.std(0))
    scale.requires_grad_(False)
    net = torch.nn.Sequential(
        scale, torch.nn.Linear(30, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    model = torch.nn.Sequential(*net, torch.nn.Softmax(dim=1)).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.pt"
    torch.jit.script(model).save(str(path))
    row = [float(v) for v in data.data[0]]
    with torch.no_grad():
        expected = int(model(torch.tensor([row])).argmax(1)[0])
    return BenchModel("torch", path, row, expected)


def train_lightgbm(out_dir: Path) -> BenchModel:
    """A 100-tree LightGBM classifier on breast cancer, saved as a native booster (model.txt)."""
    import lightgbm
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    model = lightgbm.LGBMClassifier(n_estimators=100, n_jobs=1, random_state=0, verbose=-1)
    model.fit(data.data, data.target)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.txt"
    model.booster_.save_model(str(path))
    row = [float(v) for v in data.data[0]]
    return BenchModel("lightgbm", path, row, int(model.predict([row])[0]))


HEADERS = {"content-type": "application/json"}


def toy_path(model: BenchModel, repeats: int) -> list[float]:
    """(a) A fresh interpreter per request: what serving without templates costs."""
    import subprocess

    code = f"P = {str(model.path)!r}; R = {model.row!r}\n{TOY[model.name]}"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        )
        times.append((time.perf_counter() - start) * 1000)
        if done.returncode != 0 or int(done.stdout.strip()) != model.expected:
            raise RuntimeError(f"toy path for {model.name} failed: {done.stderr[-1000:]}")
    return times


def invoke(server: Coldbrew, name: str, model: BenchModel, want_cold: bool) -> tuple[float, float]:
    """Client latency (ms) and the server's init duration (ms, 0 when warm) of one call."""
    start = time.perf_counter()
    response = server.client.post(
        f"/v1/functions/{name}/invoke", content=model.body(), headers=HEADERS
    )
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200 or prediction_of(response.json()) != model.expected:
        raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
    cold = response.headers.get("x-coldbrew-cold-start") == "true"
    if cold != want_cold:
        raise RuntimeError(f"{name}: expected cold={want_cold}, got headers {response.headers}")
    return elapsed, float(response.headers.get("x-coldbrew-init-duration-ms", 0.0))


def wait_scaled_to_zero(server: Coldbrew, name: str, timeout_s: float = 30.0) -> None:
    """Until the version has no instance left but keeps its version template."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pools = server.pools(name)
        if (
            pools
            and all(not p["instances"] for p in pools)
            and any(p.get("version_template") for p in pools)
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(
        f"{name} did not scale to zero with a version template: {pools}\n{server.proc.tail()}"
    )


def coldbrew_tiers(
    server: Coldbrew, model: BenchModel, work: Path, repeats: int
) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {
        k: []
        for k in ("b_client", "b_init", "c_client", "c_init", "d_client", "p_client", "p_init")
    }
    for i in range(repeats):
        name = f"{model.name}-{i}"
        bundle = write_bundle(
            work / name,
            model,
            "idle_timeout_s = 0.3\nmax_instances = 1\n",
            nonce=f"{time.time_ns()}",
        )
        server.deploy(name, bundle)
        client_ms, init_ms = invoke(server, name, model, want_cold=True)
        samples["b_client"].append(client_ms)
        samples["b_init"].append(init_ms)
        try:
            wait_scaled_to_zero(server, name)
        except RuntimeError as exc:
            # Seen before a fix (a batched call's pool forgotten by the reaper while it waited
            # in the batch queue): if it ever happens again, say so and say why, and build the
            # template with one more cold start rather than lose the run.
            print(f"  {name}: retrying the version-template wait ({str(exc).splitlines()[0]})")
            print(_why_no_template(server, name))
            invoke(server, name, model, want_cold=True)
            wait_scaled_to_zero(server, name)
        client_ms, init_ms = invoke(server, name, model, want_cold=True)
        samples["c_client"].append(client_ms)
        samples["c_init"].append(init_ms)
        samples["d_client"].append(invoke(server, name, model, want_cold=False)[0])
        server.client.delete(f"/v1/functions/{name}")  # no instances pile up across repeats
        per_instance(server, model, work, i, samples)
    return samples


def per_instance(
    server: Coldbrew, model: BenchModel, work: Path, i: int, samples: dict[str, list[float]]
) -> None:
    """(p): the cold start of a version with per-instance init, after it scaled to zero."""
    name = f"{model.name}-pi-{i}"
    config = 'idle_timeout_s = 0.3\nmax_instances = 1\ninit = "per-instance"\n'
    server.deploy(name, write_bundle(work / name, model, config, nonce=f"{time.time_ns()}"))
    invoke(server, name, model, want_cold=True)
    deadline = time.monotonic() + 30
    while any(p["instances"] for p in server.pools(name)) and time.monotonic() < deadline:
        time.sleep(0.05)
    client_ms, init_ms = invoke(server, name, model, want_cold=True)
    samples["p_client"].append(client_ms)
    samples["p_init"].append(init_ms)
    server.client.delete(f"/v1/functions/{name}")


def _why_no_template(server: Coldbrew, name: str) -> str:
    """What the server and the function's own log said about it: for the rare lost template."""
    said = [line for line in server.proc.tail(20_000).splitlines() if name in line]
    log = server.home / "logs" / "functions" / f"{name}.log"
    own = log.read_text(errors="replace")[-2000:] if log.exists() else "(no function log)"
    return "    server: " + "\n    server: ".join(said[-10:]) + "\n    function log:\n" + own


def ray_scale_from_zero(
    procs: Processes, model: BenchModel, repeats: int, timeout_s: float, work: Path
) -> list[float]:
    """(e) Ray Serve with min_replicas=0: the first request after it scaled to zero."""
    port = free_port()
    status = work / "ray-replicas.txt"
    script = Path(__file__).resolve().parent / "contenders" / "ray_app.py"
    proc = procs.start(
        "ray-zero",
        [
            sys.executable,
            str(script),
            "--port",
            str(port),
            "--model",
            str(model.path),
            "--scale-to-zero",
            "--status-file",
            str(status),
        ],
    )
    url = f"http://{HOST}:{port}/predict"
    wait_http(url, proc, 240, "POST", model.body())
    times = []
    with httpx.Client(timeout=timeout_s) as client:
        for i in range(repeats):
            deadline = time.monotonic() + timeout_s
            while not (status.exists() and status.read_text().strip() == "0"):
                if time.monotonic() > deadline:
                    print(
                        f"  ray: did not scale to zero within {timeout_s:g} s; stopping at "
                        f"{len(times)} samples",
                        flush=True,
                    )
                    return times
                time.sleep(0.1)
            start = time.perf_counter()
            response = client.post(url, content=model.body(), headers=HEADERS)
            times.append((time.perf_counter() - start) * 1000)
            if prediction_of(response.json()) != model.expected:
                raise RuntimeError(f"ray answered {response.text[:300]}")
            print(f"  ray scale-from-zero {i + 1}/{repeats}: {times[-1]:.0f} ms", flush=True)
            time.sleep(1.0)  # let the status file see the replica before waiting for zero
    return times


def summarise(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| model | (a) fresh process | (b) runtime template: client / init | "
        "(c) version template: client / init | (d) warm | (p) per-instance init: client / "
        "init | (a)/(b) | (a)/(c) | (b)/(c) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        m = row["medians_ms"]
        lines.append(
            f"| {name} | {fmt(m['a'])} | {fmt(m['b_client'])} / {fmt(m['b_init'])} | "
            f"{fmt(m['c_client'])} / {fmt(m['c_init'])} | {fmt(m['d_client'], 2)} | "
            f"{fmt(m.get('p_client'))} / {fmt(m.get('p_init'))} | "
            f"{fmt(ratio(m['a'], m['b_client']))}x | {fmt(ratio(m['a'], m['c_client']))}x | "
            f"{fmt(ratio(m['b_client'], m['c_client']))}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--models", default="forest,onnx,xgboost,torch,lightgbm")
    parser.add_argument("--ray", action="store_true", help="also measure Ray Serve (slow)")
    parser.add_argument("--ray-repeats", type=int, default=5)
    parser.add_argument(
        "--ray-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for Ray to scale to zero, per sample",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    trainers = {
        "forest": train_forest,
        "onnx": train_digits_onnx,
        "xgboost": train_xgboost,
        "torch": train_torch,
        "lightgbm": train_lightgbm,
    }
    report: dict[str, Any] = {"command": " ".join(sys.argv), "repeats": args.repeats, "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as tmp:
        work = Path(tmp)
        models = [trainers[n](work / "models" / n) for n in args.models.split(",")]
        with managed(work) as procs:
            server = Coldbrew(procs, work / "home", env={"COLDBREW_REAP_INTERVAL_S": "0.05"})
            for model in models:
                print(f"{model.name}: toy path x{args.repeats}", flush=True)
                samples: dict[str, list[float]] = {"a": toy_path(model, args.repeats)}
                print(f"{model.name}: coldbrew tiers x{args.repeats}", flush=True)
                samples.update(coldbrew_tiers(server, model, work / "bundles", args.repeats))
                medians = {k: median(v) for k, v in samples.items()}
                report["models"][model.name] = {"medians_ms": medians, "samples_ms": samples}
            procs.stop(server.proc)
            if args.ray:
                if importlib.util.find_spec("ray") is None:
                    print("ray: skipped, ray is not installed (pip install -e '.[bench]')")
                else:
                    forest = next(m for m in models if m.name == "forest")
                    times = ray_scale_from_zero(
                        procs, forest, args.ray_repeats, args.ray_timeout, work
                    )
                    report["ray_scale_from_zero_ms"] = {"samples": times, "median": median(times)}
    print()
    print(summarise(report["models"]))
    ray_median = report.get("ray_scale_from_zero_ms", {}).get("median")
    if ray_median:
        forest_c = report["models"].get("forest", {}).get("medians_ms", {})
        print(
            f"\n(e) Ray Serve scale-from-zero, forest: median {ray_median:.0f} ms over "
            f"{len(report['ray_scale_from_zero_ms']['samples'])}; "
            f"/ coldbrew (b) {fmt(ratio(ray_median, forest_c.get('b_client')))}x, "
            f"/ coldbrew (c) {fmt(ratio(ray_median, forest_c.get('c_client')))}x"
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
        print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
