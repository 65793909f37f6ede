"""Load: 500 concurrent clients for 30 s against one coldbrew on 127.0.0.1 (issue 12, item 9).

Not a benchmark of speed (bench/throughput.py is) but of holding up: a server with the
benchmark forest deployed takes ``--clients`` open connections sending invocations back to
back for ``--duration`` seconds; the script records the status histogram (and transport
errors), p50/p99 latency and the gateway's RSS before, right after and a few seconds after the
load. It starts its own server in a fresh home and stops it (and everything it started) when it
ends, however it ends.

The load generator is wrk (compiled, with ``load.lua`` counting statuses) when it is installed,
else asyncio + httpx with one connection per client (``--client httpx`` forces it)::

    python bench/load.py                      # 500 clients, 30 s, writes bench/results/load.json
    python bench/load.py --clients 50 --duration 5 --out /tmp/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Coldbrew, managed, train_forest, write_bundle

BENCH_DIR = Path(__file__).resolve().parent
LUA = BENCH_DIR / "load.lua"
CONFIG = "max_instances = 2\nconcurrency = 8\nmax_queue = 1000\nqueue_timeout_s = 10\n"


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1024 / 1024


def run_wrk(url: str, body: Path, clients: int, duration_s: int) -> dict[str, Any]:
    argv = ["wrk", "-t2", f"-c{clients}", f"-d{duration_s}s", "--timeout", "10s"]
    argv += ["-s", str(LUA), url]
    done = subprocess.run(
        argv,
        env={**os.environ, "BENCH_BODY": str(body)},
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=False,
    )
    found: dict[str, Any] = {"statuses": {}, "transport_errors": {}}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STATUS":
            found["statuses"][parts[1]] = int(parts[2])
        elif len(parts) == 3 and parts[0] == "ERRORS" and int(parts[2]):
            found["transport_errors"][parts[1]] = int(parts[2])
        elif len(parts) == 2 and parts[0] in ("P50_US", "P99_US", "REQUESTS", "DURATION_US"):
            found[parts[0].lower()] = float(parts[1])
    if "requests" not in found:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    return {
        "client": "wrk -t2",
        "statuses": found["statuses"],
        "transport_errors": found["transport_errors"],
        "requests": int(found["requests"]),
        "requests_per_s": found["requests"] / (found["duration_us"] / 1e6),
        "p50_ms": found["p50_us"] / 1000,
        "p99_ms": found["p99_us"] / 1000,
    }


async def _httpx_load(url: str, body: bytes, clients: int, duration_s: int) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"content-type": "application/json"}
    deadline = time.monotonic() + duration_s
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def one_client() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[str(response.status_code)] += 1

        started = time.monotonic()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.monotonic() - started
    latencies.sort()

    def pct(q: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

    return {
        "client": "asyncio + httpx",
        "statuses": dict(statuses),
        "transport_errors": dict(errors),
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--duration", type=int, default=30, help="seconds of load")
    parser.add_argument("--client", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "load.json")
    args = parser.parse_args()
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))

    work = Path(tempfile.mkdtemp(prefix="coldbrew-load-"))
    try:
        with managed(work) as procs:
            model = train_forest(work / "model")
            server = Coldbrew(procs, work / "home", env={"COLDBREW_LOG_LEVEL": "warning"})
            server.deploy("forest", write_bundle(work / "bundle", model, CONFIG))
            body = model.body()
            for _ in range(20):  # warm: instances up, first-call costs paid
                server.invoke("forest", body)
            gateway = server.proc.pid
            before = rss_mb(gateway)
            url = f"{server.url}/v1/functions/forest/invoke"
            print(f"load: {args.clients} clients for {args.duration} s on {url}", flush=True)
            if use_wrk:
                (work / "body.json").write_bytes(body)
                result = run_wrk(url, work / "body.json", args.clients, args.duration)
            else:
                result = asyncio.run(_httpx_load(url, body, args.clients, args.duration))
            after = rss_mb(gateway)
            time.sleep(5)
            settled = rss_mb(gateway)
            healthy = server.client.get("/healthz").status_code
            still = server.invoke("forest", body)["predictions"] == [model.expected]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "clients": args.clients,
        "duration_s": args.duration,
        **result,
        "gateway_rss_mb": {
            "before": round(before, 1),
            "after": round(after, 1),
            "after_5s": round(settled, 1),
        },
        "healthz_after": healthy,
        "correct_answer_after": still,
        "cpus": os.cpu_count(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    five = sum(n for code, n in result["statuses"].items() if re.fullmatch(r"5\d\d", code))
    if five or not still or healthy != 200:
        raise SystemExit(f"load: {five} server errors, healthz {healthy}, answer ok {still}")


if __name__ == "__main__":
    main()
