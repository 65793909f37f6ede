"""Node agents and the private /tmp tmpfs mounts of their instances: an agent that starts
detaches what dead agents on this machine left (Ray kills a node's processes with SIGKILL, so
neither the agent nor its runtime template could), and an agent that stops leaves none.

Real agents (``NodeAgent`` booted without Ray: its runtime template, its isolation), real
tmpfs mounts; root only, as isolation is."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_support import detach_mounts_below

from coldbrew.backends.ray_agent import NodeAgent
from coldbrew.runtime.isolation import mounts_under

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tmpfs mounts need root")


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Path]:
    """A gateway's ``nodes`` folder (``COLDBREW_HOME/nodes/<node>``: one home per agent)."""
    try:
        yield tmp_path / "nodes"
    finally:
        detach_mounts_below(tmp_path)


def _mount_tmpfs(path: Path) -> str:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], check=True)
    return str(path)


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _agent(nodes: Path, node: str) -> NodeAgent:
    home = nodes / node
    return NodeAgent({"home": str(home)}, str(home / "artifacts"), f"{node}-id")


def test_a_starting_agent_detaches_what_dead_agents_left(nodes: Path) -> None:
    dead = _dead_pid()
    live = subprocess.Popen(["sleep", "60"])
    try:
        # An agent killed on this node, one on a node that is gone (its raylet was removed: a
        # node that comes back gets a new id, hence a new folder), and a live sibling's.
        left = [
            _mount_tmpfs(nodes / "this" / "run" / "instances" / f"g{dead}" / "tpl-abc"),
            _mount_tmpfs(nodes / "removed" / "run" / "instances" / f"g{dead}" / "0123abcd"),
        ]
        sibling = _mount_tmpfs(nodes / "sibling" / "run" / "instances" / f"g{live.pid}" / "4567")
        assert set(mounts_under(str(nodes))) == {*left, sibling}

        async def scenario() -> None:
            agent = _agent(nodes, "this")
            await agent.hello("127.0.0.1")
            try:
                assert mounts_under(str(nodes)) == [sibling], "only the live agent's mount may stay"
                assert not (nodes / "removed" / "run" / "instances" / f"g{dead}").exists()
            finally:
                await agent.shutdown()

        asyncio.run(scenario())
    finally:
        live.kill()
        live.wait()


def test_a_stopping_agent_leaves_no_mount(nodes: Path) -> None:
    """Its backend unmounts the /tmp of every instance it tracks; the agent then detaches
    whatever is still mounted in its folder (an instance whose spawn it lost track of), both on
    ``shutdown`` and on Ray's graceful exit hook."""

    async def scenario(stop: str) -> str:
        agent = _agent(nodes, stop)
        await agent.hello("127.0.0.1")
        backend = agent.backend
        assert backend is not None and backend.isolation.enabled
        folder = backend.isolation.instances_dir()
        # A private /tmp made by the backend's own code, as for an instance's spawn.
        backend.isolation.make_tmp(folder / "lost", backend.isolation.identity("fn"))
        assert mounts_under(str(folder)) == [str(folder / "lost")]
        template = backend.template.process
        assert template is not None
        if stop == "shutdown":
            await agent.shutdown()
        else:
            agent.__ray_shutdown__()
            await backend.stop()  # the rest (its memory sampler), as Ray's exit would
        assert not template.is_alive()
        return str(folder)

    for stop in ("shutdown", "ray-exit"):
        folder = asyncio.run(scenario(stop))
        assert mounts_under(folder) == [], f"{stop} left a mount"
        assert not Path(folder).exists()
