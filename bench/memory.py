"""Memory of warm instances: does copy-on-write keep N instances close to one? (issue 3)

Deploys the 100-tree breast-cancer forest twice, once with ``min_instances = 1`` and once with
``min_instances = 4``. Provisioned instances fork from the function's version template, which holds
the loaded model, so they share its pages. The benchmark sums the proportional set size (PSS:
shared pages divided among the processes sharing them) of what the function keeps alive: its
instances plus its version template, the process that holds the one copy of the model they all
share. It also prints the instances alone. Target: 4 warm instances < 2x one.

    python bench/memory.py [--instances 4] [--out bench/results/memory.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from common import BenchModel, Coldbrew, managed, train_forest, write_bundle


def pss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_full_info().pss / 2**20


def warm_instances(
    server: Coldbrew, name: str, count: int, timeout_s: float = 120
) -> tuple[list[int], int]:
    """The pids of ``count`` ready instances and of their version template."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pools = server.pools(name)
        pids = [i["pid"] for p in pools for i in p["instances"] if i["state"] == "ready"]
        templates = [p["version_template_pid"] for p in pools if p["version_template_pid"]]
        if len(pids) >= count and len(templates) == len(pools) == 1:
            time.sleep(1.0)  # let start-up allocations settle
            return pids, templates[0]
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not reach {count} warm instances")


def run_every_instance(server: Coldbrew, name: str, model: BenchModel, count: int) -> None:
    """Invoke until each instance has predicted at least once: an instance that has run the
    model holds the pages its prediction copied on write, which is the fair thing to measure."""
    body = model.body()
    with ThreadPoolExecutor(count) as workers:
        for _ in range(200):
            pools = server.pools(name)
            if all(i["invocations"] > 0 for p in pools for i in p["instances"]):
                return
            list(workers.map(lambda _: server.invoke(name, body), range(count * 4)))
    raise RuntimeError(f"not every instance of {name} was invoked")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cb-memory-") as tmp, managed(Path(tmp)) as procs:
        work = Path(tmp)
        model = train_forest(work / "model")
        server = Coldbrew(procs, work / "home")
        results: dict[str, object] = {}
        for name, count in (("one", 1), ("many", args.instances)):
            # Batching off, so that concurrent calls spread over every instance.
            config = f'min_instances = {count}\ntrust_pickle = true\n[batching]\nmode = "off"\n'
            folder = write_bundle(work / name, model, config)
            server.deploy(name, folder)
            warm_instances(server, name, count)
            run_every_instance(server, name, model, count)
            pids, template = warm_instances(server, name, count)
            instances = [round(pss_mb(p), 1) for p in pids]
            results[name] = {
                "instances": count,
                "pss_mb": instances,
                "version_template_pss_mb": round(pss_mb(template), 1),
                "function_pss_mb": round(sum(instances) + pss_mb(template), 1),
            }
            server.delete(name)  # measure each deployment on its own
        one, many = results["one"], results["many"]
        results["ratio"] = round(many["function_pss_mb"] / one["function_pss_mb"], 2)
        results["instances_only_ratio"] = round(sum(many["pss_mb"]) / sum(one["pss_mb"]), 2)
        print("| instances | function PSS (MB) | version template (MB) | instances (MB) |")
        print("|---:|---:|---:|---:|")
        for row in (one, many):
            values = row["pss_mb"]
            print(
                f"| {len(values)} | {row['function_pss_mb']:.1f} | "
                f"{row['version_template_pss_mb']:.1f} | {', '.join(f'{v:.1f}' for v in values)} |"
            )
        print(
            f"\n{args.instances} warm instances use {results['ratio']}x the PSS of one, counting "
            f"the version template they share (target: < 2x); the instances alone: "
            f"{results['instances_only_ratio']}x"
        )
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
