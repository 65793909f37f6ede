"""What one pass of the alert rules costs the gateway's event loop, before and after a change.

The rules run on the event loop every 5 s over the sliding window of recent invocations (up to
200,000 of them: ``observe/window.py``), so the pass's time is time no caller is served. Both
sides get the same window (two functions, the busy one split over two versions, errors and
throttles among them) and time ``AlertManager.evaluate_once``; they run as subprocesses in
turns (ABBA), each on its own checkout.

    python bench/alert_pass.py --before b736e76 [--after WORKTREE] [--rows 200000]
        [--rounds 6] [--out bench/results/alert-pass.json]

Read the paired ratio (median over rounds of after / before), never one pass's time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab import source_of

PASS = """
import json, random, sys, time
from coldbrew.observe.alerting import AlertManager
from coldbrew.observe.rules import RuleConfig
from coldbrew.observe.usage import Usage
from coldbrew.observe.window import Window

rows, passes = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(1)
window = Window()
now = time.time()
for i in range(rows):
    function, version = ("forest", 1 + i % 2) if i % 10 else ("digits", 1)
    status = "OK" if rng.random() > 0.02 else rng.choice(("FUNCTION_ERROR", "THROTTLED"))
    window.add(Usage(f"r{i}", function, version, None, now - 240 + 240 * i / rows, 1.0,
                     rng.uniform(1, 50), 2, 512, 1e-3, 1e-7, i % 500 == 0, None, status))
manager = AlertManager(window, RuleConfig(), [])
took = []
for _ in range(passes):
    started = time.perf_counter()
    manager.evaluate_once(now)
    took.append((time.perf_counter() - started) * 1000)
print(json.dumps(took))
"""


def one_side(src: Path, rows: int, passes: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-c", PASS, str(rows), str(passes)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    )
    return list(json.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision of the 'before' side")
    parser.add_argument("--after", default="WORKTREE", help="revision, or WORKTREE (default)")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--passes", type=int, default=3, help="passes timed per turn")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cb-alerts-")))
        sources = {label: source_of(stack, rev, work, label) for label, rev in
                   (("before", args.before), ("after", args.after))}  # fmt: skip
        turns: dict[str, list[float]] = {"before": [], "after": []}
        for r in range(args.rounds):
            for label in ("before", "after") if r % 2 == 0 else ("after", "before"):
                turns[label].append(
                    statistics.median(one_side(sources[label], args.rows, args.passes))
                )
        paired = [a / b for a, b in zip(turns["after"], turns["before"], strict=True)]
        result = {
            "before": args.before,
            "after": args.after,
            "rows": args.rows,
            "before_ms_median": statistics.median(turns["before"]),
            "after_ms_median": statistics.median(turns["after"]),
            "ratio_paired_median": statistics.median(paired),
            "turns": turns,
        }
        print(
            f"{args.rows} rows: one alert pass before {result['before_ms_median']:.1f} ms, after"
            f" {result['after_ms_median']:.1f} ms; after / before (paired) "
            f"{result['ratio_paired_median']:.3f}"
        )
        if args.out:
            args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
