"""Throughput of coldbrew and its peers, side by side in one run (issue 4).

Every contender serves the same 100-tree breast-cancer forest (trained once here) and gets the
same body, one row ``{"instances": [[...30 floats...]]}``, from ``wrk`` at 1, 16 and 64
connections. Each contender is started, checked for the right prediction, warmed up, loaded, and
stopped before the next one starts, so they never compete for the two cores. Peers whose library
is absent are skipped with a message.

    python bench/throughput.py [--duration 10] [--only coldbrew-auto,fastapi] [--out r.json]

The machine is shared and noisy: read the ratios between contenders of one run, not the
absolute numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    prediction_of,
    ratio,
    train_forest,
    wait_http,
    write_bundle,
)
from wrk import WrkResult, have_wrk, run_wrk

CONTENDERS_DIR = Path(__file__).resolve().parent / "contenders"
COLDBREW_BATCHING = "coldbrew-auto"


@dataclass
class Context:
    procs: Processes
    model: BenchModel
    work: Path
    workers: int


Starter = Callable[[Context], str]
"""Starts a contender and returns the URL that takes the benchmark's POST."""


def start_coldbrew(mode: str) -> Starter:
    def start(ctx: Context) -> str:
        server = Coldbrew(ctx.procs, ctx.work / f"home-{mode}", name=f"coldbrew-{mode}")
        config = f'max_instances = {ctx.workers}\n\n[batching]\nmode = "{mode}"\n'
        server.deploy("forest", write_bundle(ctx.work / f"bundle-{mode}", ctx.model, config))
        return f"{server.url}/v1/functions/forest/invoke"

    return start


def start_peer(
    ctx: Context,
    name: str,
    argv: list[str],
    port: int,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> str:
    """Start a peer from ``bench/contenders/`` and wait until its /predict answers."""
    proc = ctx.procs.start(name, argv, cwd=CONTENDERS_DIR, env=env)
    url = f"http://{HOST}:{port}/predict"
    wait_http(url, proc, timeout_s, "POST", ctx.model.body())
    return url


def start_fastapi(one_process: bool = False) -> Starter:
    """The plain app: ``--workers`` processes like every contender, or one process, as
    ``uvicorn app:app`` runs it by default."""

    def start(ctx: Context) -> str:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "fastapi_app:app",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1" if one_process else str(ctx.workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        name = "fastapi-1" if one_process else "fastapi"
        env = {"BENCH_MODEL": str(ctx.model.path)}
        return start_peer(ctx, name, argv, port, timeout_s=120, env=env)

    return start


def start_ray(batch: bool) -> Starter:
    def start(ctx: Context) -> str:
        port = free_port()
        argv = [
            sys.executable,
            str(CONTENDERS_DIR / "ray_app.py"),
            "--port",
            str(port),
            "--model",
            str(ctx.model.path),
            "--replicas",
            str(ctx.workers),
        ]
        name = f"ray-{'batch' if batch else 'plain'}"
        return start_peer(ctx, name, argv + (["--batch"] if batch else []), port, timeout_s=240)

    return start


def start_bento(service: str) -> Starter:
    def start(ctx: Context) -> str:
        port = free_port()
        bentoml = str(Path(sys.executable).parent / "bentoml")
        argv = [bentoml, "serve", f"bento_service:{service}", "--host", HOST, "--port", str(port)]
        env = {
            "BENCH_MODEL": str(ctx.model.path),
            "BENCH_WORKERS": str(ctx.workers),
            "BENTOML_DO_NOT_TRACK": "true",
        }
        return start_peer(ctx, f"bentoml-{service.lower()}", argv, port, timeout_s=240, env=env)

    return start


# name -> (library it needs, label, starter)
CONTENDERS: dict[str, tuple[str | None, str, Starter]] = {
    "coldbrew-off": (None, "coldbrew, batching off", start_coldbrew("off")),
    COLDBREW_BATCHING: (None, "coldbrew, batching auto", start_coldbrew("auto")),
    "fastapi": ("fastapi", "FastAPI/uvicorn, in-process", start_fastapi()),
    "fastapi-1": ("fastapi", "FastAPI/uvicorn, one process", start_fastapi(one_process=True)),
    "ray": ("ray", "Ray Serve", start_ray(False)),
    "ray-batch": ("ray", "Ray Serve @serve.batch", start_ray(True)),
    "bentoml": ("bentoml", "BentoML", start_bento("Plain")),
    "bentoml-batch": ("bentoml", "BentoML adaptive batching", start_bento("Batched")),
}


def in_process_predict_ms(model: BenchModel, repeats: int = 300) -> dict[str, float]:
    """The model's own cost, in this process: median ``predict_proba`` of one row and of 64, and
    of the same forest through coldbrew's joblib-free loop (``coldbrew.runtime.forests``), which
    is what a coldbrew instance runs: the floor for its latency at 1 connection."""
    import joblib
    import numpy as np

    from coldbrew.runtime.forests import sequential_predict_proba

    forest = joblib.load(model.path)
    sequential = sequential_predict_proba(forest)
    assert sequential is not None
    out: dict[str, float] = {}
    for label, predict in (("predict", forest.predict_proba), ("sequential", sequential)):
        for rows in (1, 64):
            matrix = np.asarray([model.row] * rows, dtype=np.float64)
            predict(matrix)
            times = []
            for _ in range(repeats if rows == 1 else repeats // 5):
                start = time.perf_counter()
                predict(matrix)
                times.append((time.perf_counter() - start) * 1000)
            out[f"{label}_{rows}_row_ms"] = statistics.median(times)
    return out


def verify(url: str, model: BenchModel) -> None:
    """Refuse to load a contender that answers wrongly: the load would measure nothing."""
    response = httpx.post(
        url, content=model.body(), headers={"content-type": "application/json"}, timeout=30
    )
    got = prediction_of(response.json()) if response.status_code == 200 else None
    if got != model.expected:
        raise RuntimeError(
            f"{url} answered {response.status_code} {response.text[:300]}; "
            f"expected prediction {model.expected}"
        )


def run_contender(
    name: str, ctx: Context, args: argparse.Namespace, body_file: Path
) -> dict[str, Any]:
    library, label, start = CONTENDERS[name]
    if library and importlib.util.find_spec(library) is None:
        message = f"skipped: {library} is not installed (pip install -e '.[bench]')"
        print(f"{label}: {message}", flush=True)
        return {"label": label, "skipped": message}
    print(f"{label}: starting", flush=True)
    began = time.monotonic()
    try:
        url = start(ctx)
        verify(url, ctx.model)
        print(f"{label}: ready in {time.monotonic() - began:.1f} s, answer verified", flush=True)
        run_wrk(url, body_file, 16, args.warmup)
        levels: list[WrkResult] = []
        for connections in args.connections:
            result = run_wrk(url, body_file, connections, args.duration)
            levels.append(result)
            print(
                f"  c={connections}: {result.requests_per_s:,.0f} req/s, p50 "
                f"{fmt(result.p50_ms, 2)} ms, p99 {fmt(result.p99_ms, 2)} ms, "
                f"errors {result.errors}",
                flush=True,
            )
        verify(url, ctx.model)
    finally:
        ctx.procs.stop_all()
    return {"label": label, "url": url, "levels": [r.to_dict() for r in levels]}


def table(results: dict[str, dict[str, Any]], connections: list[int]) -> str:
    head = (
        "| contender | "
        + " | ".join(f"c={c} req/s | c={c} p50 ms | c={c} p99 ms" for c in connections)
        + " |"
    )
    lines = [head, "|---|" + "---:|" * (3 * len(connections))]
    for result in results.values():
        if "levels" not in result:
            lines.append(f"| {result['label']} | {result.get('skipped', 'failed')} |")
            continue
        cells = []
        for level in result["levels"]:
            errors = f" ({level['errors']} errors)" if level["errors"] else ""
            cells += [
                f"{level['requests_per_s']:,.0f}{errors}",
                fmt(level["p50_ms"], 2),
                fmt(level["p99_ms"], 2),
            ]
        lines.append(f"| {result['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(results: dict[str, dict[str, Any]], connections: list[int]) -> dict[str, Any]:
    """Requests/s of coldbrew with batching divided by each other contender's, per level."""
    ours = results.get(COLDBREW_BATCHING, {}).get("levels")
    if not ours:
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for name, result in results.items():
        if name == COLDBREW_BATCHING or "levels" not in result:
            continue
        out[name] = {
            str(c): ratio(mine["requests_per_s"], theirs["requests_per_s"])
            for c, mine, theirs in zip(connections, ours, result["levels"], strict=True)
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up load")
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument(
        "--workers", type=int, default=2, help="instances / workers / replicas for every contender"
    )
    parser.add_argument("--only", default="", help="comma-separated contender names")
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    if not have_wrk():
        sys.exit("wrk is not installed (apt-get install wrk)")
    names = [n for n in args.only.split(",") if n] or list(CONTENDERS)
    unknown = set(names) - set(CONTENDERS)
    if unknown:
        sys.exit(f"unknown contenders {sorted(unknown)}; known: {', '.join(CONTENDERS)}")

    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        work = Path(tmp)
        model = train_forest(work / "model")
        body_file = work / "body.json"
        body_file.write_bytes(model.body())
        predict = in_process_predict_ms(model)
        print(
            f"in-process predict_proba: 1 row {predict['predict_1_row_ms']:.2f} ms, "
            f"64 rows {predict['predict_64_row_ms']:.2f} ms; coldbrew's joblib-free forest loop: "
            f"1 row {predict['sequential_1_row_ms']:.2f} ms, "
            f"64 rows {predict['sequential_64_row_ms']:.2f} ms",
            flush=True,
        )
        results: dict[str, dict[str, Any]] = {}
        with managed(work) as procs:
            ctx = Context(procs, model, work, args.workers)
            for name in names:
                try:
                    results[name] = run_contender(name, ctx, args, body_file)
                except (RuntimeError, httpx.HTTPError, OSError) as exc:
                    print(f"{name}: FAILED: {exc}", flush=True)
                    results[name] = {"label": CONTENDERS[name][1], "failed": str(exc)[:2000]}
    report = {
        "command": " ".join(sys.argv),
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        "duration_s": args.duration,
        "workers": args.workers,
        "in_process": predict,
        "results": results,
        "ratios_coldbrew_auto_over": ratios(results, args.connections),
    }
    print()
    print(table(results, args.connections))
    print()
    for name, by_level in report["ratios_coldbrew_auto_over"].items():
        cells = ", ".join(f"c={c}: {fmt(v, 2)}x" for c, v in by_level.items())
        print(f"coldbrew-auto / {name}: {cells}")
    off = results.get("coldbrew-off", {}).get("levels")
    if off and off[0]["p50_ms"] is not None:
        over = off[0]["p50_ms"] - predict["predict_1_row_ms"]
        hop = off[0]["p50_ms"] - predict["sequential_1_row_ms"]
        print(
            f"batching off, c=1: p50 is {over:.2f} ms above the in-process predict_proba, "
            f"{hop:.2f} ms above the same loop in-process (what the platform adds)"
        )
        report["batching_off_c1_overhead_ms"] = over
        report["batching_off_c1_platform_ms"] = hop
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
        print(f"results written to {args.out}")


def _cpus() -> int | None:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
