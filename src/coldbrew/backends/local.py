"""The default backend: instances are processes on this machine, forked from a template server.

The gateway never forks itself (it has threads and sockets). It starts one template server
(``coldbrew.runtime.template``) and asks it over a SOCK_SEQPACKET control socket to fork each
instance, handing over the instance's end of a fresh socketpair with the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from coldbrew.backends.base import InstanceSpec, SpawnedInstance
from coldbrew.backends.memory import CgroupMemoryLimiter, unique_memory_bytes
from coldbrew.errors import ColdbrewError
from coldbrew.runtime import messages as m
from coldbrew.runtime.cgroups import ROOT_VARIABLE
from coldbrew.runtime.template import MAX_PACKET
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


def base_environment() -> dict[str, str]:
    """What every template and instance sees: never the gateway's own secrets."""
    env = {k: os.environ[k] for k in PASS_THROUGH_ENV if k in os.environ}
    env.update(SINGLE_THREAD_ENV)
    return env


class ForkServer:
    """A template process (the runtime template or a version template) and its control socket."""

    def __init__(self, control: socket.socket, pid: int) -> None:
        self.control = control
        self.pid = pid
        self.lock = threading.Lock()

    def request(self, message: m.Spawn | m.SpawnTemplate, fd: int) -> m.Spawned:
        """Blocking: send the request with ``fd`` attached and wait for the fork's answer."""
        with self.lock:
            socket.send_fds(self.control, [m.encode_packet(message)], [fd])
            data = self.control.recv(MAX_PACKET)
        if not data:
            raise BackendError("the template server has gone away")
        reply = m.decode_control(data)
        if isinstance(reply, m.Spawned):
            return reply
        why = reply.message if isinstance(reply, m.SpawnFailed) else "unexpected reply"
        raise BackendError(f"the template could not fork: {why}")

    def close(self) -> None:
        self.control.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)


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
    raise BackendError("the template exited while starting")


class TemplateServer:
    """The runtime template: a ``python -m coldbrew.runtime.template`` child of the gateway."""

    def __init__(
        self, preload: list[str], log_path: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.extra_env = extra_env or {}
        self.preload = preload
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.server: ForkServer | None = None
        self.lock = threading.Lock()
        self.preload_ms = 0.0

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = base_environment()
        env["COLDBREW_PRELOAD"] = json.dumps(self.preload)
        env.update(self.extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "coldbrew.runtime.template", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                start_new_session=True,
            )
        theirs.close()
        try:
            ready = await_template_ready(ours, 120)
        except BackendError as exc:
            raise BackendError(f"{exc.message}; see {self.log_path}") from None
        self.server = ForkServer(ours, ready.pid)
        self.preload_ms = ready.preload_ms
        log.info("runtime template ready (pid %s, preload %.0f ms)", ready.pid, ready.preload_ms)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def request(self, message: m.Spawn | m.SpawnTemplate, fd: int) -> m.Spawned:
        with self.lock:
            if not self.alive() or self.server is None:
                self.stop()
                self.start()
            assert self.server is not None
            return self.server.request(message, fd)

    def stop(self) -> None:
        if self.server is not None:
            self.server.control.close()
            self.server = None
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


class LocalBackend:
    """Instances as local processes, with memory limits by cgroup or by USS sampling."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.template = TemplateServer(settings.preload_modules, settings.logs_dir / "template.log")
        self.cgroups: CgroupMemoryLimiter | None = None
        self.pids: dict[str, int] = {}
        self.limits_mb: dict[str, int] = {}
        self.over_memory: set[str] = set()
        self.groups: dict[str, str | None] = {}
        """Each live instance's memory cgroup (None: sampled instead)."""
        self.version_templates: dict[str, ForkServer] = {}
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        mode = self.settings.memory_enforcement
        if mode in ("auto", "cgroup"):
            self.cgroups = CgroupMemoryLimiter.create()
            if self.cgroups is None and mode == "cgroup":
                raise BackendError("memory_enforcement=cgroup but no memory cgroup can be made")
        if self.cgroups is not None:
            self.template.extra_env[ROOT_VARIABLE] = str(self.cgroups.root)
        self.template.extra_env["COLDBREW_SPARES"] = "1" if self.settings.spares else "0"
        await asyncio.to_thread(self.template.start)
        if mode != "off":
            self._sampler = asyncio.create_task(self._sample_memory())
        enforcement = "cgroup" if self.cgroups else ("off" if mode == "off" else "rss")
        log.info("local backend ready (memory enforcement: %s)", enforcement)

    async def stop(self) -> None:
        if self._sampler:
            self._sampler.cancel()
        for instance_id in list(self.pids):
            self.kill(instance_id)
        for key in list(self.version_templates):
            self.stop_version_template(key)
        await asyncio.to_thread(self.template.stop)
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
        return env

    def _spawn_message(self, spec: InstanceSpec) -> m.Spawn:
        work_dir = self.settings.run_dir / "instances" / spec.instance_id
        log_path = self.settings.logs_dir / "functions" / f"{spec.function_name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
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
            raise
        finally:
            theirs.close()
        self.pids[spec.instance_id] = reply.pid
        self.groups[spec.instance_id] = reply.cgroup
        self.limits_mb[spec.instance_id] = spec.memory_mb
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=m.MAX_FRAME)
        source += "+spare" if reply.spare else ""
        return SpawnedInstance(spec.instance_id, reply.pid, reader, writer, source)

    def _fork(self, template_key: str | None, spawn: m.Spawn, fd: int) -> tuple[m.Spawned, str]:
        """Fork from the version's template when there is one, else from the runtime template."""
        server = self.version_templates.get(template_key) if template_key else None
        if server is not None:
            try:
                return server.request(spawn, fd), "version-template"
            except (BackendError, OSError) as exc:
                log.warning(
                    "version template %s is gone (%s); using the runtime template",
                    template_key,
                    exc,
                )
                self.stop_version_template(template_key or "")
        return self.template.request(spawn, fd), "runtime-template"

    # --- version templates ----------------------------------------------------------------------
    async def start_version_template(self, key: str, spec: InstanceSpec) -> float:
        if key in self.version_templates:
            return 0.0
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        request = m.SpawnTemplate(template_id=spec.instance_id, version=self._spawn_message(spec))
        try:
            pid = (await asyncio.to_thread(self.template.request, request, theirs.fileno())).pid
            theirs.close()
            ready = await asyncio.to_thread(await_template_ready, ours, 120)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        self.version_templates[key] = ForkServer(ours, pid)
        log.info("version template for %s ready (pid %s, load %.0f ms)", key, pid, ready.preload_ms)
        return ready.preload_ms

    def stop_version_template(self, key: str) -> None:
        server = self.version_templates.pop(key, None)
        if server is not None:
            server.close()
            log.info("version template for %s stopped", key)
            if self.cgroups:
                self.cgroups.sweep()  # its spare's group, once the spare has gone

    def has_version_template(self, key: str) -> bool:
        return key in self.version_templates

    def version_template_pid(self, key: str) -> int | None:
        server = self.version_templates.get(key)
        return server.pid if server is not None else None

    def kill(self, instance_id: str) -> None:
        pid = self.pids.get(instance_id)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def exceeded_memory(self, instance_id: str) -> bool:
        if instance_id in self.over_memory:
            return True
        group = self.groups.get(instance_id)
        return bool(self.cgroups and group and self.cgroups.oom_killed(group))

    def release(self, instance_id: str) -> None:
        self.pids.pop(instance_id, None)
        self.limits_mb.pop(instance_id, None)
        self.over_memory.discard(instance_id)
        group = self.groups.pop(instance_id, None)
        if self.cgroups and group:
            self.cgroups.release(group)
        work_dir = self.settings.run_dir / "instances" / instance_id
        if work_dir.is_dir():
            import shutil

            shutil.rmtree(work_dir, ignore_errors=True)

    async def _sample_memory(self) -> None:
        """Fallback enforcement where no cgroup can be made: sample USS, kill the greedy."""
        while True:
            await asyncio.sleep(0.1)
            for instance_id, pid in list(self.pids.items()):
                if self.groups.get(instance_id):
                    continue  # the kernel enforces this one
                limit = self.limits_mb.get(instance_id)
                used = await asyncio.to_thread(unique_memory_bytes, pid)
                if limit and used is not None and used > limit << 20:
                    log.warning(
                        "instance %s uses %d MB, over memory_mb=%d: killing",
                        instance_id,
                        used >> 20,
                        limit,
                    )
                    self.over_memory.add(instance_id)
                    self.kill(instance_id)


def now_ms() -> int:
    return int(time.time() * 1000)
