"""Before/after of a hot-path change: two coldbrew checkouts side by side in one run.

``--before`` (a git revision) is checked out into a temporary worktree; ``--after`` is this
checkout (or another revision). Both serve the same 100-tree forest with the same config, and
``wrk`` loads them in turns (ABBA order, so drift on this shared machine hits both alike):
each turn records requests per second and the **gateway process's own CPU time per
invocation** (user + system, read from /proc via psutil; instances and templates excluded).

    python bench/ab.py --before b736e76 [--after HEAD] [--connections 16,64] [--rounds 6]
        [--duration 5] [--batching auto] [--together] [--out bench/results/ab.json]

Read the ratios and medians, never one turn's number. Two ratios are reported: of the medians
of all turns, and the **paired** one (the median over rounds of each round's after / before,
with its interquartile range). On a shared machine whose speed swings over tens of seconds the
paired ratio is the one to read: the two turns of a round ran seconds apart, in the same
weather; more, shorter rounds (``--rounds 30 --duration 2``) sharpen it. ``--together`` goes
further: each round loads both sides at the same moment (one wrk each, the same connections),
so whatever else the machine does hits both alike; they share its cores, so read the ratios
(each side's req/s under the same contention, and its gateway's CPU per call), not the
absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Coldbrew, managed, prediction_of, train_forest, write_bundle
from wrk import have_wrk, run_wrk

REPO = Path(__file__).resolve().parents[1]


def worktree(stack: ExitStack, revision: str, where: Path) -> Path:
    """A checkout of ``revision``'s source; removed when the run ends."""
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), revision],
        check=True,
        capture_output=True,
    )
    stack.callback(
        subprocess.run,
        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(where)],
        check=False,
        capture_output=True,
    )
    return where / "src"


def source_of(stack: ExitStack, revision: str, work: Path, label: str) -> Path:
    if revision in ("", "WORKTREE"):
        return REPO / "src"
    return worktree(stack, revision, work / f"src-{label}")


def turn(server: Coldbrew, url: str, body: Path, connections: int, seconds: float) -> dict:
    return turns_together([(server, url)], body, connections, seconds)[0]


def turns_together(
    sides: list[tuple[Coldbrew, str]], body: Path, connections: int, seconds: float
) -> list[dict]:
    """One wrk per side, all at once; each side's req/s and gateway CPU per call."""
    gateways = [psutil.Process(server.proc.pid) for server, _ in sides]
    before = [g.cpu_times() for g in gateways]
    with ThreadPoolExecutor(len(sides)) as pool:
        runs = [pool.submit(run_wrk, url, body, connections, seconds) for _, url in sides]
        results = [run.result() for run in runs]
    out = []
    for (_, url), gateway, start, result in zip(sides, gateways, before, results, strict=True):
        end = gateway.cpu_times()
        cpu_s = (end.user - start.user) + (end.system - start.system)
        if result.errors:
            raise RuntimeError(f"{result.errors} failed requests against {url}")
        out.append(
            {
                "rps": result.requests_per_s,
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
                "cpu_us_per_call": cpu_s / max(1, result.requests) * 1e6,
            }
        )
    return out


def quartiles(values: list[float]) -> tuple[float, float]:
    """The interquartile range of ``values`` (both ends the median for fewer than two)."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision of the 'before' side")
    parser.add_argument("--after", default="WORKTREE", help="revision, or WORKTREE (default)")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--batching", default="auto")
    parser.add_argument(
        "--together",
        action="store_true",
        help="load both sides at once in each round (they share the machine) instead of in turns",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not have_wrk():
        sys.exit("wrk is needed: apt-get install wrk")
    connections = [int(c) for c in args.connections.split(",")]
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cb-ab-")))
        model = train_forest(work)
        body = work / "body.json"
        body.write_bytes(model.body())
        (work / "logs").mkdir()
        procs = stack.enter_context(managed(work / "logs"))
        sides: dict[str, tuple[Coldbrew, str]] = {}
        config = f'max_instances = 2\n\n[batching]\nmode = "{args.batching}"\n'
        for label, revision in (("before", args.before), ("after", args.after)):
            src = source_of(stack, revision, work, label)
            server = Coldbrew(
                procs, work / f"home-{label}", f"cb-{label}", {"PYTHONPATH": str(src)}
            )
            server.deploy("forest", write_bundle(work / f"bundle-{label}", model, config))
            url = f"{server.url}/v1/functions/forest/invoke"
            assert prediction_of(server.invoke("forest", model.body())) == model.expected
            sides[label] = (server, url)
        results: dict[str, Any] = {"before": args.before, "after": args.after, "runs": {}}
        for c in connections:
            turns: dict[str, list[dict]] = {"before": [], "after": []}
            for label in sides:  # warm-up turn each, not recorded
                run_wrk(sides[label][1], body, c, 2)
            for r in range(args.rounds):
                if args.together:  # both loaded at once: the machine's weather hits both
                    both = turns_together(list(sides.values()), body, c, args.duration)
                    for label, result in zip(sides, both, strict=True):
                        turns[label].append(result)
                    time.sleep(0.5)
                    continue
                order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
                for label in order:
                    server, url = sides[label]
                    turns[label].append(turn(server, url, body, c, args.duration))
                    time.sleep(0.5)
            summary = {
                label: {
                    "rps_median": statistics.median(t["rps"] for t in ts),
                    "cpu_us_per_call_median": statistics.median(t["cpu_us_per_call"] for t in ts),
                    "turns": ts,
                }
                for label, ts in turns.items()
            }
            b, a = summary["before"], summary["after"]
            summary["rps_ratio_after_over_before"] = a["rps_median"] / b["rps_median"]
            summary["cpu_ratio_after_over_before"] = (
                a["cpu_us_per_call_median"] / b["cpu_us_per_call_median"]
            )
            for key, name in (("rps", "rps"), ("cpu_us_per_call", "cpu")):
                paired = [x[key] / y[key] for x, y in zip(a["turns"], b["turns"], strict=True)]
                summary[f"{name}_ratio_paired_median"] = statistics.median(paired)
                summary[f"{name}_ratio_paired_iqr"] = quartiles(paired)
            results["runs"][str(c)] = summary
            rps_iqr, cpu_iqr = summary["rps_ratio_paired_iqr"], summary["cpu_ratio_paired_iqr"]
            print(
                f"c={c:>3}  req/s before {b['rps_median']:8.0f}  after {a['rps_median']:8.0f}"
                f"  ratio {summary['rps_ratio_after_over_before']:.3f}"
                f" (paired {summary['rps_ratio_paired_median']:.3f}"
                f" [{rps_iqr[0]:.3f}-{rps_iqr[1]:.3f}])   gateway CPU/call"
                f" before {b['cpu_us_per_call_median']:6.1f} us  after"
                f" {a['cpu_us_per_call_median']:6.1f} us"
                f"  ratio {summary['cpu_ratio_after_over_before']:.3f}"
                f" (paired {summary['cpu_ratio_paired_median']:.3f}"
                f" [{cpu_iqr[0]:.3f}-{cpu_iqr[1]:.3f}])"
            )
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
