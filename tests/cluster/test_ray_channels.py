"""The node agent's channel listener (backends/ray_agent.py), without Ray: a connection becomes
an instance's channel only when it presents the token a spawn call is waiting for."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from ray_support import import_ray

from coldbrew.backends import ray_agent
from coldbrew.backends.local import BackendError
from coldbrew.backends.ray_agent import TOKEN_BYTES, NodeAgent


async def _listening_agent() -> NodeAgent:
    agent = NodeAgent({}, "", "node-test")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    agent.listener = listener
    agent.address = ("127.0.0.1", listener.getsockname()[1])
    agent._accept_task = asyncio.create_task(agent._accept_forever())
    return agent


async def _connect(
    agent: NodeAgent, token: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*agent.address)
    writer.write(token)
    await writer.drain()
    return reader, writer


def test_only_the_awaited_token_gets_the_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_agent, "CLAIM_TIMEOUT_S", 0.5)

    async def scenario() -> None:
        agent = await _listening_agent()
        token = secrets.token_bytes(TOKEN_BYTES)
        claim = asyncio.create_task(agent._claim(token))
        stranger_reader, stranger = await _connect(agent, secrets.token_bytes(TOKEN_BYTES))
        await asyncio.sleep(0.1)
        assert not claim.done(), "a wrong token must not be paired with the waiting spawn"
        _, gateway = await _connect(agent, token)
        channel = await asyncio.wait_for(claim, 2)
        assert channel.getblocking() and channel.getpeername() == gateway.get_extra_info("sockname")
        channel.close()
        # The stranger's connection is closed once nobody claims it.
        assert await asyncio.wait_for(stranger_reader.read(), 3) == b""
        for writer in (stranger, gateway):
            writer.close()
        agent._accept_task.cancel()
        agent.listener.close()

    asyncio.run(scenario())


def test_a_spawn_whose_gateway_never_connects_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_agent, "CLAIM_TIMEOUT_S", 0.2)

    async def scenario() -> None:
        agent = await _listening_agent()
        with pytest.raises(BackendError, match="did not connect"):
            await agent._claim(secrets.token_bytes(TOKEN_BYTES))
        assert agent.waiting == {}
        agent._accept_task.cancel()
        agent.listener.close()

    asyncio.run(scenario())


def test_the_default_backend_imports_no_ray(tmp_path: Path) -> None:
    """Ray is an optional extra: without COLDBREW_BACKEND=ray nothing imports it."""
    code = (
        "import sys\n"
        "from coldbrew.platform import make_backend\n"
        "from coldbrew.gateway.app import create_app\n"
        "from coldbrew.settings import Settings\n"
        "from coldbrew.backends.verifying import VerifyingBackend\n"
        f"backend = make_backend(Settings(home={str(tmp_path)!r}), None)\n"
        "assert isinstance(backend, VerifyingBackend), backend\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDBREW_")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_address_without_a_ray_cluster_fails_at_once(tmp_path: Path) -> None:
    import_ray()
    from coldbrew.backends.ray import RayBackend
    from coldbrew.settings import Settings

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(home=tmp_path, backend="ray", ray_address=f"127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(BackendError, match="no Ray cluster answers at"):
        asyncio.run(RayBackend(settings, None).start())  # type: ignore[arg-type]
    assert time.monotonic() - started < 10


def test_a_gateway_that_goes_away_releases_only_its_template_claims() -> None:
    """Two gateways watch one agent and share a version template; the first one's watch
    connection closes (it died): the template stays for the second, and goes with it."""

    class Templates:
        pids: dict[str, int] = {}

        def __init__(self) -> None:
            self.stopped: list[str] = []

        def stop_version_template(self, key: str) -> None:
            self.stopped.append(key)

    async def scenario() -> None:
        agent = await _listening_agent()
        agent.backend = backend = Templates()  # type: ignore[assignment]
        owners = [secrets.token_bytes(ray_agent.OWNER_BYTES) for _ in range(2)]
        watches = [await _connect(agent, agent.watch_token + owner) for owner in owners]
        for owner in owners:
            agent.template_owners.setdefault("fn:1:abc", set()).add(owner.hex())
        await _until(lambda: len(agent.watchers) == 2)  # both greeted
        watches[0][1].close()  # the first gateway dies
        await _until(lambda: len(agent.watchers) == 1)
        assert agent.template_owners == {"fn:1:abc": {owners[1].hex()}}
        assert backend.stopped == []
        agent.stop_version_template("fn:1:abc", owners[1].hex())  # the second one's idle drop
        assert backend.stopped == ["fn:1:abc"] and agent.template_owners == {}
        watches[1][1].close()
        agent._accept_task.cancel()
        agent.listener.close()

    asyncio.run(scenario())


async def _until(check: Any, timeout_s: float = 3) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_two_gateways_starting_one_template_at_once_start_it_once() -> None:
    class Templates:
        pids: dict[str, int] = {}

        def __init__(self) -> None:
            self.started = 0

        async def start_version_template(self, key: str, spec: object) -> float:
            self.started += 1
            await asyncio.sleep(0.1)  # loading the model
            return 42.0

        def version_template_pid(self, key: str) -> int:
            return 1234

    async def scenario() -> None:
        agent = NodeAgent({}, "", "node-test")
        agent.backend = backend = Templates()  # type: ignore[assignment]
        spec = {
            "instance_id": "tpl-1",
            "function_name": "fn",
            "version": "1",
            "bundle_dir": "/nonexistent",
            "config": {},
            "memory_mb": 64,
        }
        replies = await asyncio.gather(
            agent.start_version_template("fn:1:abc", spec, None, "gw-a"),
            agent.start_version_template("fn:1:abc", spec, None, "gw-b"),
        )
        assert backend.started == 1
        assert replies == [{"load_ms": 42.0, "pid": 1234}] * 2
        assert agent.template_owners == {"fn:1:abc": {"gw-a", "gw-b"}}

    asyncio.run(scenario())
