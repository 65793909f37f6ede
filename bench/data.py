"""What the data layer costs on the hot path (docs/DATA.md, numbers in docs/BENCHMARKS.md).

1. One cached feature lookup vs none: two functions with the same trivial handler, one with a
   ``[[features]]`` lookup whose key is always in the instance's local cache; ``wrk`` at one
   connection; the difference of the p50 latencies is what a hit adds. Then the two are
   interleaved request by request from one client (A B B A ...), which no drift of the machine
   can favour, recording the client's latency and the instance's own time
   (``x-coldbrew-duration-ms``: lookup plus handler).
2. The prediction log at rate 1.0 vs 0: the same handler with ``log_predictions = 1.0`` and
   ``0``; ``wrk`` at 64 connections; the ratio of requests per second.

Each pair runs in ABBA rounds (A B, B A, A B, ...) so the machine's drift hits both alike; per
round the B/A ratio (or B-A difference) is taken and the median of those is reported, beside
the medians of each side. Each turn also records the CPU time per invocation of the whole
server (the gateway and its instances, from /proc via psutil): CPU is what a feature costs, and
unlike latency it barely moves when a neighbour takes a core.

    python bench/data.py [--duration 3] [--rounds 6] [--pairs 1000] [--out bench/results/data.json]

About 90 s on two cores with the defaults. Read the medians of one run, never one turn.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import psutil
from common import Coldbrew, managed
from wrk import have_wrk, run_wrk

HANDLER = (
    "def handler(event, context):\n    return {'ok': 1, 'region': context.features.get('region')}\n"
)
FEATURE = """
[environment]
FEATURE_DB = "sqlite:///{db}"

[[features]]
name = "region"
sql = "select region from regions where cell = :cell"
key = "$.cell"
database = "FEATURE_DB"
cache = "local"
cache_ttl_s = 3600
"""
BASE = 'handler = "handler:handler"\nconcurrency = {concurrency}\nmax_instances = 2\n'


def bundle(root: Path, name: str, config: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(HANDLER)
    (folder / "coldbrew.toml").write_text(config)
    return folder


def feature_db(root: Path) -> Path:
    """A SQLite feature table the functions' uids can read (isolation on as root)."""
    root.chmod(0o755)
    path = root / "features.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table regions (cell text primary key, region text)")
        conn.execute("insert into regions values ('u4pru', 'fjord')")
    path.chmod(0o644)
    return path


def cpu_s(root: psutil.Process) -> dict[int, float]:
    """CPU seconds (user + system) of the server and every process under it, by pid."""
    out = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        out[proc.pid] = times.user + times.system
    return out


def turn(server: Coldbrew, name: str, body: Path, connections: int, seconds: float) -> dict:
    root = psutil.Process(server.proc.pid)
    before = cpu_s(root)
    result = run_wrk(f"{server.url}/v1/functions/{name}/invoke", body, connections, seconds)
    after = cpu_s(root)
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests against {name}")
    used = sum(after[pid] - before.get(pid, 0.0) for pid in after)
    return {**result.to_dict(), "cpu_us_per_call": used / max(1, result.requests) * 1e6}


def abba(
    server: Coldbrew, names: tuple[str, str], body: Path, connections: int, args: Any
) -> dict[str, Any]:
    """``args.rounds`` rounds, A then B in even rounds and B then A in odd ones."""
    a, b = names
    turns: dict[str, list[dict[str, Any]]] = {a: [], b: []}
    for name in names:  # one unrecorded warm-up turn each
        run_wrk(f"{server.url}/v1/functions/{name}/invoke", body, connections, 1)
    for r in range(args.rounds):
        for name in (a, b) if r % 2 == 0 else (b, a):
            turns[name].append(turn(server, name, body, connections, args.duration))
    pairs = list(zip(turns[a], turns[b], strict=True))
    return {
        a: summary(turns[a]),
        b: summary(turns[b]),
        "rps_ratio": statistics.median(y["requests_per_s"] / x["requests_per_s"] for x, y in pairs),
        "p50_added_ms": statistics.median(y["p50_ms"] - x["p50_ms"] for x, y in pairs),
        "cpu_added_us_per_call": statistics.median(
            y["cpu_us_per_call"] - x["cpu_us_per_call"] for x, y in pairs
        ),
        "cpu_ratio": statistics.median(
            y["cpu_us_per_call"] / x["cpu_us_per_call"] for x, y in pairs
        ),
        "turns": turns,
    }


def summary(turns: list[dict[str, Any]]) -> dict[str, float]:
    return {
        key: round(statistics.median(t[key] for t in turns), 3)
        for key in ("requests_per_s", "p50_ms", "p99_ms", "cpu_us_per_call")
    }


def interleaved(server: Coldbrew, names: tuple[str, str], body: bytes, pairs: int) -> dict:
    """Request-level ABBA from one keep-alive client: latency and instance duration."""
    import time

    seen: dict[str, dict[str, list[float]]] = {n: {"ms": [], "instance_ms": []} for n in names}
    headers = {"content-type": "application/json"}
    for r in range(pairs):
        for name in names if r % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            answer = server.client.post(
                f"/v1/functions/{name}/invoke", content=body, headers=headers
            )
            elapsed = (time.perf_counter() - started) * 1000
            answer.raise_for_status()
            seen[name]["ms"].append(elapsed)
            seen[name]["instance_ms"].append(float(answer.headers["x-coldbrew-duration-ms"]))
    a, b = names
    out: dict[str, Any] = {
        name: {key: round(statistics.median(v), 4) for key, v in values.items()}
        for name, values in seen.items()
    }
    for key in ("ms", "instance_ms"):
        diffs = [y - x for x, y in zip(seen[a][key], seen[b][key], strict=True)]
        out[f"added_{key}"] = round(statistics.median(diffs), 4)
    out["pairs"] = pairs
    return out


def lookup_hit_us(n: int = 100_000) -> float:
    """In process: the time of one ``Lookup.get`` served by the local cache (microseconds)."""
    import time

    from coldbrew.cache import LocalCache
    from coldbrew.runtime.config import FeatureConfig
    from coldbrew.runtime.features import Lookup

    class Rows:
        def query(self, sql: Any, params: dict[str, Any], timeout_s: float) -> dict[str, Any]:
            return {"region": "fjord", "rainfall": 2250.0, "elevation": 120.0}

    spec = FeatureConfig(
        name="region",
        sql="select * from r where cell = :cell",
        key="$.location.cell",
        database="DB",
    )
    lookup = Lookup(spec, "bench", LocalCache(), Rows())  # type: ignore[arg-type]
    lookup.prepare()
    event = {"location": {"cell": "u4pru"}}
    lookup.get(event)  # the miss that fills the cache
    started = time.perf_counter()
    for _ in range(n):
        lookup.get(event)
    return (time.perf_counter() - started) / n * 1e6


def prediction_log_us(root: Path, n: int = 20_000) -> dict[str, float]:
    """In process: the gateway's cost of logging one invocation (microseconds): ``offer`` on
    the event loop, then encoding + a batched insert on the writer's thread (SQLite)."""
    import time
    from types import SimpleNamespace

    from coldbrew.observe.predictions import PredictionLog
    from coldbrew.registry import Registry
    from coldbrew.registry.predictions import PredictionStore

    url = f"sqlite:///{root / 'plog.db'}"
    registry = Registry(url)
    registry.migrate()
    registry.close()
    store = PredictionStore(url)
    log = PredictionLog(store)
    config = SimpleNamespace(log_predictions=1.0, log_inputs="full", log_redact=[])
    version = SimpleNamespace(config=config)
    request = SimpleNamespace(payload=b'{"instances": [[1.0, 2.0, 3.0, 4.0]]}')
    outcomes = [
        SimpleNamespace(
            request_id=uuid.uuid4().hex,  # random, as real ids are: the index sees them so
            function_name="f",
            version=1,
            caller=None,
            wall_ms=1.5,
            duration_ms=1.0,
            error=None,
            body=b'{"predictions": [1]}',
        )
        for i in range(n)
    ]
    started = time.perf_counter()
    for outcome in outcomes:
        log.offer(request, version, outcome)
    offered = time.perf_counter()
    batch, log.pending = log.pending, []
    for start in range(0, n, 1000):
        log._write(batch[start : start + 1000])
    written = time.perf_counter()
    store.close()
    return {
        "offer_us": (offered - started) / n * 1e6,
        "encode_and_insert_us": (written - offered) / n * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--pairs", type=int, default=1000, help="interleaved request pairs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not have_wrk():
        sys.exit("wrk is needed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="coldbrew-bench-data-"))
    db = feature_db(work)
    body = work / "body.json"
    body.write_text(json.dumps({"cell": "u4pru"}))
    (work / "logs").mkdir()
    with managed(work / "logs") as procs:
        server = Coldbrew(procs, work / "home")
        server.deploy("plain", bundle(work, "plain", BASE.format(concurrency=1)))
        featured = BASE.format(concurrency=1) + FEATURE.format(db=db)
        server.deploy("feature", bundle(work, "feature", featured))
        for concurrency, rate in ((16, 0.0), (16, 1.0)):
            config = BASE.format(concurrency=concurrency) + f"log_predictions = {rate}\n"
            server.deploy(f"log{int(rate)}", bundle(work, f"log{int(rate)}", config))
        for name in ("plain", "feature", "log0", "log1"):
            for _ in range(20):  # warm: instances started, the key cached
                server.invoke(name, body.read_bytes())
        lookup = abba(server, ("plain", "feature"), body, 1, args)
        pairwise = interleaved(server, ("plain", "feature"), body.read_bytes(), args.pairs)
        log = abba(server, ("log0", "log1"), body, 64, args)
    hit_us = lookup_hit_us()
    plog = prediction_log_us(work)
    report = {
        "command": " ".join(["python", "bench/data.py", *sys.argv[1:]]),
        "lookup_hit_in_process_us": round(hit_us, 2),
        "prediction_log_in_process_us": {k: round(v, 2) for k, v in plog.items()},
        "cached_lookup_c1": lookup,
        "cached_lookup_interleaved": pairwise,
        "prediction_log_c64": log,
    }
    p, f = lookup["plain"], lookup["feature"]
    print(
        f"cached lookup, 1 connection: p50 {p['p50_ms']:.3f} vs {f['p50_ms']:.3f} ms, "
        f"added per round (median) {lookup['p50_added_ms']:+.3f} ms; CPU/call "
        f"{p['cpu_us_per_call']:.0f} vs {f['cpu_us_per_call']:.0f} us, added "
        f"{lookup['cpu_added_us_per_call']:+.0f} us"
    )
    print(
        f"cached lookup, interleaved by request ({pairwise['pairs']} pairs): client "
        f"{pairwise['plain']['ms']:.3f} vs {pairwise['feature']['ms']:.3f} ms (added "
        f"{pairwise['added_ms']:+.3f}); instance {pairwise['plain']['instance_ms']:.3f} vs "
        f"{pairwise['feature']['instance_ms']:.3f} ms (added {pairwise['added_instance_ms']:+.3f})"
    )
    print(f"a local-cache hit in process: {hit_us:.1f} us")
    z, o = log["log0"], log["log1"]
    print(
        f"prediction log 0 vs 1.0, 64 connections: {z['requests_per_s']:.0f} vs "
        f"{o['requests_per_s']:.0f} req/s, ratio per round (median) {log['rps_ratio']:.3f}; "
        f"CPU/call {z['cpu_us_per_call']:.0f} vs {o['cpu_us_per_call']:.0f} us "
        f"(ratio {log['cpu_ratio']:.3f})"
    )
    print(
        f"prediction log per invocation, in process: offer {plog['offer_us']:.1f} us on the "
        f"loop, {plog['encode_and_insert_us']:.1f} us on the writer thread"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
