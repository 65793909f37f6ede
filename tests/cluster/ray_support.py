"""A real two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and a
second node with a ``node_b`` custom resource), for the Ray backend's tests and bench.

Ray's health checks are tightened so that a removed node is declared dead in ~2 s rather than
the default ~30 s; both nodes get one CPU so that placement by load spreads two instances."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

FAST_FAILURE_DETECTION = {
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 500,
    "health_check_failure_threshold": 3,
}


def import_ray() -> Any:
    try:
        import ray
        from ray import cluster_utils
    except ImportError:
        reason = "ray is not installed (pip install -e '.[ray]')"
        if os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (COLDBREW_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    return ray, cluster_utils


@contextlib.contextmanager
def two_node_cluster(head_resources: dict[str, float] | None = None) -> Iterator[dict[str, Any]]:
    """Yields ``{"address", "cluster", "head", "b"}``; every Ray process is stopped after.

    One such cluster at a time on this machine (a file lock): test sessions running side by
    side (pytest-xdist workers) would otherwise start two Ray heads competing for ports and
    for the two cores the tests' timings assume."""
    ray, cluster_utils = import_ray()
    with open(Path(tempfile.gettempdir()) / "coldbrew-tests-ray.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with _started_cluster(ray, cluster_utils, head_resources) as started:
            yield started


@contextlib.contextmanager
def _started_cluster(
    ray: Any, cluster_utils: Any, head_resources: dict[str, float] | None
) -> Iterator[dict[str, Any]]:
    cluster = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": head_resources or {},
            "include_dashboard": False,
            "_system_config": FAST_FAILURE_DETECTION,
        },
    )
    try:
        b = cluster.add_node(num_cpus=1, resources={"node_b": 1})
        cluster.wait_for_nodes()
        yield {"address": cluster.address, "cluster": cluster, "head": cluster.head_node, "b": b}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()  # kills every node's processes, and with them the agents


def detach_mounts_below(folder: Path) -> list[str]:
    """The safety net of a fixture's teardown: detach every mount left at or below ``folder``
    (instances' private /tmp tmpfs mounts of agents Ray killed) so that no test, passing or
    failing, leaves them in this machine's mount table. Returns what was left."""
    from coldbrew.runtime.isolation import mounts_under, unmount_under

    left = mounts_under(str(folder))
    if left:
        unmount_under(str(folder))
    return left


def raylet_pid(node: Any) -> int:
    return int(node.all_processes["raylet"][0].process.pid)


def descends_from(pid: int, ancestor: int) -> bool:
    try:
        return any(parent.pid == ancestor for parent in psutil.Process(pid).parents())
    except psutil.NoSuchProcess:
        return False
