"""Memory of warm instances: does copy-on-write keep N instances close to one? (issue 3)

Deploys the 100-tree breast-cancer forest twice, once with ``min_instances = 1`` and once with
``min_instances = 4`` (provisioned instances start from the version template, so they share the
loaded model with it), then sums the proportional set size (PSS: shared pages divided among the
processes sharing them) of the instance processes. Target: 4 warm instances < 2x one.

    python bench/memory.py [--instances 4] [--out bench/results/memory.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from common import Coldbrew, managed, train_forest, write_bundle


def pss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_full_info().pss / 2**20


def warm_instances(server: Coldbrew, name: str, count: int, timeout_s: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pools = server.pools(name)
        pids = [i["pid"] for p in pools for i in p["instances"] if i["state"] == "ready"]
        if len(pids) >= count and all(p["version_template"] for p in pools):
            time.sleep(1.0)  # let start-up allocations settle
            return pids
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not reach {count} warm instances")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cb-memory-") as tmp, managed(Path(tmp)) as procs:
        work = Path(tmp)
        model = train_forest(work / "model")
        server = Coldbrew(procs, work / "home")
        results = {}
        for name, count in (("one", 1), ("many", args.instances)):
            folder = write_bundle(
                work / name, model, f"min_instances = {count}\ntrust_pickle = true\n"
            )
            server.deploy(name, folder)
            pids = warm_instances(server, name, count)
            results[name] = {"instances": count, "pss_mb": [round(pss_mb(p), 1) for p in pids]}
        one = sum(results["one"]["pss_mb"])
        many = sum(results["many"]["pss_mb"])
        results["ratio"] = round(many / one, 2)
        print("| instances | PSS of the instances (MB) | per instance (MB) |")
        print("|---:|---:|---:|")
        for name in ("one", "many"):
            values = results[name]["pss_mb"]
            print(
                f"| {len(values)} | {sum(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |"
            )
        print(
            f"\n{args.instances} warm instances use {results['ratio']}x the PSS of one "
            "(target: < 2x)"
        )
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
