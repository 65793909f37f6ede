"""The configuration of a function, as written in a bundle's ``coldbrew.toml`` / ``coldbrew.yaml``.

A bundle is a folder: handler code, model artifacts and this file. A bare model file deployed on
its own gets a synthesised config that points the built-in model handler at it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from coldbrew import errors
from coldbrew.core.calendar import parse_days
from coldbrew.core.destinations import parse_destination
from coldbrew.core.expressions import check_timezone
from coldbrew.core.expressions import parse as parse_expression
from coldbrew.core.policy_names import KEEP_ALIVE_POLICIES
from coldbrew.runtime.composite import COMPOSITE_HANDLER, EnsembleConfig, RouterConfig

CONFIG_FILES = ("coldbrew.toml", "coldbrew.yaml", "coldbrew.yml")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
BUILTIN_MODEL_HANDLER = "coldbrew.runtime.model_handler:handler"
ModelFormat = (
    Literal["auto", "joblib", "pickle", "skops", "onnx", "xgboost"]
    | Literal["lightgbm", "torchscript", "torch_export"]
)

MODEL_SUFFIXES: dict[str, str] = {
    ".joblib": "joblib",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".skops": "skops",
    ".onnx": "onnx",
    ".json": "xgboost",
    ".ubj": "xgboost",
    ".txt": "lightgbm",
    ".lgb": "lightgbm",
    ".pt": "torchscript",
    ".pt2": "torch_export",
}


class ValidationSample(BaseModel):
    """An event run through the handler at load time; the deploy is refused if it fails.

    ``expected`` is compared for equality (floats within ``tolerance``); ``range`` bounds the
    number found at the dotted ``path`` of the output (e.g. ``predictions.0``)."""

    model_config = ConfigDict(extra="forbid")

    input: Any = None
    expected: Any = None
    path: str | None = None
    range: tuple[float, float] | None = None
    tolerance: float = 1e-6
    sample: str | None = None
    """A bundle file of validation rows (CSV with a header, or JSON lines of events): input
    drift is measured against it when ``[quality] reference`` is not set (docs/DATA.md)."""

    @model_validator(mode="after")
    def _input_or_sample(self) -> ValidationSample:
        if self.input is None and self.sample is None:
            raise ValueError("[validation] needs an input (an event) or a sample (a file)")
        if self.input is None and (self.expected is not None or self.range is not None):
            raise ValueError("[validation] expected / range need an input to check")
        return self


class BatchingConfig(BaseModel):
    """Adaptive batching: concurrent invocations merged into one handler call.

    ``auto`` sends whatever is queued the moment an instance slot frees up, so a lone request is
    never delayed and batches grow with the arrival rate. ``fixed`` also waits up to
    ``max_wait_ms`` for a batch to fill. ``off`` invokes one event at a time."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["auto", "fixed", "off"] = "auto"
    max_batch_size: int = Field(default=64, ge=1, le=4096)
    max_wait_ms: float = Field(default=5.0, ge=0, le=10_000)


class ProvisionedSchedule(BaseModel):
    """Instances kept warm on some days between two clock times (``end`` may pass midnight)."""

    model_config = ConfigDict(extra="forbid")

    days: str = "daily"
    """``mon-fri``, ``sat,sun``, ``daily``."""
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-4]):[0-5]\d$")
    instances: int = Field(ge=0, le=1000)
    timezone: str = "UTC"

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        try:
            parse_days(value)
        except ValueError:
            raise ValueError("days must look like 'mon-fri', 'sat,sun' or 'daily'") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except Exception:
            raise ValueError(f"unknown timezone {value!r}") from None
        return value


class WebSocketConfig(BaseModel):
    """The API Gateway-style WebSocket API of a function (``ws://host/ws/{name}``)."""

    model_config = ConfigDict(extra="forbid")

    route_selection_expression: str = "$request.body.action"
    routes: list[str] = Field(default_factory=list)
    """Declared route keys; a selected value outside them goes to ``$default``. Empty: any
    selected string is its own route key."""


class DestinationsConfig(BaseModel):
    """Where the outcome of each async invocation goes (docs/ASYNC.md): ``function:NAME``, an
    ``http(s)://`` webhook URL, or ``results``. An event invoke config set through the API
    (``put_function_event_invoke_config``) takes precedence."""

    model_config = ConfigDict(extra="forbid")

    on_success: str | None = None
    on_failure: str | None = None

    @field_validator("on_success", "on_failure")
    @classmethod
    def _destination(cls, value: str | None) -> str | None:
        if value is not None:
            parse_destination(value)  # ValueError says which shapes are understood
        return value


class ScheduleConfig(BaseModel):
    """A ``[[schedule]]``: invoke the function asynchronously at each tick (docs/ASYNC.md)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """Defaults to ``schedule-1``, ``schedule-2``... in file order."""
    expression: str
    """``rate(5 minutes)`` or ``cron(0 12 * * ? *)`` (EventBridge syntax)."""
    input: Any = None
    """The event; None sends EventBridge's scheduled-event shape."""
    timezone: str = "UTC"
    enabled: bool = True

    @field_validator("expression")
    @classmethod
    def _expression(cls, value: str) -> str:
        parse_expression(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)


class _EventSourceBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    qualifier: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """The alias (or version) the events invoke, like a Lambda event source mapping's
    qualified ARN: ``prod`` lets ``coldbrew alias set`` roll the source's model back."""
    enabled: bool = True


class MqttSourceConfig(_EventSourceBase):
    """``kind = "mqtt"``: each message on a broker topic is an async invocation."""

    kind: Literal["mqtt"] = "mqtt"
    url: str = Field(pattern=r"^mqtts?://")
    """``mqtt://host:1883`` (``mqtts://`` for TLS); ``mqtt://user:password@host`` logs in."""
    topic: str = Field(min_length=1, max_length=512)
    """A subscription filter: ``devices/+/readings``, ``plant/#``."""
    qos: Literal[0, 1] = 1
    """1: a message is acknowledged to the broker only once its event is in the durable queue."""
    shared: bool = True
    """Subscribe as ``$share/coldbrew-<function>/<topic>``: several gateways split the messages
    instead of each invoking every one."""


class _ObjectSourceBase(_EventSourceBase):
    prefix: str = Field(default="", max_length=1024)
    """Only keys (folder: relative paths, ``/``-separated) starting with this."""
    suffix: str = Field(default="", max_length=1024)
    """Only keys ending with this (``.csv``), as an S3 notification's suffix filter."""
    poll_s: float = Field(default=10, ge=0.2, le=3600)
    backfill: bool = True
    """Objects already there when the source is first polled are delivered too; false: only
    objects that appear later (as S3 notifications would)."""
    batch_job: bool = False
    """Each new ``.csv`` / ``.jsonl`` / ``.parquet`` object is a batch job of the function (its
    rows run, results written out) instead of one async event (jobs/sources/batch_jobs.py)."""

    @model_validator(mode="after")
    def _batch_suffix(self) -> _ObjectSourceBase:
        batch_suffixes = (".csv", ".jsonl", ".ndjson", ".parquet")
        if self.batch_job and self.suffix and not self.suffix.lower().endswith(batch_suffixes):
            raise ValueError(
                f"batch_job = true takes .csv, .jsonl, .ndjson or .parquet files; "
                f"suffix {self.suffix!r} matches none"
            )
        return self


class FolderSourceConfig(_ObjectSourceBase):
    """``kind = "folder"``: each new file of a watched folder is an S3-shaped async event."""

    kind: Literal["folder"]
    path: str = Field(min_length=1, max_length=1024)
    """An absolute path; with auth on, it must lie in ``COLDBREW_FOLDER_SOURCE_ROOTS``."""
    settle_s: float = Field(default=1.0, ge=0, le=3600)
    """A file is delivered once its size and mtime have not changed for this long (it is not
    being written any more)."""
    poll_s: float = Field(default=2, ge=0.2, le=3600)
    batch_output: str | None = Field(default=None, min_length=1, max_length=1024)
    """With ``batch_job``: the absolute folder the results and errors files go to (default:
    beside each input file); with auth on, inside ``COLDBREW_FOLDER_SOURCE_ROOTS`` too."""

    @field_validator("path", "batch_output")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("an absolute folder path, e.g. '/srv/inbox'")
        return value

    @model_validator(mode="after")
    def _output_needs_jobs(self) -> FolderSourceConfig:
        if self.batch_output is not None and not self.batch_job:
            raise ValueError("batch_output is where batch jobs write: set batch_job = true")
        return self


class S3SourceConfig(_ObjectSourceBase):
    """``kind = "s3"``: each new object under a bucket prefix is an async invocation with
    Lambda's S3 event shape (polled; the seen-set is in the registry)."""

    kind: Literal["s3"]
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    """An S3-compatible service (MinIO, moto); default: AWS (or ``AWS_ENDPOINT_URL_S3``)."""
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,32}$")
    batch_output: str | None = Field(default=None, min_length=1, max_length=1024)
    """With ``batch_job``: where each job's results and errors objects are uploaded, a key
    prefix of ``bucket`` (``scored/``) or of another bucket of the same service
    (``s3://scored/daily/``); default: beside each input object."""

    @field_validator("batch_output")
    @classmethod
    def _output_prefix(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("s3://"):
            bucket = value.removeprefix("s3://").partition("/")[0]
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise ValueError(f"{bucket!r} is not an S3 bucket name (s3://bucket/prefix/)")
        elif value.startswith("/"):
            raise ValueError("a key prefix ('scored/') or 's3://bucket/prefix/', not a path")
        return value

    def batch_output_location(self) -> tuple[str, str] | None:
        """The bucket and key prefix ``batch_output`` names (``s3://bucket/prefix`` or a prefix
        of ``bucket``); None when unset: beside each input object."""
        if self.batch_output is None:
            return None
        if self.batch_output.startswith("s3://"):
            bucket, _, prefix = self.batch_output.removeprefix("s3://").partition("/")
            return bucket, prefix
        return self.bucket, self.batch_output

    @model_validator(mode="after")
    def _output_needs_jobs(self) -> S3SourceConfig:
        if self.batch_output is not None and not self.batch_job:
            raise ValueError("batch_output is where batch jobs write: set batch_job = true")
        return self


class RedisSourceConfig(_EventSourceBase):
    """``kind = "redis"``: a Redis stream read by a consumer group, batches of entries invoking
    the function as Lambda's SQS event source mappings do (docs/ASYNC.md)."""

    kind: Literal["redis"]
    url: str = Field(pattern=r"^rediss?://")
    stream: str = Field(min_length=1, max_length=256)
    group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    """Default ``coldbrew-<function>``: every gateway joins it, each entry goes to one."""
    batch_size: int = Field(default=10, ge=1, le=10_000)
    batching_window_s: float = Field(default=0, ge=0, le=300)
    """Wait up to this long for a batch to fill (Lambda's MaximumBatchingWindowInSeconds)."""
    starting_position: Literal["TRIM_HORIZON", "LATEST"] = "TRIM_HORIZON"
    """Where a new consumer group starts: the stream's first entry or only new ones."""
    max_retry_attempts: int = Field(default=2, ge=0, le=100)
    """Failed deliveries retried; then the entry goes to the function's dead letters and its
    on-failure destination, and is acknowledged."""
    visibility_timeout_s: float = Field(default=30, ge=0.5, le=43_200)
    """A failed (or abandoned) entry is delivered again after this long idle."""


def _event_source_kind(value: Any) -> str:
    """The table's ``kind``; a table without one is MQTT (the first kind there was)."""
    if isinstance(value, dict):
        return str(value.get("kind", "mqtt"))
    return str(getattr(value, "kind", "mqtt"))


EventSourceConfig = Annotated[
    Annotated[MqttSourceConfig, Tag("mqtt")]
    | Annotated[FolderSourceConfig, Tag("folder")]
    | Annotated[S3SourceConfig, Tag("s3")]
    | Annotated[RedisSourceConfig, Tag("redis")],
    Discriminator(
        _event_source_kind,
        custom_error_type="event_source_kind",
        custom_error_message="kind is one of mqtt, folder, s3, redis",
    ),
]
"""An ``[[event_source]]`` (docs/ASYNC.md, jobs/sources/): ``kind`` picks the table's shape."""


class FeatureConfig(BaseModel):
    """A ``[[features]]`` table: a named lookup the instance runs before the handler, its result
    in ``context.features[name]`` (runtime/features.py, docs/DATA.md)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    sql: str = Field(min_length=1)
    """One query with one named parameter (``where cell = :cell``), bound to the key."""
    key: str | None = None
    """JSON path into the event (``$.location.cell``); with neither it nor ``key_fn`` the
    lookup runs only when the handler calls ``context.features.lookup(name, key)``."""
    key_fn: str | None = None
    """Or ``module:function`` computing the key from the event."""
    database: str
    """The environment variable (usually a ``[secrets]`` one) holding the database URL."""
    cache: Literal["local", "redis", "none"] = "local"
    cache_ttl_s: float = Field(default=60, ge=0, le=86_400)
    negative_ttl_s: float | None = Field(default=None, ge=0, le=86_400)
    """How long a missing row is remembered (default: ``cache_ttl_s``)."""
    timeout_ms: float = Field(default=500, gt=0, le=60_000)
    default: Any = None
    """The value for a missing row, and for a database that does not answer; without one a
    missing row is None and an outage is FEATURES_UNAVAILABLE (503)."""
    columns: list[str] = Field(default_factory=list)
    """With the built-in model handler: these columns of the row are appended to every row."""

    @field_validator("key")
    @classmethod
    def _key_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("$"):
            raise ValueError("key is a JSON path starting with '$', e.g. '$.location.cell'")
        return value


class PredictionCacheConfig(BaseModel):
    """``[prediction_cache]``: identical events to one version answered from a cache, without
    an instance (dataplane/prediction_cache.py, docs/DATA.md)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["off", "local", "redis"] = "off"
    """``local``: this gateway's memory; ``redis``: shared by every gateway (COLDBREW_REDIS_URL)."""
    ttl_s: float = Field(default=60, gt=0, le=86_400)


class QualityConfig(BaseModel):
    """``[quality]``: how feedback is scored against the logged prediction (docs/DATA.md)."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["auto", "classification", "regression"] = "auto"
    """``auto``: regression when the label or the prediction is a float, else classification."""
    prediction: str | None = None
    """JSON path of the prediction in the output (default: the output itself when a scalar,
    else ``predictions[0]`` / ``prediction``)."""
    reference: str | None = None
    """A bundle file of JSON lines, one event each: logged inputs' drift (PSI) is measured
    against it (docs/DATA.md)."""
    probabilities: str | None = None
    """JSON path of the class probabilities in the output, for calibration: a list (labelled by
    the output's ``classes``, else 0..k-1), a mapping class -> probability, or one number (the
    probability of class 1). Default: the output's ``probabilities`` (the built-in handler's)."""


class FunctionConfig(BaseModel):
    """Per-function settings. Defaults follow AWS Lambda where Lambda has one."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    handler: str = BUILTIN_MODEL_HANDLER
    """``module:function`` with the Lambda signature ``handler(event, context)``."""
    model: str | None = None
    """Path (inside the bundle) of a model artifact the runtime loads before the first call."""
    model_format: ModelFormat = "auto"
    description: str = ""
    memory_mb: int = Field(default=512, ge=64, le=10240)
    timeout_s: float = Field(default=30, gt=0, le=900)
    concurrency: int = Field(default=1, ge=1, le=1000)
    max_instances: int = Field(default=10, ge=1, le=1000)
    min_instances: int = Field(default=0, ge=0, le=1000)
    idle_timeout_s: float = Field(default=300, ge=0)
    max_queue: int = Field(default=100, ge=0)
    """Invocations allowed to wait for a free instance; more are throttled at once."""
    queue_timeout_s: float = Field(default=10, ge=0)
    """How long an invocation waits for a free instance before it is throttled."""
    environment: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    """Ray resources each instance needs on its node (``{GPU = 1}``, ``{node_b = 1}``,
    ``{CPU = 0.5}``), with ``COLDBREW_BACKEND=ray`` only: instances are placed on nodes having
    them free (docs/CLUSTER.md). Ignored on one machine."""
    secrets: dict[str, str] = Field(default_factory=dict)
    """``[secrets]``: environment variable -> name of a secret (``coldbrew secrets set``); the
    value is decrypted and injected when each instance starts, never stored in the config."""
    features: list[FeatureConfig] = Field(default_factory=list)
    """``[[features]]``: declared lookups run in the instance before the handler (docs/DATA.md)."""
    log_predictions: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of invocations kept in the prediction log (``coldbrew predictions``): 0.1 = one in
    ten, chosen by request id; 0 (the default) logs none."""
    log_inputs: Literal["full", "hash"] = "full"
    """``hash``: log only the sha256 of each event, never the event itself."""
    log_redact: list[str] = Field(default_factory=list)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    prediction_cache: PredictionCacheConfig = Field(default_factory=PredictionCacheConfig)
    """JSON paths (``$.user.email``) replaced by ``"[redacted]"`` in logged events and outputs."""
    event_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    """JSON Schema every event must satisfy (checked by the gateway: 400 VALIDATION_ERROR)."""
    validation: ValidationSample | None = None
    routes: list[str] = Field(default_factory=list)
    """API Gateway routes mounting this function, registered on deploy: ``"GET /items/{id}"``
    (payload 2.0) or ``"1.0 GET /items"`` (payload 1.0); see docs/APIGATEWAY.md."""
    batch_handler: str | None = None
    """``module:function`` taking ``(events, contexts)`` and returning one result per event (an
    exception instance fails only its own caller). The built-in model handler has one."""
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    keep_alive: str = "fixed"
    """``fixed`` (keep an idle instance for idle_timeout_s) or a hybrid-histogram configuration
    (``hybrid``, ``hybrid-fb10``, ...: docs/KEEPALIVE.md) that learns this function's idle times
    and pre-warms and releases instances by them."""
    provisioned: list[ProvisionedSchedule] = Field(default_factory=list)
    """Scheduled provisioned concurrency, on top of min_instances."""
    websocket: WebSocketConfig = Field(default_factory=WebSocketConfig)
    stream_handler: str | None = None
    """``module:function`` taking ``(frames, context)``: a generator that iterates over the frames
    of one WebSocket session (``str`` or ``bytes``) and yields what to send back. One session
    holds one instance slot for its whole life (``/stream/{name}``)."""
    stream_max_duration_s: float = Field(default=900, gt=0, le=86_400)
    """A stream session is closed cleanly after this long (default 15 minutes, as Lambda)."""
    stream_max_pending: int = Field(default=0, ge=0, le=10_000)
    """Frames of a stream session that may wait for the handler. 0 (the default): every frame
    is kept and processed in order. N: at most N wait; a new frame pushes the oldest waiting
    one out. 1 is latest-frame-wins, for live video: when frames come faster than the handler
    runs, it always gets the newest and the lag stays bounded."""
    warmup_interval_s: float | None = Field(default=None, gt=0)
    """Ping idle provisioned instances with ``{"source": "coldbrew.warmup"}`` this often."""
    rate_limit: float | None = Field(default=None, gt=0)
    """Invocations per second this function accepts from all callers together (token bucket,
    shared by every gateway when Redis is configured); more get 429 RATE_LIMITED."""
    burst: int | None = Field(default=None, ge=1)
    """Bucket size of ``rate_limit`` (default: the rate, at least 1)."""
    trust_pickle: bool | None = None
    """Allow a pickle-based model (joblib, pickle): loading one runs code from the file, so it
    must be marked trusted by whoever deploys it (docs/SECURITY.md)."""
    threads: int = Field(default=1, ge=1, le=64)
    """Threads a PyTorch or LightGBM model may use inside each instance (set after the fork; the
    template that instances fork from always runs them on one). Other formats use one."""
    dependencies: list[str] = Field(default_factory=list)
    """Extra packages (pip requirement lines), installed at deploy into a shared layer that the
    instance puts on ``sys.path``; a bundle's ``requirements.txt`` adds to them."""
    dependency_layer: str | None = None
    """Set by the deploy, not by hand: the folder holding the installed dependencies."""
    own_runtime_template: bool = False
    """Set by the deploy: the layer replaces a package the shared runtime template preloads, so
    this version's instances fork from a runtime template of its own (docs/RUNTIME.md)."""
    destinations: DestinationsConfig = Field(default_factory=DestinationsConfig)
    """On-success and on-failure destinations of async invocations."""
    schedules: list[ScheduleConfig] = Field(default_factory=list, alias="schedule")
    """``[[schedule]]`` tables: async invocations at each tick of an expression."""
    event_sources: list[EventSourceConfig] = Field(default_factory=list, alias="event_source")
    """``[[event_source]]`` tables: MQTT topics, watched folders, S3 prefixes and Redis streams
    whose messages or new objects are invocations (jobs/sources/)."""
    init: Literal["auto", "shared", "per-instance"] = "auto"
    """Where module-level init runs (docs/RUNTIME.md). ``auto``: once per version in a version
    template that instances fork from, unless the import leaves state a fork cannot share
    (threads, sockets, open files, child processes): then once per instance. ``shared``: always
    fork from the version template, without checking. ``per-instance``: never."""
    kind: Literal["function", "ensemble", "router"] = "function"
    """``ensemble`` / ``router``: made of other functions and run by the gateway, with an
    ``[ensemble]`` or ``[router]`` table (runtime/composite.py, docs/DELIVERY.md)."""
    ensemble: EnsembleConfig | None = None
    router: RouterConfig | None = None

    @model_validator(mode="after")
    def _composite(self) -> FunctionConfig:
        if self.kind != "function":
            if getattr(self, self.kind) is None:
                raise ValueError(f'kind = "{self.kind}" needs an [{self.kind}] table')
            if self.handler == BUILTIN_MODEL_HANDLER and self.model is None:
                self.handler = COMPOSITE_HANDLER  # its instances never serve; see composite.py
        elif self.ensemble is not None or self.router is not None:
            raise ValueError('[ensemble] and [router] need kind = "ensemble" or "router"')
        return self

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, value: str) -> str:
        if value not in KEEP_ALIVE_POLICIES:
            known = ", ".join(KEEP_ALIVE_POLICIES)
            raise ValueError(f"unknown keep_alive policy {value!r}; known: {known}")
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_refs(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        for variable, name in value.items():
            if not _ENV_NAME.match(variable):
                raise ValueError(f"{variable!r} is not an environment variable name")
            if not _SECRET_NAME.match(name):
                raise ValueError(f"{name!r} is not a secret name (letters, digits, . _ -)")
            if variable in info.data.get("environment", {}):
                raise ValueError(f"{variable} is in both [environment] and [secrets]")
        return value

    @field_validator("features")
    @classmethod
    def _feature_refs(cls, value: list[FeatureConfig], info: ValidationInfo) -> list:
        names = [f.name for f in value]
        if len(set(names)) != len(names):
            raise ValueError("two [[features]] have the same name")
        known = {**info.data.get("environment", {}), **info.data.get("secrets", {})}
        for feature in value:
            # Neither: looked up only when the handler calls context.features.lookup(name, key).
            if feature.key is not None and feature.key_fn is not None:
                raise ValueError(f"feature {feature.name!r} has both key and key_fn: pick one")
            if feature.database not in known:
                raise ValueError(
                    f"feature {feature.name!r}: database {feature.database!r} is not a variable "
                    f"of [secrets] or [environment]"
                )
        return value

    def batches(self) -> bool:
        """Whether invocations of this function go through the batcher."""
        if self.batching.mode == "off":
            return False
        return self.batch_handler is not None or self.handler == BUILTIN_MODEL_HANDLER

    @field_validator("handler", "batch_handler", "stream_handler")
    @classmethod
    def _handler_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if ":" not in value and "." in value:
            # Lambda's own syntax: "lambda_function.lambda_handler", "src/app.handler".
            module, _, func = value.rpartition(".")
            value = f"{module.replace('/', '.')}:{func}"
        module, _, func = value.partition(":")
        if not module or not func:
            raise ValueError(
                "handler must look like 'module:function' (or Lambda's 'module.function'), "
                "e.g. 'app:handler'"
            )
        return value

    def resolved_model_format(self) -> str | None:
        if self.model is None:
            return None
        if self.model_format != "auto":
            return self.model_format
        suffix = Path(self.model).suffix.lower()
        if suffix not in MODEL_SUFFIXES:
            raise errors.ValidationError(
                f"cannot tell the format of model '{self.model}' from its suffix; "
                f"set model_format to one of {sorted(set(MODEL_SUFFIXES.values()))}"
            )
        return MODEL_SUFFIXES[suffix]

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def find_config_file(bundle_dir: Path) -> Path | None:
    for name in CONFIG_FILES:
        if (bundle_dir / name).is_file():
            return bundle_dir / name
    return None


def parse_config(raw: dict[str, Any], source: str = "config") -> FunctionConfig:
    """Validate a config mapping; accepts keys at top level or under a ``[function]`` table."""
    if "function" in raw and isinstance(raw["function"], dict):
        raw = {**{k: v for k, v in raw.items() if k != "function"}, **raw["function"]}
    try:
        return FunctionConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise errors.ValidationError(f"invalid {source}: {problems}") from None


def load_config(bundle_dir: Path) -> FunctionConfig:
    """Read the bundle's config file; raises ``errors.ValidationError`` with a readable message."""
    path = find_config_file(bundle_dir)
    if path is None:
        raise errors.ValidationError(
            f"no {' / '.join(CONFIG_FILES)} in bundle; add one with at least handler = 'module:fn'"
        )
    try:
        text = path.read_text()
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise errors.ValidationError(f"cannot parse {path.name}: {exc}") from None
    if not isinstance(raw, dict):
        raise errors.ValidationError(f"{path.name} must hold a table of settings")
    return parse_config(raw, source=path.name)


def config_for_model_file(filename: str) -> FunctionConfig:
    """The config of a bare model deployed without a bundle: the built-in handler serves it."""
    suffix = Path(filename).suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise errors.ValidationError(
            f"'{filename}' is not a model file coldbrew knows "
            f"(suffixes: {', '.join(sorted(MODEL_SUFFIXES))}); deploy a bundle folder instead"
        )
    return FunctionConfig(model=filename)
