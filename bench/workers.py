"""Gateway workers 1 vs 2 on one port (``coldbrew serve --workers N``), in one run.

Two servers side by side: the single-machine default (one gateway, no Redis) and
``--workers 2`` (two gateway processes sharing the port, limits and slots in Redis). Each
serves a trivial handler (the gateway is the cost), the same handler with a ``rate_limit``
far above the load (so every call takes a token: in-process on one gateway, from Redis with
two) and the 100-tree breast-cancer forest; ``wrk`` loads them in turns (ABBA, so drift on
this shared machine hits both alike). Each turn records requests per second, the **gateway
processes' own CPU time per invocation** (user + system of the gateway or of both workers;
supervisor, templates and instances excluded), the **Redis commands per invocation** and,
with two workers, the busiest worker's share of the gateways' CPU (0.5 is an even split).

Redis is a private ``redis-server`` on a free port (so that the command counts are this
benchmark's alone), or ``--redis URL``.

    python bench/workers.py [--connections 16,64] [--rounds 2] [--duration 4]
        [--functions trivial,limited,forest] [--redis URL] [--out bench/results/workers.json]

Read the ratios and medians, never one turn's number.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    HOST,
    Processes,
    free_port,
    managed,
    pack,
    train_forest,
    wait_http,
    write_bundle,
)
from wrk import have_wrk, run_wrk

TRIVIAL = "def handler(event, context):\n    return {'ok': True}\n"
CONFIG = "max_instances = 4\n"
"""Room for two instances in each worker: max_instances is shared by the workers."""
LIMITED = "rate_limit = 100000\nburst = 100000\n"
"""Far above any load here: every call is admitted, and takes a token."""


class Side:
    """One ``coldbrew serve`` (with ``--workers N`` when N > 1) and its gateway processes."""

    def __init__(self, procs: Processes, home: Path, workers: int, env: dict[str, str]) -> None:
        self.workers = workers
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        argv = [sys.executable, "-m", "coldbrew.cli.main", "serve", "--host", HOST]
        argv += ["--port", str(self.port), "--home", str(home), "--workers", str(workers)]
        env = {"COLDBREW_LOG_LEVEL": "warning", **env}
        self.proc = procs.start(f"workers-{workers}", argv, env=env)
        wait_http(f"{self.url}/healthz", self.proc, timeout_s=180)
        self.client = httpx.Client(base_url=self.url, timeout=120)
        deadline = time.monotonic() + 180
        while len(self.gateways()) < workers:  # the second worker starts after the first
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers did not start:\n{self.proc.tail()}")
            time.sleep(0.5)

    def gateways(self) -> list[psutil.Process]:
        me = psutil.Process(self.proc.pid)
        if self.workers == 1:
            return [me]
        return [c for c in me.children() if "coldbrew.gateway.worker" in " ".join(c.cmdline())]

    def deploy(self, name: str, folder: Path) -> None:
        files = {"file": ("bundle.tar.gz", pack(folder))}
        response = self.client.post("/v1/functions", data={"name": name}, files=files)
        if response.status_code >= 300:
            raise RuntimeError(f"deploy of {name} failed: {response.text}")


def private_redis(procs: Processes, work: Path) -> str:
    """A redis-server of this benchmark's own (no persistence), its URL."""
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is needed (apt-get install redis-server), or pass --redis URL")
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly"]
    procs.start("redis", [*argv, "no", "--dir", str(work)])
    url = f"redis://{HOST}:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return url
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def redis_commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def turn(
    side: Side, url: str, body: Path, connections: int, seconds: float, counter: redis.Redis
) -> dict[str, Any]:
    gateways = side.gateways()
    before = [g.cpu_times() for g in gateways]
    commands = redis_commands(counter)
    result = run_wrk(url, body, connections, seconds)
    commands = redis_commands(counter) - commands - 2  # the two INFO calls count themselves
    after = [g.cpu_times() for g in gateways]
    per_gateway = [
        (a.user - b.user) + (a.system - b.system) for a, b in zip(after, before, strict=True)
    ]
    cpu_s = sum(per_gateway)
    calls = max(1, result.requests)
    return {
        "rps": result.requests_per_s,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "cpu_us_per_call": cpu_s / calls * 1e6,
        "redis_commands_per_call": commands / calls if side.workers > 1 else 0.0,
        "busiest_worker_share": max(per_gateway) / cpu_s if cpu_s else 1.0,
    }


def summarize(turns: list[dict[str, Any]]) -> dict[str, Any]:
    def med(field: str) -> float:
        return statistics.median(t[field] for t in turns)

    return {
        "rps_median": med("rps"),
        "cpu_us_per_call_median": med("cpu_us_per_call"),
        "redis_commands_per_call_median": med("redis_commands_per_call"),
        "busiest_worker_share_median": med("busiest_worker_share"),
        "errors": sum(t["errors"] for t in turns),
        "turns": turns,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--functions", default="trivial,limited,forest")
    parser.add_argument("--redis", default=None, help="a Redis to use instead of a private one")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not have_wrk():
        sys.exit("wrk is needed: apt-get install wrk")
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cb-workers-")))
        model = train_forest(work / "model")
        bodies = {"trivial": work / "trivial.json", "forest": work / "forest.json"}
        bodies["trivial"].write_bytes(b"{}")
        bodies["limited"] = bodies["trivial"]
        bodies["forest"].write_bytes(model.body())
        (work / "logs").mkdir()
        procs = stack.enter_context(managed(work / "logs"))
        redis_url = args.redis or private_redis(procs, work)
        counter = redis.Redis.from_url(redis_url)
        sides = {
            "1": Side(procs, work / "home-1", 1, {}),
            "2": Side(procs, work / "home-2", 2, {"COLDBREW_REDIS_URL": redis_url}),
        }
        for name, extra in (("trivial", ""), ("limited", LIMITED)):
            folder = work / name
            folder.mkdir()
            (folder / "handler.py").write_text(TRIVIAL)
            (folder / "coldbrew.toml").write_text(f"handler = 'handler:handler'\n{CONFIG}{extra}")
        forest = write_bundle(work / "forest", model, CONFIG)
        functions = args.functions.split(",")
        for side in sides.values():
            for function in functions:
                side.deploy(function, forest if function == "forest" else work / function)
        results: dict[str, Any] = {"runs": {}}
        for function in functions:
            for c in [int(c) for c in args.connections.split(",")]:
                turns: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
                for side in sides.values():  # warm-up: instances in every worker
                    run_wrk(f"{side.url}/v1/functions/{function}/invoke", bodies[function], c, 2)
                for r in range(args.rounds):
                    for label in ("1", "2") if r % 2 == 0 else ("2", "1"):
                        url = f"{sides[label].url}/v1/functions/{function}/invoke"
                        turns[label].append(
                            turn(sides[label], url, bodies[function], c, args.duration, counter)
                        )
                        time.sleep(0.5)
                one, two = summarize(turns["1"]), summarize(turns["2"])
                rps = two["rps_median"] / one["rps_median"]
                cpu = two["cpu_us_per_call_median"] / one["cpu_us_per_call_median"]
                results["runs"][f"{function}-c{c}"] = {
                    "1": one,
                    "2": two,
                    "rps_ratio": rps,
                    "cpu_ratio": cpu,
                }
                print(
                    f"{function:8} c={c:>3}  req/s 1 worker {one['rps_median']:6.0f}  2 workers"
                    f" {two['rps_median']:6.0f}  ratio {rps:.2f}   gateway CPU/call"
                    f" {one['cpu_us_per_call_median']:5.0f} us vs"
                    f" {two['cpu_us_per_call_median']:5.0f} us  ratio {cpu:.2f}   Redis cmds/call"
                    f" {two['redis_commands_per_call_median']:.3f}  busiest worker"
                    f" {two['busiest_worker_share_median']:.2f}"
                    f"   errors {one['errors']}/{two['errors']}",
                    flush=True,
                )
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
