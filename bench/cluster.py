"""What the Ray backend costs (issue 15): cold starts across nodes and the warm path over TCP.

A two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: the head with a
``node_a`` resource, a second node with ``node_b``), one coldbrew gateway on the head with
``COLDBREW_BACKEND=ray``, and one single-machine coldbrew (the default local backend). Three
placements of the same function:

  single: the local backend (Unix socketpair channel);
  own:    Ray backend, pinned to the gateway's node (``resources = {node_a = 1}``);
  other:  Ray backend, pinned to the second node (``resources = {node_b = 1}``).

For each, ``--repeats`` times: deploy the breast-cancer forest, let it scale to zero with its
version template kept, and time the next invocation (a version-template cold start: the agent
forks the template onto the gateway's TCP connection); then ``--warm`` warm invocations of a
trivial handler, the placements taking turns, p50 from the client. Ratios against
single-machine; the machine is noisy and both "nodes" share its two cores, so "other" has no
network hop: it measures coldbrew's own cluster path (a Ray call to another node's agent,
TCP on the node's address).

    python bench/cluster.py [--repeats 3] [--warm 600] [--rounds 6]
        [--out bench/results/cluster.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "cluster"))
from common import (  # noqa: E402
    Coldbrew,
    fmt,
    managed,
    median,
    prediction_of,
    ratio,
    train_forest,
)
from common import write_bundle as write_model_bundle  # noqa: E402
from ray_support import two_node_cluster  # noqa: E402

HEADERS = {"content-type": "application/json"}
PLACEMENTS = {
    "single": "",
    "own": "[resources]\nnode_a = 1\n",
    "other": "[resources]\nnode_b = 1\n",
}
ECHO = "def handler(event, context):\n    return event\n"
ECHO_BODY = b'{"x":1}'


def timed(server: Coldbrew, name: str, body: bytes, want_cold: bool) -> tuple[float, Any]:
    start = time.perf_counter()
    response = server.client.post(f"/v1/functions/{name}/invoke", content=body, headers=HEADERS)
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
    cold = response.headers.get("x-coldbrew-cold-start") == "true"
    if cold != want_cold:
        raise RuntimeError(f"{name}: expected cold={want_cold}, got {dict(response.headers)}")
    return elapsed, response


def scaled_to_zero_with_template(server: Coldbrew, name: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pools = server.pools(name)
        if (
            pools
            and all(not p["instances"] for p in pools)
            and any(p.get("version_template") for p in pools)
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not scale to zero with a version template: {pools}")


def template_cold_starts(
    server: Coldbrew, placement: str, work: Path, repeats: int, model: Any
) -> list[float]:
    times = []
    for i in range(repeats):
        name = f"forest-{placement}-{i}"
        config = "idle_timeout_s = 0.3\nmax_instances = 1\n" + PLACEMENTS[placement]
        bundle = write_model_bundle(work / name, model, config, nonce=f"{time.time_ns()}")
        server.deploy(name, bundle)
        timed(server, name, model.body(), want_cold=True)
        scaled_to_zero_with_template(server, name)
        elapsed, response = timed(server, name, model.body(), want_cold=True)
        if prediction_of(response.json()) != model.expected:
            raise RuntimeError(f"{name}: wrong prediction {response.text[:200]}")
        source = response.headers.get("x-coldbrew-start-source", "")
        if not source.startswith("version-template"):
            raise RuntimeError(f"{name}: started from {source!r}, not the version template")
        times.append(elapsed)
        server.delete(name)
    return times


def deploy_echo(server: Coldbrew, placement: str, work: Path) -> str:
    name = f"echo-{placement}"
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handler.py").write_text(ECHO)
    (folder / "coldbrew.toml").write_text(
        "handler = 'handler:handler'\nmax_instances = 1\n" + PLACEMENTS[placement]
    )
    server.deploy(name, folder)
    timed(server, name, ECHO_BODY, want_cold=True)
    for _ in range(20):
        timed(server, name, ECHO_BODY, want_cold=False)  # connection and caches warm
    return name


def warm_p50s(servers: dict[str, Coldbrew], work: Path, calls: int, rounds: int) -> dict:
    """Warm p50 per placement, the placements taking turns (rotating order) so that drift on
    this shared machine hits all alike."""
    names = {p: deploy_echo(servers[p], p, work) for p in PLACEMENTS}
    samples: dict[str, list[float]] = {p: [] for p in PLACEMENTS}
    order = list(PLACEMENTS)
    for i in range(rounds):
        for placement in order[i % len(order) :] + order[: i % len(order)]:
            server = servers[placement]
            for _ in range(max(1, calls // rounds)):
                samples[placement].append(timed(server, names[placement], ECHO_BODY, False)[0])
    return {p: statistics.median(v) for p, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warm", type=int, default=600, help="warm calls per placement")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cluster.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cb-cluster-") as tmp:
        work = Path(tmp)
        model = train_forest(work / "model")
        results: dict[str, Any] = {"cold_ms": {}, "warm_p50_ms": {}}
        with two_node_cluster(head_resources={"node_a": 1}) as cluster, managed(work) as procs:
            servers = {
                "single": Coldbrew(procs, work / "single", "single", {"COLDBREW_AUTH": "off"}),
                "ray": Coldbrew(
                    procs,
                    work / "ray",
                    "ray-gateway",
                    {
                        "COLDBREW_AUTH": "off",
                        "COLDBREW_BACKEND": "ray",
                        "COLDBREW_RAY_ADDRESS": cluster["address"],
                    },
                ),
            }
            by_placement = {p: servers["single" if p == "single" else "ray"] for p in PLACEMENTS}
            for placement in PLACEMENTS:
                cold = template_cold_starts(
                    by_placement[placement], placement, work, args.repeats, model
                )
                results["cold_ms"][placement] = cold
                print(f"{placement:>6}: version-template cold start median {fmt(median(cold))} ms")
            results["warm_p50_ms"] = warm_p50s(by_placement, work, args.warm, args.rounds)
            for placement, p50 in results["warm_p50_ms"].items():
                print(f"{placement:>6}: warm p50 {fmt(p50, 3)} ms")
            procs.stop_all()  # the gateways, before the cluster goes
    cold = {k: median(v) for k, v in results["cold_ms"].items()}
    warm = results["warm_p50_ms"]
    results["ratios"] = {
        "cold_own_vs_single": ratio(cold["own"], cold["single"]),
        "cold_other_vs_single": ratio(cold["other"], cold["single"]),
        "warm_added_ms_own": warm["own"] - warm["single"],
        "warm_added_ms_other": warm["other"] - warm["single"],
    }
    print(json.dumps(results["ratios"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
