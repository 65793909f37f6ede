"""The instance side: load one version's handler and model, then serve invocations forever.

An instance is born by fork from a template (see ``template.py``) with one end of a stream socket
as its channel to the gateway. It answers ``Invoke`` frames with ``Result`` frames, running up to
``concurrency`` handlers at once, and exits when the channel closes, so a gateway that dies never
leaves instances behind.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from coldbrew.runtime import cgroups, features, forksafety, isolation
from coldbrew.runtime import messages as m
from coldbrew.runtime.config import BUILTIN_MODEL_HANDLER, FunctionConfig
from coldbrew.runtime.context import (
    LambdaContext,
    client_context_from,
    function_arn,
    identity_from,
)
from coldbrew.runtime.layers import LayerError, enter_layer
from coldbrew.runtime.logcapture import LogCapture, RequestIdFilter, install_lambda_logging
from coldbrew.runtime.streams import StreamSessions
from coldbrew.runtime.validation import check_validation_sample

LOGS = LogCapture()
REQUEST_IDS = RequestIdFilter()

Handler = Callable[[Any, Any], Any]
BatchHandler = Callable[[list[Any], list[Any]], list[Any]]
JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class LoadError(Exception):
    """Loading the bundle failed; carries the code the gateway reports."""

    def __init__(self, code: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(message)
        self.info = m.ErrorInfo(
            code=code, type=type(self).__name__, message=message, stack=stack or []
        )


def error_info(exc: BaseException, code: str = "FUNCTION_ERROR") -> m.ErrorInfo:
    """Lambda's errorType / errorMessage / stackTrace for an exception raised by user code."""
    frames = traceback.extract_tb(exc.__traceback__)
    stack = [f'  File "{f.filename}", line {f.lineno}, in {f.name}\n    {f.line}\n' for f in frames]
    return m.ErrorInfo(code=code, type=type(exc).__name__, message=str(exc), stack=stack)


class LoadedVersion:
    """The handler and model of one version, loaded once for the instance's whole life."""

    def __init__(self, spawn: m.Spawn) -> None:
        self.spawn = spawn
        self.config = FunctionConfig.model_validate(spawn.config)
        self.bundle_dir = Path(spawn.bundle_dir)
        try:
            enter_layer(self.config.dependency_layer)  # before the model: pickles name classes
        except LayerError as exc:
            raise LoadError("DEPLOY_ERROR", str(exc)) from None
        self.model = self._load_model()
        self.handler = self._import_handler(self.config.handler)
        self.batch_handler = self._batch_handler()
        self.stream_handler = (
            self._import_handler(self.config.stream_handler) if self.config.stream_handler else None
        )
        try:  # declared lookups: parsed here, connected after the fork (runtime/features.py)
            self.features = features.load(self.config, spawn.function_name)
        except ValueError as exc:
            raise LoadError("DEPLOY_ERROR", str(exc)) from None
        self._warming = False

    def _load_model(self) -> Any:
        fmt = self.config.resolved_model_format()
        if fmt is None or self.config.model is None:
            return None
        from coldbrew.runtime.loaders import load_model

        path = self.bundle_dir / self.config.model
        if not path.is_file():
            raise LoadError(
                "DEPLOY_ERROR", f"model file '{self.config.model}' is not in the bundle"
            )
        try:
            return load_model(path, fmt, threads=self.config.threads)
        except MemoryError:
            raise LoadError("OUT_OF_MEMORY", "loading the model exceeded memory_mb") from None
        except Exception as exc:
            raise LoadError(
                "DEPLOY_ERROR",
                f"model '{self.config.model}' does not load: {exc}",
                error_info(exc).stack,
            ) from None

    def _batch_handler(self) -> BatchHandler | None:
        if self.config.batch_handler:
            return self._import_handler(self.config.batch_handler)  # type: ignore[return-value]
        if self.config.handler == BUILTIN_MODEL_HANDLER:
            from coldbrew.runtime.model_handler import batch_handler

            return batch_handler
        return None

    def _import_handler(self, target: str) -> Handler:
        module_name, _, attr = target.partition(":")
        if str(self.bundle_dir) not in sys.path:
            sys.path.insert(0, str(self.bundle_dir))
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise LoadError(
                "DEPLOY_ERROR",
                f"cannot import handler module '{module_name}': {type(exc).__name__}: {exc}",
                error_info(exc).stack,
            ) from None
        handler = getattr(module, attr, None)
        if not callable(handler):
            raise LoadError(
                "DEPLOY_ERROR",
                f"handler '{target}': module '{module_name}' has no callable '{attr}'",
            )
        return handler

    def warm_up(self, model_only: bool = False) -> None:
        """One invocation of a row of zeros, in a version template before it forks.

        The first call of a freshly loaded model pays for lazy imports and first-touch set-up
        (tens of milliseconds for a scikit-learn forest); paid once here, every fork starts
        hot. Only the built-in model handler is warmed (user handlers may have side effects),
        and OpenMP is held to one thread, so no thread pool exists at fork time."""
        n_features = getattr(self.model, "n_features", None)
        if self.batch_handler is None or self.config.handler != BUILTIN_MODEL_HANDLER:
            return
        if self.model is None or not n_features:
            return
        from coldbrew.runtime.loaders import one_openmp_thread

        if model_only:  # a spare: the model's own first-call costs, touching as little as we can
            import numpy as np

            with one_openmp_thread(), contextlib.suppress(Exception):
                self.model.predict(np.zeros((1, n_features)))
            return
        self._warming = True  # never a feature lookup (a connection) in a template
        row = orjson.dumps({"instances": [[0.0] * n_features]})
        item = m.BatchItem(
            request_id="warm-up",
            payload=row,
            deadline_ms=2**62,
            invoked_function_arn=function_arn(self.spawn.function_name),
        )
        with one_openmp_thread(), contextlib.redirect_stdout(io.StringIO()):
            result = self.invoke_batch(m.InvokeBatch(id=0, items=[item]))
        self._warming = False
        if result.results[0].error is not None:
            print(f"coldbrew: warm-up failed: {result.results[0].error.message}", file=sys.stderr)

    def start_instance(self) -> None:
        """Once per instance, after the fork and before its first invocation: the handler
        modules' ``on_instance_start`` and ``coldbrew.after_fork`` hooks (docs/RUNTIME.md)."""
        from coldbrew.runtime.loaders import enter_instance

        enter_instance(self.model)  # PyTorch / LightGBM may use `threads` from now on
        try:
            forksafety.run_instance_hooks(forksafety.handler_modules(self.config))
        except Exception as exc:
            raise LoadError(
                "DEPLOY_ERROR",
                f"{forksafety.HOOK_NAME} raised {type(exc).__name__}: {exc}",
                error_info(exc).stack,
            ) from None

    def for_instance(self, spawn: m.Spawn) -> LoadedVersion:
        """This already-loaded version, as seen by one forked instance (its own id and env)."""
        clone = object.__new__(LoadedVersion)
        clone.__dict__.update(self.__dict__)
        clone.spawn = spawn
        return clone

    def context(self, invoke: m.Invoke | m.BatchItem | m.StreamOpen) -> LambdaContext:
        spawn = self.spawn
        context = LambdaContext(
            aws_request_id=invoke.request_id,
            function_name=spawn.function_name,
            function_version=spawn.version,
            invoked_function_arn=invoke.invoked_function_arn,
            memory_limit_in_mb=self.config.memory_mb,
            log_group_name=f"/aws/lambda/{spawn.function_name}",
            log_stream_name=f"{time.strftime('%Y/%m/%d')}/[{spawn.version}]{spawn.instance_id}",
            deadline_ms=invoke.deadline_ms,
            identity=identity_from(getattr(invoke, "identity", None)),
            client_context=client_context_from(getattr(invoke, "client_context", None)),
            model=self.model,
        )
        if self.features is not None:  # lookup(name, key) for stream handlers too (no event)
            context.features = self.features.bind()
        return context

    def invoke(self, invoke: m.Invoke) -> m.Result:
        """Run one invocation with Lambda's START / END / REPORT lines around its output."""
        REQUEST_IDS.local.request_id = invoke.request_id
        with LOGS.capture() as captured:
            print(f"START RequestId: {invoke.request_id} Version: {self.spawn.version}")
            result = self._run(invoke)
            print(f"END RequestId: {invoke.request_id}")
            billed = max(1, math.ceil(result.duration_ms))
            print(
                f"REPORT RequestId: {invoke.request_id}\tDuration: {result.duration_ms:.2f} ms"
                f"\tBilled Duration: {billed} ms\tMemory Size: {self.config.memory_mb} MB"
            )
        if invoke.want_logs:
            return m.Result(
                id=result.id,
                body=result.body,
                duration_ms=result.duration_ms,
                error=result.error,
                logs=captured.text(),
            )
        return result

    def _run(self, invoke: m.Invoke) -> m.Result:
        started = time.perf_counter()
        try:
            event = orjson.loads(invoke.payload) if invoke.payload else {}
        except orjson.JSONDecodeError as exc:
            return m.Result(
                id=invoke.id,
                body=b"",
                duration_ms=0.0,
                error=m.ErrorInfo("VALIDATION_ERROR", "JSONDecodeError", str(exc)),
            )
        context = self.context(invoke)
        stats = None
        if self.features is not None:
            refused, event, stats = self._lookup(event, context)
            if refused is not None:
                elapsed = (time.perf_counter() - started) * 1000
                return m.Result(invoke.id, b"", elapsed, refused, features=stats)
        try:
            output = self.handler(event, context)
            body = orjson.dumps(output, option=JSON_OPTIONS)
            error = None
        except MemoryError as exc:
            body, error = b"", error_info(exc, code="OUT_OF_MEMORY")
        except features.LookupFailed as exc:  # context.features.lookup() in the handler
            body, error = b"", error_info(exc, code=exc.code)
        except Exception as exc:
            body, error = b"", error_info(exc)
        if error is not None:
            # As Lambda does: the error lands in the function's log, not only in the response.
            print(
                f"[ERROR] {error.type}: {error.message}\n" + "".join(error.stack), file=sys.stderr
            )
        elapsed = (time.perf_counter() - started) * 1000
        return m.Result(id=invoke.id, body=body, duration_ms=elapsed, error=error, features=stats)

    def _lookup(
        self, event: Any, context: LambdaContext
    ) -> tuple[m.ErrorInfo | None, Any, list[m.FeatureStat] | None]:
        """Run the declared lookups into ``context.features``: (refusal, event, stats)."""
        assert self.features is not None
        builtin = self.config.handler == BUILTIN_MODEL_HANDLER
        try:
            event, stats = self.features.apply(event, context, builtin)
        except features.LookupFailed as exc:
            print(f"[ERROR] {exc.code}: {exc}", file=sys.stderr)
            return m.ErrorInfo(exc.code, type(exc).__name__, str(exc)), event, exc.stats
        return None, event, stats

    def invoke_batch(self, batch: m.InvokeBatch) -> m.BatchResult:
        """One batch handler call for many callers; each gets its own result or error."""
        started = time.perf_counter()
        results: list[m.ItemResult | None] = [None] * len(batch.items)
        events: list[Any] = []
        contexts: list[LambdaContext] = []
        slots: list[int] = []
        stats: dict[int, list[m.FeatureStat] | None] = {}
        for index, item in enumerate(batch.items):
            try:
                event = orjson.loads(item.payload) if item.payload else {}
            except orjson.JSONDecodeError as exc:
                results[index] = m.ItemResult(
                    b"", m.ErrorInfo("VALIDATION_ERROR", "JSONDecodeError", str(exc))
                )
                continue
            context = self.context(item)
            if self.features is not None and not self._warming:
                refused, event, stats[index] = self._lookup(event, context)
                if refused is not None:
                    results[index] = m.ItemResult(b"", refused, stats[index])
                    continue
            events.append(event)
            contexts.append(context)
            slots.append(index)
        ids = ",".join(item.request_id for item in batch.items)
        print(f"START BATCH RequestIds: {ids} Version: {self.spawn.version}")
        if events:
            for index, result in zip(slots, self._run_batch(events, contexts), strict=True):
                found = stats.get(index)
                results[index] = m.ItemResult(result.body, result.error, found) if found else result
        elapsed = (time.perf_counter() - started) * 1000
        print(f"REPORT BATCH Size: {len(batch.items)}\tDuration: {elapsed:.2f} ms")
        done = [
            r or m.ItemResult(b"", m.ErrorInfo("FUNCTION_ERROR", "Missing", "no result"))
            for r in results
        ]
        return m.BatchResult(id=batch.id, results=done, duration_ms=elapsed)

    def _run_batch(self, events: list[Any], contexts: list[LambdaContext]) -> list[m.ItemResult]:
        assert self.batch_handler is not None
        try:
            outputs = self.batch_handler(events, contexts)
            if not isinstance(outputs, list) or len(outputs) != len(events):
                raise TypeError(
                    f"the batch handler must return a list of {len(events)} results, "
                    f"got {type(outputs).__name__}"
                    + (f" of {len(outputs)}" if isinstance(outputs, list) else "")
                )
        except Exception as exc:
            info = error_info(exc)
            print(f"[ERROR] {info.type}: {info.message}", file=sys.stderr)
            return [m.ItemResult(b"", info) for _ in events]
        results = []
        for output in outputs:
            if isinstance(output, BaseException):
                results.append(m.ItemResult(b"", error_info(output)))
                continue
            try:
                results.append(m.ItemResult(orjson.dumps(output, option=JSON_OPTIONS)))
            except TypeError as exc:
                results.append(m.ItemResult(b"", error_info(exc)))
        return results

    def validate(self) -> None:
        sample = self.config.validation
        if sample is None or sample.input is None:
            return  # no event to run: [validation] only names a sample file (for drift)
        result = self.invoke(
            m.Invoke(
                id=0,
                request_id="validation",
                payload=orjson.dumps(sample.input),
                deadline_ms=int(time.time() * 1000 + self.config.timeout_s * 1000),
                invoked_function_arn=function_arn(self.spawn.function_name),
            )
        )
        if result.error is not None:
            raise LoadError(
                "DEPLOY_ERROR",
                f"validation sample raised {result.error.type}: {result.error.message}",
                result.error.stack,
            )
        problem = check_validation_sample(sample, orjson.loads(result.body))
        if problem:
            raise LoadError("DEPLOY_ERROR", f"validation sample failed: {problem}")


class InstanceServer:
    """Reads frames from the channel and runs invocations, at most ``concurrency`` at once."""

    def __init__(self, channel: socket.socket, version: LoadedVersion) -> None:
        self.channel = channel
        self.version = version
        self.write_lock = threading.Lock()
        concurrency = version.config.concurrency
        self.pool = ThreadPoolExecutor(concurrency) if concurrency > 1 else None
        self.streams = StreamSessions(version, self.send, error_info)

    def send(self, message: m.InstanceMessage) -> None:
        frame = m.encode(message)
        with self.write_lock:
            self.channel.sendall(frame)

    def run_one(self, invoke: m.Invoke | m.InvokeBatch) -> None:
        if isinstance(invoke, m.InvokeBatch):
            result: m.Result | m.BatchResult = self.version.invoke_batch(invoke)
        else:
            result = self.version.invoke(invoke)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            self.send(result)
        except OSError:
            os._exit(0)
        if isinstance(result, m.Result) and result.error and result.error.code == "OUT_OF_MEMORY":
            # After a MemoryError the interpreter's state is suspect: start afresh.
            os._exit(3)

    def serve(self) -> None:
        while True:
            try:
                message = m.decode_instance(m.recv_frame(self.channel))
            except (m.ChannelClosed, OSError):
                return
            if isinstance(message, m.Shutdown):
                return
            if isinstance(message, m.StreamFrame):
                self.streams.frame(message)
            elif isinstance(message, m.StreamOpen):
                self.streams.open(message)
            elif isinstance(message, m.StreamClose):
                self.streams.close(message)
            elif isinstance(message, m.Invoke | m.InvokeBatch):
                if self.pool is None:
                    self.run_one(message)
                else:
                    self.pool.submit(self.run_one, message)


def redirect_output(log_path: str) -> None:
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def enter_environment(spawn: m.Spawn) -> None:
    """The function's environment and folder, replacing the template's entirely."""
    os.environ.clear()
    os.environ.update(spawn.environment)
    os.chdir(spawn.bundle_dir)


def prepare_process(spawn: m.Spawn, join_cgroup: bool = True) -> None:
    """Isolate the freshly forked child: own session, cgroup, environment and working dir,
    then (last, before any user code) the function's own uid (``runtime/isolation.py``)."""
    os.setsid()
    if join_cgroup:
        try:
            cgroups.enter(spawn.instance_id, int(spawn.config.get("memory_mb", 512)))
        except OSError as exc:
            print(f"coldbrew: could not join a memory cgroup: {exc}", file=sys.stderr)
    if not isolation.dropped(spawn.isolation):  # else: its version template's log, inherited
        redirect_output(spawn.log_path)
    LOGS.install()
    os.makedirs(spawn.work_dir, exist_ok=True)
    enter_environment(spawn)
    install_lambda_logging(REQUEST_IDS)  # after: it reads AWS_LAMBDA_LOG_LEVEL
    isolation.drop_privileges(spawn.isolation)


def run_instance(
    spawn: m.Spawn, channel: socket.socket, preloaded: LoadedVersion | None = None
) -> None:
    """Entry point of a forked instance. Never returns to the template's code.

    ``preloaded`` is the version a version template loaded before forking: the instance serves
    it at once instead of loading it."""
    started = time.perf_counter()
    try:
        version = preloaded.for_instance(spawn) if preloaded else LoadedVersion(spawn)
        version.start_instance()
        if spawn.run_validation:
            version.validate()
    except LoadError as exc:
        _send_quietly(channel, m.LoadFailed(pid=os.getpid(), error=exc.info))
        return
    except BaseException as exc:  # a handler module may raise anything while importing
        _send_quietly(channel, m.LoadFailed(pid=os.getpid(), error=error_info(exc, "DEPLOY_ERROR")))
        return
    server = InstanceServer(channel, version)
    server.send(m.Ready(pid=os.getpid(), init_ms=(time.perf_counter() - started) * 1000))
    server.serve()


def _send_quietly(channel: socket.socket, message: m.LoadFailed) -> None:
    with contextlib.suppress(OSError):
        channel.sendall(m.encode(message))
