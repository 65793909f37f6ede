"""Typed messages between the gateway, the template server and instances.

Every message is a msgspec Struct, framed as a 4-byte big-endian length followed by msgpack.
Payloads stay ``bytes`` end to end, so an event is parsed once, inside the instance, and a result
is serialised once, inside the instance. Exceptions never cross a process boundary as pickles:
they travel as ``ErrorInfo`` (MLServer's ``parallel/messages.py`` does the same).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgspec

HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 30


class ErrorInfo(msgspec.Struct, frozen=True):
    """An error as data: the stable ``code`` plus Lambda's errorType / errorMessage / stackTrace."""

    code: str
    type: str
    message: str
    stack: list[str] = []


# --- template server control channel (gateway <-> template) ---------------------------------


class Isolation(msgspec.Struct, frozen=True):
    """The unprivileged identity and limits of one function's processes (docs/SECURITY.md)."""

    uid: int
    gid: int
    groups: list[int]
    max_processes: int
    max_open_files: int
    cgroups: list[str] = []
    """Memory cgroups the gateway made for the processes a version template forks (it runs as
    the function's uid, so it cannot make them itself)."""


class Spawn(msgspec.Struct, tag="spawn", frozen=True):
    """Fork one instance. The instance's end of its channel travels with this frame (SCM_RIGHTS)."""

    instance_id: str
    function_name: str
    version: str
    bundle_dir: str
    config: dict[str, Any]
    environment: dict[str, str]
    work_dir: str
    log_path: str
    run_validation: bool = False
    """Run the config's validation sample after loading (deploy-time checks)."""
    isolation: Isolation | None = None
    """Who the process runs as (``runtime/isolation.py``); None: as the template's user."""


class TemplateReady(msgspec.Struct, tag="template_ready", frozen=True):
    pid: int
    preload_ms: float


class SpawnTemplate(msgspec.Struct, tag="spawn_template", frozen=True):
    """Fork a *version template*: a process that loads one version's model and handler once and
    then forks that version's instances ready to serve. Its own control socket travels with this
    frame (SCM_RIGHTS); it answers ``TemplateReady`` or ``SpawnFailed`` on that socket."""

    template_id: str
    version: Spawn
    """What to load: the same description an instance of this version would get."""


class Spawned(msgspec.Struct, tag="spawned", frozen=True):
    instance_id: str
    pid: int
    cgroup: str | None = None
    """The memory cgroup the process is in (it made and joined it itself)."""
    spare: bool = False
    """The process was a spare, forked ahead of demand."""


class SpawnFailed(msgspec.Struct, tag="spawn_failed", frozen=True):
    instance_id: str
    message: str


class PerInstanceInit(msgspec.Struct, tag="per_instance_init", frozen=True):
    """A version template's answer instead of ``TemplateReady``: the version loaded, but its
    import left state that forks would share (``reason``: "socket to 127.0.0.1:5432 opened at
    import"), so it forks nothing. Its instances start from the runtime template and import
    the handler themselves: not a failure, and not to be retried."""

    reason: str


# --- instance channel (gateway <-> one instance) ---------------------------------------------


class Ready(msgspec.Struct, tag="ready", frozen=True):
    """The instance loaded its model and handler (and passed the validation sample, if any)."""

    pid: int
    init_ms: float


class LoadFailed(msgspec.Struct, tag="load_failed", frozen=True):
    pid: int
    error: ErrorInfo


class Invoke(msgspec.Struct, tag="invoke", frozen=True):
    id: int
    request_id: str
    payload: bytes
    deadline_ms: int
    """Wall-clock deadline (epoch milliseconds) behind ``context.get_remaining_time_in_millis``."""
    invoked_function_arn: str
    client_context: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None
    want_logs: bool = False
    """Send the invocation's captured output back in ``Result.logs`` (Lambda's LogType=Tail)."""


class FeatureStat(msgspec.Struct, frozen=True, array_like=True):
    """How one declared feature lookup of one invocation went (runtime/features.py)."""

    name: str
    outcome: str
    """``hit`` (cache, or another process's fill), ``miss`` (this call queried the database),
    ``default`` (no key in the event: the declared default) or ``error`` (database down)."""
    db_ms: float = 0.0


class Result(msgspec.Struct, tag="result", frozen=True):
    id: int
    body: bytes
    duration_ms: float
    error: ErrorInfo | None = None
    logs: str | None = None
    features: list[FeatureStat] | None = None
    """The invocation's feature lookups, for the gateway's metrics (None: it declares none)."""


class BatchItem(msgspec.Struct, frozen=True):
    request_id: str
    payload: bytes
    deadline_ms: int
    invoked_function_arn: str


class InvokeBatch(msgspec.Struct, tag="invoke_batch", frozen=True):
    """Several callers' events for one batch handler call: one frame each way."""

    id: int
    items: list[BatchItem]


class ItemResult(msgspec.Struct, frozen=True):
    body: bytes
    error: ErrorInfo | None = None
    features: list[FeatureStat] | None = None


class BatchResult(msgspec.Struct, tag="batch_result", frozen=True):
    id: int
    results: list[ItemResult]
    duration_ms: float


class StreamOpen(msgspec.Struct, tag="stream_open", frozen=True):
    """Start a stream session: the version's stream handler runs until the stream closes."""

    id: int
    request_id: str
    deadline_ms: int
    invoked_function_arn: str


class StreamFrame(msgspec.Struct, tag="stream_frame", frozen=True):
    """One message of a stream, either way (``text`` tells a text frame from a binary one)."""

    id: int
    data: bytes
    text: bool


class StreamClose(msgspec.Struct, tag="stream_close", frozen=True):
    """No more frames will come: the handler's frame iterator ends."""

    id: int


class StreamEnded(msgspec.Struct, tag="stream_ended", frozen=True):
    """The stream handler returned (or raised)."""

    id: int
    error: ErrorInfo | None = None


class StreamFeatures(msgspec.Struct, tag="stream_features", frozen=True):
    """A stream session's feature lookups since its last report, for the gateway's metrics.
    A session is one long invocation with no per-frame ``Result`` to carry ``FeatureStat``s, so
    the instance sends them on their own, at each frame's end (runtime/streams.py)."""

    id: int
    features: list[FeatureStat]


class Shutdown(msgspec.Struct, tag="shutdown", frozen=True):
    pass


ControlMessage = Spawn | SpawnTemplate | Spawned | SpawnFailed | TemplateReady | PerInstanceInit
InstanceMessage = (
    Ready
    | LoadFailed
    | Invoke
    | Result
    | InvokeBatch
    | BatchResult
    | StreamOpen
    | StreamFrame
    | StreamClose
    | StreamEnded
    | StreamFeatures
    | Shutdown
)

_encoder = msgspec.msgpack.Encoder()
_control_decoder = msgspec.msgpack.Decoder(ControlMessage)
_instance_decoder = msgspec.msgpack.Decoder(InstanceMessage)


def encode(message: msgspec.Struct) -> bytes:
    """A length-prefixed frame, for stream sockets (instance channels)."""
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def encode_packet(message: msgspec.Struct) -> bytes:
    """An unframed body, for SOCK_SEQPACKET sockets (the template control channel)."""
    return _encoder.encode(message)


def decode_control(body: bytes) -> ControlMessage:
    return _control_decoder.decode(body)


def decode_instance(body: bytes) -> InstanceMessage:
    return _instance_decoder.decode(body)


class ChannelClosed(Exception):
    """The other end went away (process exit, crash or kill)."""


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ChannelClosed
        chunks += chunk
    return bytes(chunks)


def recv_frame(sock: socket.socket) -> bytes:
    """Blocking read of one frame body (used by the template server and instances)."""
    (size,) = HEADER.unpack(recv_exactly(sock, HEADER.size))
    if size > MAX_FRAME:
        raise ChannelClosed
    return recv_exactly(sock, size)
