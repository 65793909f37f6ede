"""Instances on the nodes of a Ray cluster (``COLDBREW_BACKEND=ray``, docs/CLUSTER.md).

Ray gives membership, each node's resources and failure detection; coldbrew keeps its own
fork-speed process model on every node. One node agent per node (``ray_agent.NodeAgent``, a
named detached actor pinned there by node affinity) owns that node's templates and instances.
This backend, in the gateway, places each spawn on a node and talks to the instance directly
over TCP with the usual frames, so ``scaling/instance.py`` and the pools work unchanged.

Placement (``choose``): among live nodes whose agent answered, those with the function's
``resources`` and ``memory_mb`` free (totals from Ray, minus what this gateway placed there and
what the agent last said the other gateways hold; instances are not Ray tasks, so Ray's own
"available" figures do not see them). The agent has the last word: it refuses a spawn that
does not fit beside every gateway's instances (``NO_CAPACITY``), and the spawn moves on to
the next node. Among the fitting nodes: first a node
with fewer instances than CPUs, then the one holding the version's template (a fork with the
model loaded), then the one with most instances of that version, the least loaded, and last
the gateway's own node.

A node is lost when its agent's watch connection closes (its process died: within a second)
or when Ray reports the node dead (a machine that vanished: Ray's health checks): the
channels of its instances are closed here, so in-flight invocations fail with
``INSTANCE_CRASHED``, and new ones are placed elsewhere. A node that comes back, or a new one,
gets an agent at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from coldbrew import errors
from coldbrew.backends.base import InstanceSpec, SpawnedInstance
from coldbrew.backends.local import BackendError
from coldbrew.backends.ray_agent import OWNER_BYTES, TOKEN_BYTES, NodeAgent
from coldbrew.errors import ColdbrewError
from coldbrew.runtime import messages as m
from coldbrew.runtime.forksafety import ForkUnsafe
from coldbrew.security.artifacts import VerifiedBundles
from coldbrew.settings import SECRET_FIELDS, Settings

log = logging.getLogger("coldbrew.ray")

NAMESPACE = "coldbrew"
POLL_S = 1.0
CONNECT_TIMEOUT_S = 10.0
SPAWN_ATTEMPTS = 2
"""Nodes a cold start tries before it fails, when a node does not answer."""
OTHERS_TTL_S = 5.0
"""How long an agent's word on what other gateways hold on its node guides placement."""
CALL_TIMEOUT_S = 1.0
"""Synchronous questions to an agent (``exceeded_memory``) wait at most this long."""
AGENT_FIELDS_DROPPED = SECRET_FIELDS - {"artifact_key"}
"""Settings an agent never needs (it decrypts artifacts, nothing else): not sent through Ray."""


class NoCapacity(BackendError):
    code = "NO_CAPACITY"


class NodeFull(BackendError):
    """The agent refused: other gateways' instances hold what this one needs on its node."""

    code = "NO_CAPACITY"


class NodeUnreachable(BackendError):
    """The node's agent or its port did not answer (the node is going away, most likely)."""


class RemoteError(BackendError):
    """An error an agent reported, with its code kept (``ARTIFACT_TAMPERED``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = errors.status_of(code)  # the status its code has, as if raised here


@dataclass
class Node:
    node_id: str
    ip: str
    total: dict[str, float]
    agent: Any = None
    host: str = ""
    port: int = 0
    agent_pid: int | None = None
    alive: bool = True
    ready: bool = False
    instances: dict[str, dict[str, float]] = field(default_factory=dict)
    """What this gateway placed here: instance id -> resources it holds."""
    keys: dict[str, str] = field(default_factory=dict)
    """instance id -> its version template key."""
    others: dict[str, float] = field(default_factory=dict)
    """What other gateways' instances hold here, as the agent last said (at ``others_at``)."""
    others_at: float = 0.0
    watch: asyncio.Task[None] | None = None
    connecting: asyncio.Task[None] | None = None

    def count(self, key: str) -> int:
        return sum(1 for k in self.keys.values() if k == key)

    def free(self, resource: str) -> float:
        used = sum(held.get(resource, 0.0) for held in self.instances.values())
        if time.monotonic() - self.others_at < OTHERS_TTL_S:
            used += self.others.get(resource, 0.0)
        return self.total.get(resource, 0.0) - used

    def heard(self, others: dict[str, float] | None) -> None:
        if others is not None:
            self.others, self.others_at = dict(others), time.monotonic()

    def fits(self, need: dict[str, float]) -> bool:
        return all(self.free(name) >= amount - 1e-9 for name, amount in need.items())

    def has(self, need: dict[str, float]) -> bool:
        """Whether the node could hold one such instance at all (free or not)."""
        return all(self.total.get(name, 0.0) >= amount - 1e-9 for name, amount in need.items())

    def load(self) -> float:
        return len(self.instances) / max(self.total.get("CPU", 1.0), 1.0)


def needs(spec: InstanceSpec) -> dict[str, float]:
    """What one instance of ``spec`` holds on its node: its ``resources`` and ``memory_mb``."""
    wanted = {str(k): float(v) for k, v in (spec.config.get("resources") or {}).items()}
    wanted["memory"] = wanted.get("memory", 0.0) + spec.memory_mb * 2**20
    return wanted


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BackendError("COLDBREW_BACKEND=ray needs Ray: pip install 'coldbrew[ray]'") from None
    return ray


class RayBackend:
    """The ``Backend`` protocol over a Ray cluster's node agents."""

    def __init__(self, settings: Settings, bundles: VerifiedBundles) -> None:
        self.settings = settings
        self.bundles = bundles
        self.nodes: dict[str, Node] = {}
        self.local_node = ""
        self.placed: dict[str, str] = {}
        """instance id -> node id."""
        self.writers: dict[str, asyncio.StreamWriter] = {}
        self.templates: dict[str, tuple[str, int | None]] = {}
        """version template key -> (node id, pid) of the one template this gateway started."""
        self.secret_environment: Any = None
        self.owner = secrets.token_bytes(OWNER_BYTES)
        """This gateway to the agents: its claims on their templates, its instances."""
        self.enforcement = "per-node"
        self.platform = hashlib.sha256(settings.registry_url().encode()).hexdigest()[:12]
        self._agent_class: Any = None
        self._monitor: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        ray = _ray()
        address = self.settings.ray_address or "auto"
        if not ray.is_initialized():
            if address != "auto":
                await asyncio.to_thread(_reachable, address)
            try:
                ray.init(
                    address=address,
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            except Exception as exc:  # no cluster there, or another Ray version
                raise BackendError(
                    f"could not join the Ray cluster at {address!r} ({exc}); start one with "
                    "`ray start --head` or set COLDBREW_RAY_ADDRESS (docs/CLUSTER.md)"
                ) from None
        self.local_node = ray.get_runtime_context().get_node_id()
        self._agent_class = ray.remote(num_cpus=0, max_restarts=0)(NodeAgent)
        await asyncio.gather(*await self.refresh())
        if not any(node.ready for node in self.nodes.values()):
            raise BackendError("no node agent of the Ray cluster answered; see the Ray logs")
        self._monitor = asyncio.create_task(self._poll_forever())
        log.info(
            "ray backend ready: %d node(s), gateway on node %s",
            sum(node.ready for node in self.nodes.values()),
            self.local_node[:12],
        )

    async def stop(self) -> None:
        if self._monitor:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        calls = []
        for instance_id, node_id in list(self.placed.items()):
            node = self.nodes.get(node_id)
            if node is not None and node.ready:
                calls.append(node.agent.kill.remote(instance_id))
        for key, (node_id, _) in list(self.templates.items()):
            node = self.nodes.get(node_id)
            if node is not None and node.ready:
                calls.append(node.agent.stop_version_template.remote(key, self.owner.hex()))
        self.templates.clear()
        # Waited for (briefly): the agents outlive this gateway, its templates must not.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
        for node in self.nodes.values():
            if node.watch:
                node.watch.cancel()
        # The agents stay: they are shared by every gateway of this platform (detached actors).

    def info(self) -> dict[str, object]:
        return {
            "backend": "ray",
            "ray_address": self.settings.ray_address or "auto",
            "nodes": sum(node.ready for node in self.nodes.values()),
            "memory_enforcement": self.enforcement,
            "owner": self.owner.hex(),
        }

    # --- membership -----------------------------------------------------------------------------
    async def refresh(self) -> list[asyncio.Task[None]]:
        """Read Ray's node table: start agents on new nodes, drop the dead ones. Returns the
        connections started (each may wait for an agent's first start: seconds)."""
        table = await asyncio.to_thread(_ray().nodes)
        started = []
        for entry in table:
            node_id = entry["NodeID"]
            node = self.nodes.get(node_id)
            if not entry["Alive"]:
                if node is not None and node.alive:
                    self._lost(node, "Ray reports the node dead")
                continue
            if node is None:
                node = Node(node_id, entry["NodeManagerAddress"], dict(entry["Resources"]))
                self.nodes[node_id] = node
            if not node.ready and (node.connecting is None or node.connecting.done()):
                node.connecting = asyncio.create_task(self._connect(node))
                started.append(node.connecting)
        return started

    async def _connect(self, node: Node) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        settings = self.settings.model_dump(mode="json", exclude=AGENT_FIELDS_DROPPED)
        settings["home"] = str(self.settings.home / "nodes" / node.node_id[:12])
        try:
            node.agent = self._agent_class.options(
                name=f"coldbrew-agent-{self.platform}-{node.node_id[:16]}",
                namespace=NAMESPACE,
                get_if_exists=True,
                lifetime="detached",
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
            ).remote(settings, str(self.settings.artifacts_dir), node.node_id)
            hello = await asyncio.wait_for(node.agent.hello.remote(node.ip), 120)
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(hello["host"], hello["port"]), CONNECT_TIMEOUT_S
            )
            writer.write(hello["watch_token"] + self.owner)
            await writer.drain()
        except Exception as exc:  # a node that is going away, or an agent that cannot start
            log.warning("no agent on node %s yet: %s", node.node_id[:12], exc)
            return
        node.host, node.port, node.agent_pid = hello["host"], hello["port"], hello["pid"]
        node.ready = True
        node.watch = asyncio.create_task(self._watch(node, reader, writer))
        log.info("node %s joined (agent pid %s)", node.node_id[:12], node.agent_pid)

    async def _watch(
        self, node: Node, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await reader.read()  # the agent never writes: this returns when it dies
        writer.close()
        if node.alive and node.ready:
            self._lost(node, "its node agent has gone")

    def _lost(self, node: Node, why: str) -> None:
        node.alive = False
        node.ready = False
        log.warning(
            "node %s lost (%s): %d instance(s) of this gateway fail",
            node.node_id[:12],
            why,
            len(node.instances),
        )
        for instance_id in list(node.instances):
            writer = self.writers.get(instance_id)
            if writer is not None:
                writer.close()  # its Instance sees the channel close: INSTANCE_CRASHED
        for key, (node_id, _) in list(self.templates.items()):
            if node_id == node.node_id:
                del self.templates[key]
        self.nodes.pop(node.node_id, None)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self.refresh()
            except Exception:
                log.warning("could not read the Ray node table", exc_info=True)

    # --- placement ------------------------------------------------------------------------------
    def choose(
        self,
        spec: InstanceSpec,
        key: str | None,
        template: bool = False,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> Node:
        """The node for an instance of ``spec`` or, with ``template``, for its version template
        (which holds no instance's resources: any node that has them will do)."""
        if self.bundles.manifests.get(spec.bundle_dir) is None:
            # Not a stored bundle (a deploy's trial load runs from the upload folder): only
            # this gateway's own node can read it.
            local = self.nodes.get(self.local_node)
            if local is not None and local.ready and self.local_node not in exclude:
                return local
            raise NoCapacity("the gateway's own Ray node has no node agent; try again shortly")
        need = needs(spec)
        fitting = [
            n
            for n in self.nodes.values()
            if n.ready and n.node_id not in exclude and (n.has if template else n.fits)(need)
        ]
        if not fitting:
            asked = {k: v for k, v in need.items() if k != "memory"}
            raise NoCapacity(
                f"no Ray node has room for an instance of {spec.function_name} "
                f"(memory_mb={spec.memory_mb}, resources={asked}); "
                f"{sum(n.ready for n in self.nodes.values())} node(s) up"
            )
        holder = self.templates.get(key or "", ("", None))[0]
        return min(
            fitting,
            key=lambda n: (
                # as many instances as CPUs: spread before crowding it more (a template goes
                # where its version's instances are)
                not template and n.load() >= 1.0,
                n.node_id != holder,
                -n.count(key or ""),
                n.load(),
                n.node_id != self.local_node,
            ),
        )

    # --- the Backend protocol -------------------------------------------------------------------
    def _prepared(self, spec: InstanceSpec) -> tuple[dict[str, Any], dict[str, str] | None]:
        environment = dict(spec.environment)
        if self.secret_environment is not None and spec.config.get("secrets"):
            # Resolved here: the agents never see the secrets store or its key.
            environment.update(self.secret_environment(spec.config))
        values = dataclasses.asdict(dataclasses.replace(spec, environment=environment))
        return values, self.bundles.manifests.get(spec.bundle_dir)

    async def spawn(self, spec: InstanceSpec) -> SpawnedInstance:
        await asyncio.to_thread(self.bundles.verify, spec.bundle_dir)
        values, manifest = self._prepared(spec)
        tried: set[str] = set()
        unreachable = 0
        while True:  # choose raises NoCapacity once every node that could fit was tried
            node = self.choose(spec, spec.template_key, exclude=tried)
            try:
                return await self._spawn_on(node, spec, values, manifest)
            except NodeFull as exc:  # other gateways filled it since: the next node
                tried.add(node.node_id)
                log.info("%s; trying another node", exc.message)
            except NodeUnreachable as exc:
                # A node going away before the gateway has heard of it: once more elsewhere.
                unreachable += 1
                if unreachable == SPAWN_ATTEMPTS:
                    raise BackendError(exc.message) from None
                tried.add(node.node_id)
                log.warning("%s; trying another node", exc.message)

    async def _spawn_on(
        self,
        node: Node,
        spec: InstanceSpec,
        values: dict[str, Any],
        manifest: dict[str, str] | None,
    ) -> SpawnedInstance:
        token = secrets.token_bytes(TOKEN_BYTES)
        # Reserve before the first await, so concurrent cold starts see each other.
        node.instances[spec.instance_id] = needs(spec)
        node.keys[spec.instance_id] = spec.template_key or ""
        self.placed[spec.instance_id] = node.node_id
        writer: asyncio.StreamWriter | None = None
        try:
            # A trial load (no manifest) runs on this node whatever it has: not admitted by
            # resources, as it never was.
            need = needs(spec) if manifest is not None else None
            call = node.agent.spawn.remote(
                values, manifest, token, self.owner.hex(), need, node.total
            )
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(node.host, node.port, limit=m.MAX_FRAME),
                CONNECT_TIMEOUT_S,
            )
            writer.write(token)
            reply = await call
        except Exception as exc:
            if writer is not None:
                writer.close()
            self._forget(spec.instance_id)
            raise NodeUnreachable(
                f"could not start an instance on node {node.node_id[:12]}: {exc}"
            ) from None
        node.heard(reply.get("others"))
        if "pid" not in reply:
            writer.close()
            self._forget(spec.instance_id)
            if reply.get("code") == "NO_CAPACITY":
                raise NodeFull(reply.get("message", "node full"))
            raise _error(reply)
        self.writers[spec.instance_id] = writer
        return SpawnedInstance(spec.instance_id, reply["pid"], reader, writer, reply["source"])

    async def start_version_template(self, key: str, spec: InstanceSpec) -> float:
        if key in self.templates:
            return 0.0
        await asyncio.to_thread(self.bundles.verify, spec.bundle_dir)
        node = self.choose(spec, key, template=True)
        values, manifest = self._prepared(spec)
        try:
            reply = await node.agent.start_version_template.remote(
                key, values, manifest, self.owner.hex()
            )
        except Exception as exc:
            message = f"node {node.node_id[:12]} could not start a template: {exc}"
            raise BackendError(message) from None
        if "load_ms" not in reply:
            raise _error(reply)
        if node.alive:
            self.templates[key] = (node.node_id, reply["pid"])
        return float(reply["load_ms"])

    def stop_version_template(self, key: str) -> None:
        node_id, _ = self.templates.pop(key, ("", None))
        node = self.nodes.get(node_id)
        if node is not None and node.ready:  # the agent keeps it while another gateway uses it
            node.agent.stop_version_template.remote(key, self.owner.hex())

    def has_version_template(self, key: str) -> bool:
        return key in self.templates

    def version_template_pid(self, key: str) -> int | None:
        return self.templates.get(key, ("", None))[1]

    def kill(self, instance_id: str) -> None:
        node = self.nodes.get(self.placed.get(instance_id, ""))
        if node is not None and node.ready:
            node.agent.kill.remote(instance_id)
        else:  # its node is gone: nothing there to kill, but the caller waits for the close
            writer = self.writers.get(instance_id)
            if writer is not None:
                writer.close()

    def release(self, instance_id: str) -> None:
        node = self.nodes.get(self.placed.get(instance_id, ""))
        if node is not None and node.ready:
            node.agent.release.remote(instance_id)
        self._forget(instance_id)

    def exceeded_memory(self, instance_id: str) -> bool:
        node = self.nodes.get(self.placed.get(instance_id, ""))
        if node is None or not node.ready:
            return False
        try:
            return bool(
                _ray().get(node.agent.exceeded_memory.remote(instance_id), timeout=CALL_TIMEOUT_S)
            )
        except Exception:
            return False

    def _forget(self, instance_id: str) -> None:
        node_id = self.placed.pop(instance_id, None)
        self.writers.pop(instance_id, None)
        node = self.nodes.get(node_id or "")
        if node is not None:
            node.instances.pop(instance_id, None)
            node.keys.pop(instance_id, None)

    # --- the cluster view -----------------------------------------------------------------------
    async def describe_nodes(self) -> list[dict[str, Any]]:
        """Each Ray node with its capacity, what this gateway placed there, and what its agent
        holds (``GET /v1/nodes``, ``coldbrew nodes``)."""
        ray = _ray()
        table = await asyncio.to_thread(ray.nodes)
        out = []
        for entry in table:
            node = self.nodes.get(entry["NodeID"])
            view: dict[str, Any] = {
                "node_id": entry["NodeID"],
                "address": entry["NodeManagerAddress"],
                "alive": bool(entry["Alive"]),
                "gateway_here": entry["NodeID"] == self.local_node,
                "this_gateway": self.owner.hex(),
                "resources": dict(entry.get("Resources") or {}),
                "agent": None,
            }
            if node is not None and node.ready:
                view["placed_by_this_gateway"] = len(node.instances)
                try:
                    view["agent"] = await asyncio.wait_for(node.agent.describe.remote(), 5)
                except Exception as exc:
                    view["agent"] = {"error": str(exc)}
            out.append(view)
        return out


def _reachable(address: str) -> None:
    """Fail at once on an address nobody listens on: ``ray.init`` would retry for minutes."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise BackendError(
            f"no Ray cluster answers at {address!r} ({exc.strerror or exc}); start one with "
            "`ray start --head` or set COLDBREW_RAY_ADDRESS (docs/CLUSTER.md)"
        ) from None


def _error(reply: dict[str, Any]) -> ColdbrewError:
    if "fork_unsafe" in reply:
        return ForkUnsafe(reply["fork_unsafe"])
    return RemoteError(reply.get("code", "BACKEND_ERROR"), reply.get("message", "agent failed"))
