"""The default backend: instances are processes on this machine, forked from a template server.

The gateway never forks itself (it has threads and sockets). It starts one template server
(``coldbrew.runtime.template``) and asks it over a SOCK_SEQPACKET control socket to fork each
instance, handing over the instance's end of a fresh socketpair with the request.

Isolation (``runtime/isolation.py``, ``security/home.py``): each function's processes run as its
own uid, each instance has a private tmpfs as TMPDIR, and everything an instance starts is
killed with it (its process group and every process in its memory cgroup).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from coldbrew.backends.base import InstanceSpec, SpawnedInstance
from coldbrew.backends.memory import CgroupMemoryLimiter, unique_memory_bytes
from coldbrew.backends.process import ChildProcess, ProcessGroup
from coldbrew.errors import ColdbrewError
from coldbrew.runtime import cgroups
from coldbrew.runtime import messages as m
from coldbrew.runtime.cgroups import ROOT_VARIABLE
from coldbrew.runtime.forksafety import ForkUnsafe
from coldbrew.runtime.isolation import EXEC_PYTHONPATH, TMP_ROOT, decide, exec_command
from coldbrew.runtime.template import MAX_PACKET
from coldbrew.security.home import Isolator
from coldbrew.settings import Settings

log = logging.getLogger("coldbrew.backend")

# One thread each for BLAS/OpenMP/ONNX Runtime: concurrency comes from instances, and a template
# with thread pools cannot be forked safely.
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}
PASS_THROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV")


class BackendError(ColdbrewError):
    code = "BACKEND_ERROR"


class TemplateGone(BackendError):
    """The template process died (kill -9, the OOM killer) before it answered a request."""


def base_environment() -> dict[str, str]:
    """What every template and instance sees: never the gateway's own secrets."""
    env = {k: os.environ[k] for k in PASS_THROUGH_ENV if k in os.environ}
    env.update(SINGLE_THREAD_ENV)
    return env


class ForkServer:
    """A template process (the runtime template or a version template) and its control socket."""

    def __init__(self, control: socket.socket, pid: int) -> None:
        self.control = control
        self.process = ProcessGroup(pid)
        self.lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    def request(self, message: m.Spawn | m.SpawnTemplate, fd: int) -> m.Spawned:
        """Blocking: send the request with ``fd`` attached and wait for the fork's answer."""
        with self.lock:
            try:
                socket.send_fds(self.control, [m.encode_packet(message)], [fd])
                data = self.control.recv(MAX_PACKET)
            except OSError as exc:  # ECONNRESET, EPIPE: the process is gone
                raise TemplateGone(f"the template server has gone away ({exc})") from None
        if not data:
            raise TemplateGone("the template server has gone away")
        reply = m.decode_control(data)
        if isinstance(reply, m.Spawned):
            return reply
        why = reply.message if isinstance(reply, m.SpawnFailed) else "unexpected reply"
        raise BackendError(f"the template could not fork: {why}")

    def close(self) -> None:
        self.control.close()
        # A version template leads its own process group: what its user code started at import
        # (and its waiting spare) goes with it. Its instances have sessions of their own.
        self.process.kill()


def await_template_ready(control: socket.socket, timeout_s: float) -> m.TemplateReady:
    control.settimeout(timeout_s)
    try:
        data = control.recv(MAX_PACKET)
    except TimeoutError:
        raise BackendError(f"the template did not get ready within {timeout_s:g} s") from None
    finally:
        control.settimeout(None)
    reply = m.decode_control(data) if data else None
    if isinstance(reply, m.TemplateReady):
        return reply
    if isinstance(reply, m.SpawnFailed):
        raise BackendError(f"the template failed to load: {reply.message}")
    if isinstance(reply, m.PerInstanceInit):
        raise ForkUnsafe(reply.reason)
    raise BackendError("the template exited while starting")


class TemplateServer:
    """The runtime template: a ``python -m coldbrew.runtime.template`` child of the gateway."""

    def __init__(
        self,
        preload: list[str],
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        identity: m.Isolation | None = None,
        work_dir: Path | None = None,
        before_start: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.extra_env = extra_env or {}
        self.preload = preload
        self.log_path = log_path
        self.identity = identity
        """A layer's own runtime template: the function's uid, from its first instruction."""
        self.work_dir = work_dir
        self.before_start = before_start
        """More variables for each (re)start: the cgroup of an unprivileged template's spare."""
        self.process: ChildProcess | None = None
        self.server: ForkServer | None = None
        self.lock = threading.Lock()
        self.preload_ms = 0.0

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = base_environment()
        env["COLDBREW_PRELOAD"] = json.dumps(self.preload)
        env.update(self.extra_env)
        if self.before_start is not None:
            env.update(self.before_start())
        command = [sys.executable, "-m", "coldbrew.runtime.template", str(theirs.fileno())]
        if self.identity is not None:  # dropped before anything of the layer is imported
            command = exec_command(self.identity, [sys.executable, "-P", *command[1:]])
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            popen = subprocess.Popen(
                command,
                cwd=self.work_dir,
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        self.process = ChildProcess(popen)
        theirs.close()
        try:
            ready = await_template_ready(ours, 120)
        except BackendError as exc:
            raise BackendError(f"{exc.message}; see {self.log_path}") from None
        self.server = ForkServer(ours, ready.pid)
        self.preload_ms = ready.preload_ms
        log.info("runtime template ready (pid %s, preload %.0f ms)", ready.pid, ready.preload_ms)

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def ensure_running(self) -> None:
        with self.lock:
            if not self.alive() or self.server is None:
                self.stop()
                self.start()

    def request(self, message: m.Spawn | m.SpawnTemplate, fd: int) -> m.Spawned:
        with self.lock:
            if not self.alive() or self.server is None:
                self.stop()
                self.start()
            assert self.server is not None
            try:
                return self.server.request(message, fd)
            except TemplateGone as exc:
                # Killed after the liveness check (or a child it was forking still held its
                # socket): start it again and ask once more, as _fork does for a version
                # template, instead of failing this caller with a 500.
                log.warning("runtime template is gone (%s); starting it again", exc.message)
                self.stop()
                self.start()
                assert self.server is not None
                return self.server.request(message, fd)

    def stop(self) -> None:
        if self.server is not None:
            self.server.control.close()
            self.server = None
        if self.process is not None:
            self.process.stop(grace_s=5)
            self.process = None


class LocalBackend:
    """Instances as local processes, with memory limits by cgroup or by USS sampling."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.template = TemplateServer(settings.preload_modules, settings.logs_dir / "template.log")
        self.cgroups: CgroupMemoryLimiter | None = None
        self.processes: dict[str, ProcessGroup] = {}
        """Each live instance's process, with its memory cgroup (None: sampled instead)."""
        self.limits_mb: dict[str, int] = {}
        self.over_memory: set[str] = set()
        self.version_templates: dict[str, ForkServer] = {}
        self._sampler: asyncio.Task[None] | None = None
        self.isolation = Isolator(settings, decide(settings.isolation, os.geteuid()))
        self.work_dirs: dict[str, Path] = {}
        """Each live instance's (and version template's) private TMPDIR."""
        self.held: dict[str, int] = {}
        """Per version template: groups it holds unused (``runtime/cgroups.py``, stash)."""
        self.given: dict[str, list[str]] = {}
        self.ready: dict[str, list[str]] = {}
        """Groups made ahead, off the caller's clock, for a version template's next Spawn."""
        self.template_ids: dict[str, str] = {}
        """Per version template key: its id (the name of its private TMPDIR)."""
        self.own_templates: dict[str, TemplateServer] = {}
        """Runtime templates of versions whose dependency layer replaces a preloaded package
        (deploy/layers.py), by ``_own_key``; started on first use."""
        self._own_lock = threading.Lock()
        self.enforcement = "off"
        self.secret_environment: Callable[[dict[str, Any]], dict[str, str]] | None = None
        """Resolves a config's ``[secrets]`` to variables (security/secrets.py); set by the
        platform. Values go into the Spawn frame only, never into a log or a stored spec."""

    @property
    def pids(self) -> dict[str, int]:
        """Each live instance's pid, by instance id (a snapshot of :attr:`processes`)."""
        return {instance_id: process.pid for instance_id, process in self.processes.items()}

    def track(self, instance_id: str, reply: m.Spawned, memory_mb: int) -> ProcessGroup:
        """Hold the handle of a process a template forked for ``instance_id``."""
        process = self.processes[instance_id] = ProcessGroup(reply.pid, reply.cgroup)
        self.limits_mb[instance_id] = memory_mb
        return process

    async def start(self) -> None:
        mode = self.settings.memory_enforcement
        if mode in ("auto", "cgroup"):
            self.cgroups = CgroupMemoryLimiter.create()
            if self.cgroups is None and mode == "cgroup":
                raise BackendError("memory_enforcement=cgroup but no memory cgroup can be made")
        if self.cgroups is not None:
            self.template.extra_env[ROOT_VARIABLE] = str(self.cgroups.root)
        self.template.extra_env["COLDBREW_SPARES"] = "1" if self.settings.spares else "0"
        if self.isolation.enabled:  # it unmounts what is left there when we are gone
            self.template.extra_env[TMP_ROOT] = str(self.isolation.instances_dir())
        await asyncio.to_thread(self.template.start)
        if mode != "off":
            self._sampler = asyncio.create_task(self._sample_memory())
        self.enforcement = "cgroup" if self.cgroups else ("off" if mode == "off" else "rss")
        await asyncio.to_thread(self.isolation.sweep)  # TMPDIRs of gateways that were killed
        log.info(
            "local backend ready (memory enforcement: %s; isolation: %s)",
            self.enforcement,
            "on" if self.isolation.enabled else "OFF",
        )

    def info(self) -> dict[str, object]:
        """What ``GET /v1/info`` says about where instances run and how they are held."""
        isolation: dict[str, object] = {
            "enabled": self.isolation.enabled,
            "reason": self.isolation.decision.reason,
            "setting": self.settings.isolation,
        }
        if self.isolation.enabled:
            isolation.update(
                uid_base=self.settings.isolation_uid_base,
                no_new_privs=True,
                private_tmp="tmpfs" if self.isolation.tmpfs else "folder",
                tmp_mb=self.settings.instance_tmp_mb,
                max_processes=self.settings.instance_max_processes,
                max_open_files=self.settings.instance_max_open_files,
            )
        return {"backend": "local", "memory_enforcement": self.enforcement, "isolation": isolation}

    async def stop(self) -> None:
        if self._sampler:
            self._sampler.cancel()
        for instance_id in list(self.processes):
            self.kill(instance_id)
        for key in list(self.version_templates):
            self.stop_version_template(key)
        await asyncio.to_thread(self.template.stop)
        for own in list(self.own_templates.values()):
            await asyncio.to_thread(own.stop)
        dirs = [self.work_dirs.pop(instance_id) for instance_id in list(self.work_dirs)]
        await asyncio.gather(*(asyncio.to_thread(self.isolation.remove_tmp, d) for d in dirs))
        if self.cgroups:
            await asyncio.sleep(0.05)
            self.cgroups.close()

    def instance_environment(self, spec: InstanceSpec, work_dir: Path) -> dict[str, str]:
        env = base_environment()
        env.update(
            {
                "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
                "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.function_name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": f"[{spec.version}]{spec.instance_id}",
                "AWS_REGION": "us-east-1",
                "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
                "AWS_DEFAULT_REGION": "us-east-1",
                "LAMBDA_TASK_ROOT": spec.bundle_dir,
                "_HANDLER": str(spec.config.get("handler", "")),
                "TMPDIR": str(work_dir),
            }
        )
        env.update(spec.environment)
        if self.secret_environment is not None and spec.config.get("secrets"):
            env.update(self.secret_environment(spec.config))
        if self.settings.feature_cache_url and any(
            f.get("cache") == "redis" for f in spec.config.get("features") or ()
        ):
            env["COLDBREW_FEATURE_CACHE_URL"] = self.settings.feature_cache_url
        return env

    def _spawn_message(self, spec: InstanceSpec) -> m.Spawn:
        work_dir = self.isolation.instances_dir() / spec.instance_id
        log_path = self.settings.logs_dir / "functions" / f"{spec.function_name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        identity = self.isolation.identity(spec.function_name)
        if identity is not None:
            self.isolation.keep_reach()
            self.isolation.grant_bundle(spec.bundle_dir, identity.uid)
        self.isolation.make_tmp(work_dir, identity)
        self.work_dirs[spec.instance_id] = work_dir
        return m.Spawn(
            instance_id=spec.instance_id,
            function_name=spec.function_name,
            version=spec.version,
            bundle_dir=spec.bundle_dir,
            config=spec.config,
            environment=self.instance_environment(spec, work_dir),
            work_dir=str(work_dir),
            log_path=str(log_path),
            run_validation=spec.run_validation,
            isolation=identity,
        )

    async def spawn(self, spec: InstanceSpec) -> SpawnedInstance:
        spawn = self._spawn_message(spec)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            reply, source = await asyncio.to_thread(
                self._fork, spec.template_key, spawn, theirs.fileno()
            )
        except BaseException:
            ours.close()
            work_dir = self.work_dirs.pop(spec.instance_id, None)
            if work_dir is not None:
                self.isolation.remove_tmp(work_dir)
            raise
        finally:
            theirs.close()
        key = spec.template_key
        if source == "runtime-template":
            key = self._own_key(spawn)
        templates = self.version_templates.keys() | self.own_templates.keys()
        if key in templates and spawn.isolation is not None:
            self._refill_soon(key, spec.memory_mb, spawn.isolation)  # type: ignore[arg-type]
        process = self.track(spec.instance_id, reply, spec.memory_mb)
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=m.MAX_FRAME)
        source += "+spare" if reply.spare else ""
        return SpawnedInstance(spec.instance_id, reply.pid, reader, writer, source, process)

    def _fork(self, template_key: str | None, spawn: m.Spawn, fd: int) -> tuple[m.Spawned, str]:
        """Fork from the version's template when there is one, else from the runtime template."""
        server = self.version_templates.get(template_key) if template_key else None
        if server is not None and template_key is not None:
            try:
                reply = server.request(self._with_groups(template_key, spawn), fd)
                self._used_groups(template_key, reply)
                return reply, "version-template"
            except (BackendError, OSError) as exc:
                log.warning(
                    "version template %s is gone (%s); using the runtime template",
                    template_key,
                    exc,
                )
                self.stop_version_template(template_key or "")
        template = self._runtime_template(spawn)
        own = self._own_key(spawn) if template.identity is not None else None
        if own is not None:  # it runs as the function's uid: its forks' groups come from us
            template.ensure_running()  # first: a (re)start counts its groups afresh
            spawn = self._with_groups(own, spawn)
        reply = template.request(spawn, fd)
        if own is not None:
            self._used_groups(own, reply)
        return reply, "runtime-template"

    @staticmethod
    def _own_key(spawn: m.Spawn) -> str | None:
        """Which own runtime template ``spawn`` forks from (None: the shared one). Per layer
        and function (its uid; and its memory_mb, the limit of its spares' groups): the
        template imports the layer as that function, never as root."""
        layer = spawn.config.get("dependency_layer")
        if not (isinstance(layer, str) and spawn.config.get("own_runtime_template")):
            return None
        if spawn.isolation is None:
            return f"own:{layer}"
        memory_mb = int(spawn.config.get("memory_mb", 512))
        return f"own:{layer}:{spawn.isolation.uid}:{memory_mb}"

    def _runtime_template(self, spawn: m.Spawn) -> TemplateServer:
        """The shared runtime template, or the version's own when its layer replaces a package
        the shared one preloaded: started with the layer first on its path, so its numpy (say)
        is the layer's from the first import on. With isolation on it runs as the function's
        uid (``runtime/isolation.py`` ``exec_as``), with its limits, ``no_new_privs`` and a
        private TMPDIR, before it imports anything; its output goes to the function's log."""
        key = self._own_key(spawn)
        if key is None:
            return self.template
        with self._own_lock:
            server = self.own_templates.get(key)
            if server is None:
                server = self._make_own_template(key, spawn)
                self.own_templates[key] = server
        return server

    def _make_own_template(self, key: str, spawn: m.Spawn) -> TemplateServer:
        layer = str(spawn.config["dependency_layer"])
        path = os.pathsep.join(filter(None, [layer, os.environ.get("PYTHONPATH")]))
        identity = spawn.isolation
        env = dict(self.template.extra_env)
        if identity is None:
            log_path = self.settings.logs_dir / f"template-{Path(layer).name[:12]}.log"
            env["PYTHONPATH"] = path
            return TemplateServer(self.settings.preload_modules, log_path, env)
        env[EXEC_PYTHONPATH] = path  # for the template, not for the drop before it
        memory_mb = int(spawn.config.get("memory_mb", 512))
        name = f"own-{identity.uid}-{Path(layer).name[:12]}-{memory_mb}"
        work_dir = self.isolation.instances_dir() / name
        self.isolation.make_tmp(work_dir, identity)
        self.work_dirs[key] = work_dir
        env["TMPDIR"] = str(work_dir)

        def first_spare_group() -> dict[str, str]:
            """As for a version template: the gateway makes its forks' memory cgroups."""
            self.held[key] = 0
            if self.cgroups is None or not self.settings.spares:
                return {}
            root = self.cgroups.root
            groups = cgroups.make_for(root, 1, memory_mb, identity.uid, identity.gid)
            self.given.setdefault(key, []).extend(groups)
            return {"COLDBREW_TEMPLATE_CGROUPS": json.dumps(groups)}

        return TemplateServer(
            self.settings.preload_modules,
            Path(spawn.log_path),
            env,
            identity=identity,
            work_dir=work_dir,
            before_start=first_spare_group,
        )

    # --- version templates ----------------------------------------------------------------------
    async def start_version_template(self, key: str, spec: InstanceSpec) -> float:
        if key in self.version_templates:
            return 0.0
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.held[key] = 0
        self.template_ids[key] = spec.instance_id
        version = self._with_groups(key, self._spawn_message(spec), extra=1)  # +1: its spare
        if self.settings.spares and key in self.held:
            self.held[key] = max(0, self.held[key] - 1)
        request = m.SpawnTemplate(template_id=spec.instance_id, version=version)
        try:
            template = self._runtime_template(version)
            pid = (await asyncio.to_thread(template.request, request, theirs.fileno())).pid
            theirs.close()
            ready = await asyncio.to_thread(await_template_ready, ours, 120)
        except BaseException:
            ours.close()
            theirs.close()
            self.stop_version_template(key)  # not running: only its groups and TMPDIR to free
            raise
        self.version_templates[key] = ForkServer(ours, pid)
        log.info("version template for %s ready (pid %s, load %.0f ms)", key, pid, ready.preload_ms)
        return ready.preload_ms

    def stop_version_template(self, key: str) -> None:
        server = self.version_templates.pop(key, None)
        groups = self.given.pop(key, []) + self.ready.pop(key, [])
        self.held.pop(key, None)
        if server is not None:
            server.close()
            log.info("version template for %s stopped", key)
            if self.cgroups and not self.isolation.enabled:
                self.cgroups.sweep()  # its spare's group, once the spare has gone
        for group in groups:  # those it did not use, once its spare has gone (used: busy)
            self._release_group(group, tries=5)
        self._remove_template_tmp(key)

    def _remove_template_tmp(self, key: str) -> None:
        work_dir = self.work_dirs.pop(self.template_ids.pop(key, ""), None)
        if work_dir is not None:
            self._remove_tmp_soon(work_dir)

    # --- memory cgroups for version templates (they run unprivileged, the gateway makes them) ---
    def _with_groups(self, key: str, spawn: m.Spawn, extra: int = 0) -> m.Spawn:
        """``spawn`` carrying enough pre-made groups for what the template may fork for it:
        one instance and one new spare."""
        if spawn.isolation is None or self.cgroups is None:
            return spawn
        want = max(0, 2 + extra - self.held.get(key, 0))
        ready = self.ready.get(key, [])
        groups = [ready.pop() for _ in range(min(want, len(ready)))]
        identity = spawn.isolation
        memory_mb = int(spawn.config.get("memory_mb", 512))
        root = self.cgroups.root
        groups += cgroups.make_for(root, want - len(groups), memory_mb, identity.uid, identity.gid)
        self.held[key] = self.held.get(key, 0) + len(groups)
        self.given.setdefault(key, []).extend(groups)
        return msgspec.structs.replace(
            spawn, isolation=msgspec.structs.replace(identity, cgroups=groups)
        )

    def _used_groups(self, key: str, reply: m.Spawned) -> None:
        if key in self.held:
            used = 1 if reply.spare or not self.settings.spares else 2
            self.held[key] = max(0, self.held[key] - used)

    def _refill_soon(self, key: str, memory_mb: int, identity: m.Isolation) -> None:
        """Make the next Spawn's groups now, in a thread, while nobody waits for them."""
        if self.cgroups is None or len(self.ready.get(key, [])) >= 2:
            return
        root = self.cgroups.root

        def refill() -> None:
            made = cgroups.make_for(root, 2, memory_mb, identity.uid, identity.gid)
            if key in self.version_templates or key in self.own_templates:
                self.ready.setdefault(key, []).extend(made)
                self.given.setdefault(key, []).extend(made)
            else:
                for group in made:
                    with contextlib.suppress(OSError):
                        os.rmdir(group)

        future = asyncio.get_running_loop().run_in_executor(None, refill)
        future.add_done_callback(_log_failure)

    def has_version_template(self, key: str) -> bool:
        return key in self.version_templates

    def version_template_pid(self, key: str) -> int | None:
        server = self.version_templates.get(key)
        return server.pid if server is not None else None

    def kill(self, instance_id: str) -> None:
        """SIGKILL the instance and everything it started: its process group, and every
        process in its memory cgroup (which a child that called setsid() is still in)."""
        process = self.processes.get(instance_id)
        if process is not None:
            process.kill()

    def exceeded_memory(self, instance_id: str) -> bool:
        if instance_id in self.over_memory:
            return True
        process = self.processes.get(instance_id)
        group = process.cgroup if process is not None else None
        return bool(self.cgroups and group and self.cgroups.oom_killed(group))

    def release(self, instance_id: str) -> None:
        process = self.processes.pop(instance_id, None)
        self.limits_mb.pop(instance_id, None)
        self.over_memory.discard(instance_id)
        if process is not None:
            process.reap()  # what it left running when it ended
            if self.cgroups and process.cgroup:
                self._release_group(process.cgroup, tries=5)
        work_dir = self.work_dirs.pop(instance_id, None)
        if work_dir is not None:
            self._remove_tmp_soon(work_dir)

    def _remove_tmp_soon(self, work_dir: Path) -> None:
        """Unmounting a tmpfs can wait ~10 ms for the kernel: never on the loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.isolation.remove_tmp(work_dir)
            return
        loop.run_in_executor(None, self.isolation.remove_tmp, work_dir).add_done_callback(
            _log_failure
        )

    def _release_group(self, group: str, tries: int) -> None:
        """Remove an instance's group once the processes killed in it have gone (EBUSY until
        then: retried a few times from the loop, never waited for)."""
        assert self.cgroups is not None
        self.cgroups.release(group)
        if tries > 1 and os.path.isdir(group):
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
                loop.call_later(0.2, self._release_group, group, tries - 1)

    async def _sample_memory(self) -> None:
        """Fallback enforcement where no cgroup can be made: sample USS, kill the greedy."""
        while True:
            await asyncio.sleep(0.1)
            for instance_id, process in list(self.processes.items()):
                if process.cgroup:
                    continue  # the kernel enforces this one
                limit = self.limits_mb.get(instance_id)
                used = await asyncio.to_thread(unique_memory_bytes, process.pid)
                if limit and used is not None and used > limit << 20:
                    log.warning(
                        "instance %s uses %d MB, over memory_mb=%d: killing",
                        instance_id,
                        used >> 20,
                        limit,
                    )
                    self.over_memory.add(instance_id)
                    self.kill(instance_id)


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("isolation housekeeping failed: %s", future.exception())


def now_ms() -> int:
    return int(time.time() * 1000)
