"""coldbrew on a real two-node Ray cluster (``COLDBREW_BACKEND=ray``): a gateway on the head,
node agents on both nodes, instances forked by the agents and reached over TCP.

One module-scoped cluster (Ray takes seconds to start); the node-kill test runs last because
it removes the second node."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray_support import descends_from, detach_mounts_below, raylet_pid, two_node_cluster

from coldbrew.runtime.isolation import mounts_under
from support import Server, pid_alive, write_bundle

WHERE = (
    "import os, time\n"
    "def handler(event, context):\n"
    "    time.sleep((event or {}).get('sleep', 0))\n"
    "    return {'pid': os.getpid()}\n"
)


@pytest.fixture(scope="module")
def ray_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("ray-gw")
    try:
        with two_node_cluster() as cluster:
            server = Server(
                home,
                env={
                    "COLDBREW_BACKEND": "ray",
                    "COLDBREW_RAY_ADDRESS": cluster["address"],
                    "COLDBREW_AUTH": "off",
                },
            )
            server.start()
            try:
                yield {**cluster, "server": server}
            finally:
                server.stop()
    finally:
        detach_mounts_below(home)  # the cluster is gone: nothing below is in use


def _deploy(server: Server, tmp_path: Path, name: str, config: str) -> None:
    folder = write_bundle(tmp_path / name, WHERE, "handler = 'handler:handler'\n" + config)
    response = server.deploy_folder(name, folder)
    assert response.status_code in (200, 201), response.text


def test_resources_place_instances_on_the_node_that_has_them(
    ray_gateway: dict[str, Any], tmp_path: Path
) -> None:
    server = ray_gateway["server"]
    _deploy(
        server, tmp_path, "on-b", "max_instances = 1\nidle_timeout_s = 1\n[resources]\nnode_b = 1\n"
    )
    answers = [server.invoke("on-b", {}) for _ in range(3)]
    assert all(a.status_code == 200 for a in answers), answers[0].text
    pids = {a.json()["pid"] for a in answers}
    assert len(pids) == 1, "one warm instance served them all"
    pid = pids.pop()
    # Forked on node b: a descendant of its raylet (raylet -> agent -> template -> instance),
    # not of the head's.
    assert descends_from(pid, raylet_pid(ray_gateway["b"]))
    assert not descends_from(pid, raylet_pid(ray_gateway["head"]))
    assert not descends_from(pid, server.process.pid)


def test_a_function_asking_for_absent_resources_is_refused(
    ray_gateway: dict[str, Any], tmp_path: Path
) -> None:
    server = ray_gateway["server"]
    _deploy(server, tmp_path, "gpu", "[resources]\nGPU = 1\n")
    answer = server.invoke("gpu", {})
    assert answer.status_code >= 400
    assert "no Ray node has room" in answer.text


def test_nodes_view_lists_both_nodes(ray_gateway: dict[str, Any]) -> None:
    answer = ray_gateway["server"].client.get("/v1/nodes")
    assert answer.status_code == 200, answer.text
    ray_nodes = answer.json()["ray"]
    ids = {node["node_id"] for node in ray_nodes}
    assert ray_gateway["b"].node_id in ids and len(ids) == 2
    b = next(node for node in ray_nodes if node["node_id"] == ray_gateway["b"].node_id)
    assert b["alive"] and b["resources"]["node_b"] == 1
    # b's agent holds b's runtime template (forked from under b's raylet).
    template = b["agent"]["runtime_template_pid"]
    assert template and descends_from(template, raylet_pid(ray_gateway["b"]))


def test_scale_to_zero_on_every_node(ray_gateway: dict[str, Any], tmp_path: Path) -> None:
    server = ray_gateway["server"]
    config = "idle_timeout_s = 1\nconcurrency = 1\nmax_instances = 4\n"
    _deploy(server, tmp_path, "idle", config)
    deadline = time.monotonic() + 10
    while server.instances("on-b") and time.monotonic() < deadline:
        time.sleep(0.2)  # the first test's instance (idle_timeout_s = 1) leaves node b free
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: server.invoke("idle", {"sleep": 1.0}), range(2)))
    assert all(a.status_code == 200 for a in answers), answers[0].text
    pids = {a.json()["pid"] for a in answers}
    b = raylet_pid(ray_gateway["b"])
    assert len(pids) == 2 and sum(descends_from(p, b) for p in pids) == 1, "one on each node"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(pid_alive(p) for p in pids), "idle instances were stopped on both nodes"
    assert server.instances("idle") == []


def test_two_gateways_share_each_node(ray_gateway: dict[str, Any], tmp_path: Path) -> None:
    """A second gateway of the platform (same registry and artifacts) on the same Ray cluster:
    each sees the other's instances on the nodes' agents, a node's ``resources`` hold across
    both (the agent refuses what does not fit beside the other gateway's instances), and a
    version template both use outlives the gateway that stops first."""
    first = ray_gateway["server"]
    _deploy(
        first,
        tmp_path,
        "shared-b",
        "idle_timeout_s = 60\nconcurrency = 1\nmax_instances = 2\n[resources]\nnode_b = 0.5\n",
    )
    assert first.invoke("shared-b", {}).status_code == 200
    second = Server(
        first.home,
        env={
            k: first.env[k] for k in ("COLDBREW_BACKEND", "COLDBREW_RAY_ADDRESS", "COLDBREW_AUTH")
        },
    )
    second.start()
    try:
        assert second.invoke("shared-b", {}).status_code == 200  # node_b: 0.5 + 0.5 of 1
        b = ray_gateway["b"].node_id
        owners = {first: _owner(first), second: _owner(second)}
        deadline = time.monotonic() + 10
        while True:  # both templates are one: the second gateway's start found it there
            agent = next(n for n in _ray_nodes(second) if n["node_id"] == b)["agent"]
            [(key, users)] = [
                (k, v) for k, v in agent["template_owners"].items() if "shared-b" in k
            ]
            if len(users) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sorted(users) == sorted(owners.values())
        assert agent["instances_by_gateway"] == {owners[first]: 1, owners[second]: 1}
        template = agent["templates"][key]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            busy = pool.submit(second.invoke, "shared-b", {"sleep": 3})
            deadline = time.monotonic() + 10
            while not any(i.get("inflight") for i in second.instances("shared-b")):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            # Its instance is busy and node_b is all held: a second one would not fit.
            refused = second.invoke("shared-b", {})
            assert refused.status_code >= 400 and "no Ray node has room" in refused.text
            assert busy.result(30).status_code == 200
    finally:
        second.stop()
    assert pid_alive(template), "the first gateway's template outlived the second gateway"
    assert first.invoke("shared-b", {}).status_code == 200
    agent = next(n for n in _ray_nodes(first) if n["node_id"] == b)["agent"]
    assert agent["template_owners"][key] == [owners[first]]
    assert first.client.delete("/v1/functions/shared-b").status_code in (200, 204)


def _ray_nodes(server: Server) -> list[dict[str, Any]]:
    return server.client.get("/v1/nodes").json()["ray"]


def _owner(server: Server) -> str:
    return _ray_nodes(server)[0]["this_gateway"]


def test_node_failure_fails_its_calls_and_moves_new_ones(
    ray_gateway: dict[str, Any], tmp_path: Path
) -> None:
    server, b = ray_gateway["server"], ray_gateway["b"]
    _deploy(server, tmp_path, "kill-b", "concurrency = 1\nmax_instances = 4\n")
    b_raylet = raylet_pid(b)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(server.invoke, "kill-b", {"sleep": 4.0}) for _ in range(2)]
        deadline = time.monotonic() + 10
        on_b: list[int] = []
        while time.monotonic() < deadline and not on_b:
            time.sleep(0.2)
            pids = [i["pid"] for i in server.instances("kill-b") if i.get("pid")]
            on_b = [p for p in pids if descends_from(p, b_raylet)]
        assert on_b, "one of the two in-flight calls runs on node b"
        killed_at = time.monotonic()
        ray_gateway["cluster"].remove_node(b, allow_graceful=False)
        answers = [call.result() for call in calls]
    codes = sorted(a.json()["error"]["code"] if a.status_code != 200 else "ok" for a in answers)
    assert codes == ["INSTANCE_CRASHED", "ok"], [a.text for a in answers]
    # New invocations are placed on the head within seconds.
    while True:
        answer = server.invoke("kill-b", {})
        if answer.status_code == 200:
            break
        assert time.monotonic() - killed_at < 10, answer.text
        time.sleep(0.2)
    assert not descends_from(answer.json()["pid"], b_raylet)
    assert time.monotonic() - killed_at < 10
    # Its process outlived its node here (one machine: only the raylet and the agent died); its
    # channel was closed by the gateway, so it exits once its invocation (a 4 s sleep) is over.
    deadline = time.monotonic() + 10
    while pid_alive(on_b[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(on_b[0]), "the instance on the lost node exited"


def test_a_node_that_joins_gets_an_agent_and_instances(ray_gateway: dict[str, Any]) -> None:
    """After the previous test removed node b: a new node with ``node_b`` is picked up (an
    agent is started on it) and the ``node_b`` function runs there again."""
    server = ray_gateway["server"]
    back = ray_gateway["cluster"].add_node(num_cpus=1, resources={"node_b": 1})
    deadline = time.monotonic() + 60
    while True:
        answer = server.invoke("on-b", {})
        if answer.status_code == 200:
            break
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.5)
    assert descends_from(answer.json()["pid"], raylet_pid(back))
    # Ray killed the removed node's agent and templates with SIGKILL: none could unmount its
    # instances' private /tmp. The agent that started on this machine since detached them.
    gone = server.home / "nodes" / ray_gateway["b"].node_id[:12]
    assert mounts_under(str(gone)) == [], "the removed node's tmpfs mounts are still there"


def _agent_of(server: Server, resource: str) -> dict[str, Any]:
    ray_nodes = server.client.get("/v1/nodes").json()["ray"]
    return next(n for n in ray_nodes if n["alive"] and resource in n["resources"])


def test_a_crashed_agent_is_replaced(ray_gateway: dict[str, Any]) -> None:
    """SIGKILL of node b's agent (the node itself lives on): its instance's call fails or
    not, but the gateway starts a new agent on the node and the function runs there again."""
    server = ray_gateway["server"]
    assert server.invoke("on-b", {}).status_code == 200
    node = _agent_of(server, "node_b")
    old_pid = node["agent"]["agent_pid"]
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        answer = server.invoke("on-b", {})
        agent = _agent_of(server, "node_b").get("agent") or {}
        if answer.status_code == 200 and agent.get("agent_pid") not in (None, old_pid):
            break
        assert time.monotonic() < deadline, (answer.text, agent)
        time.sleep(0.3)
    assert answer.json()["pid"] in agent["instance_pids"].values()
    old_tmp = server.home / "nodes" / node["node_id"][:12] / "run" / "instances" / f"g{old_pid}"
    assert mounts_under(str(old_tmp)) == [] and not old_tmp.exists()


def test_a_stopped_gateway_leaves_no_version_template(ray_gateway: dict[str, Any]) -> None:
    """The agents outlive a gateway (other gateways share them), its templates must not. Last:
    it stops the gateway."""
    server = ray_gateway["server"]
    deadline = time.monotonic() + 20
    templates: list[int] = []
    while not templates and time.monotonic() < deadline:
        assert server.invoke("on-b", {}).status_code == 200
        ray_nodes = server.client.get("/v1/nodes").json()["ray"]
        templates = [p for n in ray_nodes if n["agent"] for p in n["agent"]["templates"].values()]
        time.sleep(0.3)
    assert templates, "the version templates of the earlier tests are on the agents"
    server.stop()
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in templates) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(pid_alive(p) for p in templates)
