"""What a weighted alias and a 100 % shadow cost the primary path, on one server.

One coldbrew serves the 100-tree forest as versions 1 and 2 (same model, distinct versions)
behind four aliases: ``plain`` (version 1); ``drawn`` (version 1 with 1e-9 to version 2: every
invocation takes the weighted path and its draw, yet all land on one pool, so this is the
split's own cost); ``canary`` (version 1 with 25 % to version 2: two pools share the traffic,
so batches are smaller and twice the instances compete for the cores); ``shadowed``
(version 1, every invocation copied to version 2 by a shadow). ``wrk`` loads the
aliases in turns (rotating order, so drift on this shared machine hits all alike); each turn
records requests per second, p50/p99 and the gateway process's own CPU time per invocation.

    python bench/split.py [--connections 16,64] [--rounds 4] [--duration 4]
        [--out bench/results/split.json]

The shadow's copies also run on this machine: its ratio is the whole cost of shadowing here,
gateway and instances, not only the primary path's bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Coldbrew, managed, prediction_of, train_forest, write_bundle
from wrk import have_wrk, run_wrk

ALIASES = ("plain", "drawn", "canary", "shadowed")


def turn(server: Coldbrew, url: str, body: Path, connections: int, seconds: float) -> dict:
    gateway = psutil.Process(server.proc.pid)
    before = gateway.cpu_times()
    result = run_wrk(url, body, connections, seconds)
    after = gateway.cpu_times()
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests against {url}")
    cpu_s = (after.user - before.user) + (after.system - before.system)
    return {
        "rps": result.requests_per_s,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "cpu_us_per_call": cpu_s / max(1, result.requests) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not have_wrk():
        sys.exit("wrk is needed: apt-get install wrk")
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cb-split-")))
        model = train_forest(work)
        body = work / "body.json"
        body.write_bytes(model.body())
        (work / "logs").mkdir()
        procs = stack.enter_context(managed(work / "logs"))
        server = Coldbrew(procs, work / "home", "cb-split")
        config = 'max_instances = 2\n\n[batching]\nmode = "auto"\n'
        for n in (1, 2):
            server.deploy("forest", write_bundle(work / f"v{n}", model, config, nonce=str(n)))
        put = server.client.put
        put("/v1/functions/forest/aliases/plain", json={"version": 1}).raise_for_status()
        canary = {"version": 1, "weights": {"2": 0.25}}
        put("/v1/functions/forest/aliases/canary", json=canary).raise_for_status()
        drawn = {"version": 1, "weights": {"2": 1e-9}}
        put("/v1/functions/forest/aliases/drawn", json=drawn).raise_for_status()
        put("/v1/functions/forest/aliases/shadowed", json={"version": 1}).raise_for_status()
        shadow = {"version": 2, "alias": "shadowed", "percent": 100}
        put("/v1/functions/forest/shadow", json=shadow).raise_for_status()
        urls = {a: f"{server.url}/v1/functions/forest:{a}/invoke" for a in ALIASES}
        for alias in ALIASES:
            assert prediction_of(server.invoke(f"forest:{alias}", model.body())) == model.expected
        results: dict[str, Any] = {"runs": {}}
        for c in (int(x) for x in args.connections.split(",")):
            turns: dict[str, list[dict]] = {a: [] for a in ALIASES}
            for alias in ALIASES:  # warm-up turn each, not recorded
                run_wrk(urls[alias], body, c, 2)
            for r in range(args.rounds):
                order = ALIASES[r % len(ALIASES) :] + ALIASES[: r % len(ALIASES)]
                for alias in order:
                    turns[alias].append(turn(server, urls[alias], body, c, args.duration))
                    time.sleep(0.5)
            summary: dict[str, Any] = {
                a: {
                    "rps_median": statistics.median(t["rps"] for t in ts),
                    "p99_ms_median": statistics.median(t["p99_ms"] for t in ts),
                    "cpu_us_per_call_median": statistics.median(t["cpu_us_per_call"] for t in ts),
                    "turns": ts,
                }
                for a, ts in turns.items()
            }
            plain = summary["plain"]
            line = [f"c={c:>3}  plain {plain['rps_median']:7.0f} req/s"]
            for alias in ALIASES[1:]:
                ratio = summary[alias]["rps_median"] / plain["rps_median"]
                cpu = summary[alias]["cpu_us_per_call_median"] / plain["cpu_us_per_call_median"]
                summary[f"{alias}_rps_ratio"], summary[f"{alias}_cpu_ratio"] = ratio, cpu
                line.append(
                    f"{alias} {summary[alias]['rps_median']:7.0f} ({ratio:.3f}, cpu {cpu:.3f})"
                )
            print("  ".join(line))
            results["runs"][str(c)] = summary
        shadow_state = server.client.get("/v1/functions/forest/shadow").json()["shadows"][0]
        results["shadow"] = {k: v for k, v in shadow_state.items() if not isinstance(v, list)}
        print("shadow:", {k: shadow_state[k] for k in ("mirrored", "dropped", "agreement_rate")})
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
