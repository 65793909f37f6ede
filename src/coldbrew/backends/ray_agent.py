"""The node agent: one per Ray node, a Ray actor placed on it, running that node's share of
coldbrew with the local backend's own machinery (runtime template, version templates, spares,
memory limits, isolation). Instances are still processes forked there, not Ray actors.

Channels do not go through Ray. The agent listens on one TCP port of its node's address. To
start an instance, a gateway asks the agent (a Ray call carrying the spec and a fresh 32-byte
random token) and at the same time connects to that port and sends the token. The agent pairs
the two, sets the socket blocking and hands its descriptor to the template, which forks the
instance with it as its channel: the gateway then speaks the usual length-prefixed frames
straight to the instance, with no process in between. A connection whose token no call is
waiting for is closed within seconds. The gateway also keeps one "watch" connection (the
agent's own token, then the gateway's 16-byte owner id) open to each agent: it closes when the
agent dies, which is how a gateway hears within a second that a node's processes are gone, and
when the gateway dies, which is how the agent hears that gateway's templates are orphaned.

Several gateways of one platform share each node's agent, so the agent is the one that knows
the whole node: it admits a spawn only if the instance's ``resources`` and memory fit beside
every gateway's live instances there (``NO_CAPACITY`` otherwise: the gateway tries another
node), and it keeps a version template while any gateway still uses it (a gateway's stop or
death releases only its own claim).

This module imports no Ray: ``backends/ray.py`` wraps :class:`NodeAgent` into an actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from coldbrew.backends.base import InstanceSpec
from coldbrew.backends.local import BackendError
from coldbrew.backends.verifying import VerifyingBackend
from coldbrew.errors import ColdbrewError
from coldbrew.runtime.forksafety import ForkUnsafe
from coldbrew.runtime.isolation import mounts_under, unmount_under
from coldbrew.security.artifacts import VerifiedBundles, artifact_cipher
from coldbrew.security.home import harden
from coldbrew.settings import Settings
from coldbrew.store import LocalArtifactStore
from coldbrew.store.s3 import S3ArtifactStore

log = logging.getLogger("coldbrew.agent")

TOKEN_BYTES = 32
OWNER_BYTES = 16
"""A gateway's id on its watch connection (``RayBackend.owner``)."""
HELLO_TIMEOUT_S = 5.0
"""A connection must send its token within this long, and a call must claim it within
``CLAIM_TIMEOUT_S`` after that, or it is closed."""
CLAIM_TIMEOUT_S = 10.0


class AgentBackend(VerifyingBackend):
    """The local backend, forking an instance onto a socket it is given (the gateway's TCP
    connection) instead of one end of a fresh socketpair."""

    async def spawn_on(self, spec: InstanceSpec, channel: socket.socket) -> tuple[int, str]:
        await asyncio.to_thread(self.bundles.verify, spec.bundle_dir)
        spawn = self._spawn_message(spec)
        try:
            reply, source = await asyncio.to_thread(
                self._fork, spec.template_key, spawn, channel.fileno()
            )
        except BaseException:
            work_dir = self.work_dirs.pop(spec.instance_id, None)
            if work_dir is not None:
                self.isolation.remove_tmp(work_dir)
            raise
        finally:
            channel.close()  # the instance holds its own copy now
        key = spec.template_key
        if key in self.version_templates and spawn.isolation is not None:
            self._refill_soon(key, spec.memory_mb, spawn.isolation)  # type: ignore[arg-type]
        self.track(spec.instance_id, reply, spec.memory_mb)
        return reply.pid, source + ("+spare" if reply.spare else "")


def agent_store(values: dict[str, Any], artifacts_dir: str) -> LocalArtifactStore | S3ArtifactStore:
    """The platform's artifact store as seen from this node: the bucket, or the folder the
    gateway uses (shared storage, or one machine)."""
    settings = Settings(**values)
    cipher = artifact_cipher(settings)
    if settings.artifacts_url:
        return S3ArtifactStore.from_url(settings.artifacts_url, cipher, settings.s3_endpoint_url)
    return LocalArtifactStore(Path(artifacts_dir), cipher=cipher)


class NodeAgent:
    """Owns one node's templates and instances. Every method is called through Ray."""

    def __init__(self, values: dict[str, Any], artifacts_dir: str, node_id: str) -> None:
        self.values = values
        self.artifacts_dir = artifacts_dir
        self.node_id = node_id
        self.backend: AgentBackend | None = None
        self.bundles: VerifiedBundles | None = None
        self.settings: Settings | None = None
        self.listener: socket.socket | None = None
        self.address: tuple[str, int] = ("", 0)
        self.watch_token = secrets.token_bytes(TOKEN_BYTES)
        self.watchers: dict[socket.socket, str] = {}
        """Each gateway's watch connection -> its owner id."""
        self.holding: dict[str, tuple[str, dict[str, float]]] = {}
        """instance id -> (owner, resources it holds): what every gateway placed here."""
        self.spawning: set[str] = set()
        """Instances being forked: held, though not in the backend's pids yet."""
        self.template_owners: dict[str, set[str]] = {}
        """version template key -> the gateways using it; stopped when none is left."""
        self._template_starts: dict[str, asyncio.Future[float]] = {}
        """Starts under way: a second gateway asking for the same template waits for it."""
        self.waiting: dict[bytes, asyncio.Future[socket.socket]] = {}
        self.started_at = time.time()
        self._boot_lock: asyncio.Lock | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._greetings: set[asyncio.Task[None]] = set()

    async def hello(self, host: str) -> dict[str, Any]:
        """Start on first call (idempotent: every gateway calls it); where to connect."""
        if self._boot_lock is None:
            self._boot_lock = asyncio.Lock()
        async with self._boot_lock:
            if self.backend is None:
                await self._boot(host)
        assert self.backend is not None
        return {
            "node_id": self.node_id,
            "host": self.address[0],
            "port": self.address[1],
            "pid": os.getpid(),
            "watch_token": self.watch_token,
            "enforcement": self.backend.enforcement,
            "isolation": self.backend.isolation.enabled,
        }

    async def _boot(self, host: str) -> None:
        settings = Settings(**self.values)
        for folder in (settings.home, settings.bundles_dir, settings.run_dir, settings.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(harden, settings)
        self.settings = settings
        # Before our own instances exist: what agents killed on this machine left mounted.
        await asyncio.to_thread(sweep_dead_agents, settings.home)
        self.bundles = VerifiedBundles(agent_store(self.values, self.artifacts_dir))
        backend = AgentBackend(settings, self.bundles)
        await backend.start()
        self.backend = backend
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, 0))
        listener.listen(128)
        listener.setblocking(False)
        self.listener = listener
        self.address = (host, listener.getsockname()[1])
        self._accept_task = asyncio.create_task(self._accept_forever())
        log.info("node agent %s listening on %s:%s", self.node_id[:12], *self.address)

    # --- channels -------------------------------------------------------------------------------
    async def _accept_forever(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.listener is not None
        while True:
            conn, _ = await loop.sock_accept(self.listener)
            greeting = asyncio.create_task(self._greet(conn))
            self._greetings.add(greeting)  # held until done: the loop keeps weak references
            greeting.add_done_callback(self._greetings.discard)

    async def _greet(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            token = await asyncio.wait_for(_recv_exactly(loop, conn, TOKEN_BYTES), HELLO_TIMEOUT_S)
        except (TimeoutError, OSError, EOFError):
            conn.close()
            return
        if secrets.compare_digest(token, self.watch_token):
            try:
                owner = await asyncio.wait_for(_recv_exactly(loop, conn, OWNER_BYTES), 5)
            except (TimeoutError, OSError, EOFError):
                conn.close()
                return
            self.watchers[conn] = owner.hex()  # held open: closes when either side dies
            await self._watch(conn)
            return
        future = self._waiter(token)
        if future.done():  # a second connection with a token already used
            conn.close()
            return
        future.set_result(conn)
        # Unclaimed (no call is waiting for this token): drop it after a while.
        loop.call_later(CLAIM_TIMEOUT_S, self._drop_unclaimed, token)

    async def _watch(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while await loop.sock_recv(conn, 64):  # a gateway never writes: EOF when it dies
                pass
        owner = self.watchers.pop(conn, "")
        conn.close()
        if owner and owner not in self.watchers.values():  # its last connection here
            self._gone(owner)

    def _gone(self, owner: str) -> None:
        """A gateway went away: its claims on templates end (its instances lose their
        channels and exit by themselves; their resources are freed when their pids end)."""
        log.info("gateway %s left node %s", owner[:8], self.node_id[:12])
        for key in [k for k, owners in self.template_owners.items() if owner in owners]:
            self._unclaim(key, owner)

    def _waiter(self, token: bytes) -> asyncio.Future[socket.socket]:
        future = self.waiting.get(token)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self.waiting[token] = future
        return future

    def _drop_unclaimed(self, token: bytes) -> None:
        future = self.waiting.pop(token, None)
        if future is not None and future.done() and not future.cancelled():
            future.result().close()

    async def _claim(self, token: bytes) -> socket.socket:
        future = self._waiter(token)
        try:
            conn = await asyncio.wait_for(asyncio.shield(future), CLAIM_TIMEOUT_S)
        except TimeoutError:
            raise BackendError("the gateway did not connect to the instance's channel") from None
        finally:
            self.waiting.pop(token, None)
        conn.setblocking(True)  # the instance uses blocking reads and writes on it
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    # --- what gateways call ---------------------------------------------------------------------
    # Failures come back as plain data ({"code", "message"} or {"fork_unsafe"}), never as
    # pickled exceptions: the gateway raises its own typed error from them.
    async def spawn(
        self,
        spec: dict[str, Any],
        manifest: dict[str, str] | None,
        token: bytes,
        owner: str = "",
        need: dict[str, float] | None = None,
        total: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        """Fork an instance onto the gateway's connection (``token``), if ``need`` fits in
        ``total`` (the node's resources, from Ray) beside every gateway's live instances."""
        instance_id = spec["instance_id"]
        if need is not None and total is not None:
            # Checked and held with no await in between: concurrent spawns see each other.
            short = _short_of(need, total, self._held())
            if short:
                message = f"node {self.node_id[:12]} has no {short} left (its instances hold it)"
                return {"code": "NO_CAPACITY", "message": message, "others": self.usage(owner)}
            self.holding[instance_id] = (owner, dict(need))
        self.spawning.add(instance_id)
        try:
            backend = self._backend()
            local = await self._local_spec(spec, manifest)
            conn = await self._claim(token)
            pid, source = await backend.spawn_on(local, conn)
        except Exception as exc:
            self.holding.pop(instance_id, None)
            return _failure(exc)
        finally:
            self.spawning.discard(instance_id)
        return {"pid": pid, "source": source, "others": self.usage(owner)}

    async def start_version_template(
        self, key: str, spec: dict[str, Any], manifest: dict[str, str] | None, owner: str = ""
    ) -> dict[str, Any]:
        self.template_owners.setdefault(key, set()).add(owner)  # before any await
        try:
            backend = self._backend()
            start = self._template_starts.get(key)
            if start is None:  # the first asker starts it; the others wait for that start
                start = asyncio.ensure_future(self._start_template(key, spec, manifest))
                self._template_starts[key] = start  # before any await: the next asker sees it
                start.add_done_callback(lambda _: self._template_starts.pop(key, None))
            load_ms = await asyncio.shield(start)
        except Exception as exc:
            self._unclaim(key, owner)
            return _failure(exc)
        return {"load_ms": load_ms, "pid": backend.version_template_pid(key)}

    async def _start_template(
        self, key: str, spec: dict[str, Any], manifest: dict[str, str] | None
    ) -> float:
        local = await self._local_spec(spec, manifest)
        return await self._backend().start_version_template(key, local)

    def stop_version_template(self, key: str, owner: str = "") -> None:
        """This gateway no longer uses the template; it stops when no gateway does."""
        self._unclaim(key, owner)

    def _unclaim(self, key: str, owner: str) -> None:
        owners = self.template_owners.get(key, set())
        owners.discard(owner)
        if not owners:
            self.template_owners.pop(key, None)
            self._backend().stop_version_template(key)

    def kill(self, instance_id: str) -> None:
        self._backend().kill(instance_id)

    def release(self, instance_id: str) -> None:
        self.holding.pop(instance_id, None)
        self._backend().release(instance_id)

    def _held(self) -> dict[str, float]:
        """Resources held by the live instances of every gateway (a gateway killed with
        SIGKILL never releases: its instances count until their processes end)."""
        pids = self._backend().pids
        for instance_id in list(self.holding):
            if instance_id in self.spawning:
                continue
            pid = pids.get(instance_id)
            if pid is None or not _alive(pid):
                del self.holding[instance_id]
        total: dict[str, float] = {}
        for _, need in self.holding.values():
            for name, amount in need.items():
                total[name] = total.get(name, 0.0) + amount
        return total

    def usage(self, owner: str) -> dict[str, float]:
        """Resources the other gateways' instances hold here (placement hints for ``owner``)."""
        self._held()  # drops the ended
        out: dict[str, float] = {}
        for holder, need in self.holding.values():
            if holder != owner:
                for name, amount in need.items():
                    out[name] = out.get(name, 0.0) + amount
        return out

    def exceeded_memory(self, instance_id: str) -> bool:
        return self._backend().exceeded_memory(instance_id)

    def describe(self) -> dict[str, Any]:
        backend = self._backend()
        return {
            "node_id": self.node_id,
            "agent_pid": os.getpid(),
            "address": f"{self.address[0]}:{self.address[1]}",
            "instances": sorted(backend.pids),
            "instance_pids": dict(backend.pids),
            "templates": {key: s.pid for key, s in backend.version_templates.items()},
            "template_owners": {k: sorted(v) for k, v in self.template_owners.items()},
            "instances_by_gateway": _count_by_owner(self.holding),
            "held": self._held(),
            "runtime_template_pid": backend.template.process.pid
            if backend.template.process
            else None,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    async def shutdown(self) -> None:
        """Stop every process of this node (the cluster is being torn down), and unmount every
        private /tmp this agent made, tracked or not."""
        if self.backend is not None:
            await self.backend.stop()
            await asyncio.to_thread(self._unmount_all)
        for conn in list(self.watchers):
            conn.close()

    def __ray_shutdown__(self) -> None:
        """Ray's hook on a graceful actor exit (``__ray_terminate__``, ``exit_actor``): kill this
        node's processes and unmount their /tmp folders before the process goes. Synchronous:
        Ray calls it as a plain method, not as a task on the actor's loop. A SIGKILL of the
        agent or of its raylet (``ray stop``, a removed node) never gets here: the next agent
        started on this machine sweeps what that left (``sweep_dead_agents``)."""
        backend = self.backend
        if backend is None:
            return
        for instance_id in list(backend.processes):
            backend.kill(instance_id)
        for key in list(backend.version_templates):
            backend.stop_version_template(key)
        backend.template.stop()
        self._unmount_all()

    def _unmount_all(self) -> None:
        assert self.backend is not None
        folder = self.backend.isolation.instances_dir()
        if unmount_under(str(folder)):
            log.info("node agent %s: unmounted what was left in %s", self.node_id[:12], folder)
        if not mounts_under(str(folder)):
            shutil.rmtree(folder, ignore_errors=True)

    # --- helpers --------------------------------------------------------------------------------
    def _backend(self) -> AgentBackend:
        if self.backend is None:
            raise BackendError("the node agent has not started")
        return self.backend

    async def _local_spec(
        self, spec: dict[str, Any], manifest: dict[str, str] | None
    ) -> InstanceSpec:
        """The spec with its bundle folder on this node: materialised from the artifact store
        (verified by hash) when the gateway says which stored bundle it is."""
        local = InstanceSpec(**spec)
        if manifest is None:
            return local  # a deploy's trial load: the gateway placed it on its own node
        assert self.bundles is not None and self.settings is not None
        name = Path(local.bundle_dir).name
        dest = self.settings.bundles_dir / name
        path = await asyncio.to_thread(self.bundles.materialize, manifest, dest)
        return InstanceSpec(**{**spec, "bundle_dir": str(path)})


def sweep_dead_agents(home: Path) -> int:
    """Detach the private /tmp mounts that dead agents left on this machine; how many went.

    Ray kills a node's whole process tree with SIGKILL when the node goes (a raylet killed or
    removed, ``ray stop`` after its grace period) and an agent's children when the agent dies
    (seen with Ray 2.60: the runtime template goes at once), so neither the agent
    nor its runtime template lives to unmount its instances' tmpfs mounts. The next agent of
    this platform on this machine does it: every ``nodes/*/run/instances/g<pid>`` folder
    (``Isolator.instances_dir``) whose agent ``pid`` is not a live process here, its own node's
    and its siblings' (a node that restarts gets a new id, hence a new folder). Only this
    machine's mount table is read: another machine's mounts, even in a shared home, are not
    visible here. A dead agent's pid reused by a live process keeps its folder until a later
    sweep: never unmount what might be in use."""
    nodes = home.parent if home.parent.name == "nodes" else None
    folders = nodes.glob("*/run/instances/g*") if nodes is not None else ()
    own = (home / "run" / "instances").glob("g*")
    gone = 0
    for folder in {*folders, *own}:
        pid = folder.name[1:]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        gone += unmount_under(str(folder))
        if not mounts_under(str(folder)):  # never delete into a tmpfs still mounted (not root)
            shutil.rmtree(folder, ignore_errors=True)
    if gone:
        log.info("node agent: unmounted %d private /tmp folder(s) left by dead agents", gone)
    return gone


def _short_of(need: dict[str, float], total: dict[str, float], held: dict[str, float]) -> str:
    """What ``need`` lacks beside ``held`` in ``total`` ("" when it fits)."""
    for name, amount in need.items():
        if amount and held.get(name, 0.0) + amount > total.get(name, 0.0) + 1e-9:
            return name
    return ""


def _count_by_owner(holding: dict[str, tuple[str, dict[str, float]]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for owner, _ in holding.values():
        counts[owner] = counts.get(owner, 0) + 1
    return counts


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another uid's (isolation): it exists
        return True
    return True


def _failure(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, ForkUnsafe):
        return {"fork_unsafe": exc.reason}
    if isinstance(exc, ColdbrewError):
        return {"code": exc.code, "message": exc.message}
    log.exception("node agent call failed")
    return {"code": "BACKEND_ERROR", "message": f"{type(exc).__name__}: {exc}"}


async def _recv_exactly(loop: asyncio.AbstractEventLoop, conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(conn, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
