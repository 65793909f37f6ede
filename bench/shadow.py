"""What a 100 % shadow costs the primary path, on one server, contenders side by side.

One coldbrew serves the 100-tree forest as versions 1, 2 and 3 (same model, distinct
versions) behind five aliases of version 1: ``plain`` (no shadow); ``again`` (no shadow
either: the A/A pair, which shows how far two identical turns differ on this machine); ``low``
(every invocation offered to version 2 by a shadow at the default low priority); ``normal``
(every invocation offered to version 3 by a shadow at normal priority, the candidate's CPU
competing with the primary's); ``burner`` (no shadow, while a process outside coldbrew runs the
same forest's ``predict_proba`` in a loop under ``SCHED_IDLE``: the floor, what any work at
idle priority on the other cores costs the primary on this machine, with no gateway part).
``wrk`` loads the aliases in turns, the order rotating each round and reversed every other
round, so drift on this shared machine hits all alike and no contender always follows the same
one (what a shadowed turn leaves running would be charged to the next turn). Each turn
records, for the primary: requests per second, p99, the gateway process's CPU per call; for
the shadow: copies mirrored and dropped, the CPU the candidate's instances (or the burner)
used, and its share of all the CPU this server's processes used in the turn (a ratio within
one turn, which the machine's drift moves less than req/s). A contender's ratio is the median
over rounds of its req/s over the ``plain`` turn of the same round, with the interquartile
range of those ratios.

    python bench/shadow.py [--connections 1,16,64] [--rounds 6] [--duration 3]
        [--contenders plain,again,low,normal,burner] [--out bench/results/shadow.json]

At 1 connection the machine has a core to spare and the copies use it; at 16 and 64 the
primary alone keeps both cores busy (docs/DELIVERY.md, "What a shadow costs the primary").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Coldbrew, managed, prediction_of, train_forest, write_bundle
from wrk import have_wrk, run_wrk

CONTENDERS = ("plain", "again", "low", "normal", "burner")
BURNER = """
import os, sys, joblib, numpy as np
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
model = joblib.load(sys.argv[1])
row = np.array([[float(v) for v in sys.argv[2].split(",")]])
while True:
    model.predict_proba(row)
"""
"""The ``burner`` turn's outside process: the candidate's work without coldbrew."""
CANDIDATE = {"low": 2, "normal": 3}


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def instance_pids(server: Coldbrew, version: int) -> list[int]:
    return [
        i["pid"]
        for pool in server.pools("forest")
        if pool["version"] == version
        for i in pool["instances"]
        if i.get("pid")
    ]


def shadow_counts(server: Coldbrew, alias: str) -> tuple[int, int]:
    for shadow in server.client.get("/v1/functions/forest/shadow").json()["shadows"]:
        if shadow["alias"] == alias:
            return shadow["mirrored"], shadow["dropped"]
    return 0, 0


def start_burner(model: Any) -> psutil.Popen:
    row = ",".join(str(v) for v in model.row)
    burner = psutil.Popen([sys.executable, "-c", BURNER, str(model.path), row])
    time.sleep(1.0)  # imported and looping before the turn starts
    return burner


def turn(
    server: Coldbrew, contender: str, body: Path, connections: int, seconds: float, model: Any
) -> dict:
    url = f"{server.url}/v1/functions/forest:{contender}/invoke"
    burner = start_burner(model) if contender == "burner" else None
    gateway = psutil.Process(server.proc.pid)
    candidate = CANDIDATE.get(contender)
    pids = instance_pids(server, candidate) if candidate else []
    primary = instance_pids(server, 1)
    g0, c0, p0 = gateway.cpu_times(), cpu_s(pids), cpu_s(primary)
    m0, d0 = shadow_counts(server, contender) if candidate else (0, 0)
    b0 = cpu_s([burner.pid]) if burner else 0.0
    try:
        result = run_wrk(url, body, connections, seconds)
    finally:
        b1 = cpu_s([burner.pid]) if burner else 0.0
        if burner:
            burner.kill()
            burner.wait()
    g1, c1, p1 = gateway.cpu_times(), cpu_s(pids), cpu_s(primary)
    c0, c1 = (0.0, b1 - b0) if burner else (c0, c1)  # the burner stands in for a candidate
    if candidate:
        time.sleep(0.3)  # copies still running finish into this turn's counts
    m1, d1 = shadow_counts(server, contender) if candidate else (0, 0)
    calls = max(1, result.requests)
    gateway_s = (g1.user - g0.user) + (g1.system - g0.system)
    offered = (m1 - m0) + (d1 - d0)
    ours = gateway_s + (p1 - p0) + (c1 - c0)  # CPU of this server's processes in the turn
    return {
        "rps": result.requests_per_s,
        "errors": result.errors,  # non-2xx (a throttle when the queue is full) and socket errors
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "gateway_us_per_call": gateway_s / calls * 1e6,
        "candidate_cpu_s": c1 - c0,
        "primary_cpu_s": p1 - p0,
        "gateway_cpu_s": gateway_s,
        "candidate_cpu_share": (c1 - c0) / ours if ours else None,
        "mirrored": m1 - m0,
        "dropped": d1 - d0,
        "mirrored_share": (m1 - m0) / offered if offered else None,
    }


def summarise(turns: dict[str, list[dict]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    plain = turns["plain"]
    for contender, ts in turns.items():
        entry: dict[str, Any] = {
            "rps_median": statistics.median(t["rps"] for t in ts),
            "errors": sum(t["errors"] for t in ts),
            "p99_ms_median": statistics.median(t["p99_ms"] or 0 for t in ts),
            "gateway_us_per_call_median": statistics.median(t["gateway_us_per_call"] for t in ts),
            "turns": ts,
        }
        if contender != "plain":
            ratios = sorted(t["rps"] / p["rps"] for t, p in zip(ts, plain, strict=True))
            entry["rps_ratio_median"] = statistics.median(ratios)
            quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
            entry["rps_ratio_iqr"] = [quartiles[0], quartiles[2]]
            entry["gateway_ratio_median"] = statistics.median(
                t["gateway_us_per_call"] / p["gateway_us_per_call"]
                for t, p in zip(ts, plain, strict=True)
            )
            shares = [t["mirrored_share"] for t in ts if t["mirrored_share"] is not None]
            entry["mirrored_share_median"] = statistics.median(shares) if shares else None
            entry["candidate_cpu_s_median"] = statistics.median(t["candidate_cpu_s"] for t in ts)
            entry["candidate_cpu_share_median"] = statistics.median(
                t["candidate_cpu_share"] or 0 for t in ts
            )
            entry["mirrored_median"] = statistics.median(t["mirrored"] for t in ts)
        out[contender] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="plain is always run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    chosen = ["plain"] + [c for c in args.contenders.split(",") if c in CONTENDERS and c != "plain"]
    if not have_wrk():
        sys.exit("wrk is needed: apt-get install wrk")
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cb-shadow-")))
        model = train_forest(work)
        body = work / "body.json"
        body.write_bytes(model.body())
        (work / "logs").mkdir()
        procs = stack.enter_context(managed(work / "logs"))
        server = Coldbrew(procs, work / "home", "cb-shadow")
        config = 'max_instances = 2\n\n[batching]\nmode = "auto"\n'
        for n in (1, 2, 3):
            server.deploy("forest", write_bundle(work / f"v{n}", model, config, nonce=str(n)))
        put = server.client.put
        contenders = chosen
        for contender in CONTENDERS:
            put(f"/v1/functions/forest/aliases/{contender}", json={"version": 1}).raise_for_status()
        for contender, version in CANDIDATE.items():
            if contender not in contenders:
                continue
            shadow = {"version": version, "alias": contender, "percent": 100}
            shadow["priority"] = contender
            answer = put("/v1/functions/forest/shadow", json=shadow)
            answer.raise_for_status()
            mine = [s for s in answer.json()["shadows"] if s["alias"] == contender]
            if mine[0].get("priority", "normal") != contender:
                print(f"this server has no priority={contender} shadows: left out", flush=True)
                server.client.delete("/v1/functions/forest/shadow", params={"alias": contender})
                contenders.remove(contender)
        for contender in contenders:
            got = server.invoke(f"forest:{contender}", model.body())
            assert prediction_of(got) == model.expected
        results: dict[str, Any] = {"runs": {}}
        for c in (int(x) for x in args.connections.split(",")):
            turns: dict[str, list[dict]] = {a: [] for a in contenders}
            for contender in contenders:  # warm-up turn each (instances started), not recorded
                run_wrk(f"{server.url}/v1/functions/forest:{contender}/invoke", body, c, 2)
            for r in range(args.rounds):
                k = r % len(contenders)
                order = contenders[k:] + contenders[:k]
                if r % 2:  # reversed: no contender always follows the same one (carry-over)
                    order.reverse()
                for contender in order:
                    turns[contender].append(turn(server, contender, body, c, args.duration, model))
                    time.sleep(0.5)
            summary = summarise(turns)
            line = [f"c={c:>3}  plain {summary['plain']['rps_median']:7.0f} req/s"]
            for contender in contenders[1:]:
                s = summary[contender]
                share = s["mirrored_share_median"]
                low, high = s["rps_ratio_iqr"]
                line.append(
                    f"{contender} {s['rps_median']:6.0f} (x{s['rps_ratio_median']:.3f} "
                    f"[{low:.2f}-{high:.2f}], gateway x{s['gateway_ratio_median']:.3f}"
                    + (
                        f", burner CPU {s['candidate_cpu_share_median']:.1%} of the server's"
                        if contender == "burner"
                        else ""
                        if share is None
                        else f", mirrored {share:.0%}, candidate CPU "
                        f"{s['candidate_cpu_share_median']:.1%} of the server's"
                    )
                    + (f", {s['errors']} failed" if s["errors"] else "")
                    + ")"
                )
            print("  ".join(line), flush=True)
            results["runs"][str(c)] = summary
        policy = {os.SCHED_OTHER: "other", os.SCHED_IDLE: "idle"}
        policies = {
            v: [policy.get(os.sched_getscheduler(p), "?") for p in instance_pids(server, v)]
            for v in (1, 2, 3)
        }
        results["policies_by_version"] = policies
        print("instances' scheduling policy by version:", policies)
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
