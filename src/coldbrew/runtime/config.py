"""The configuration of a function, as written in a bundle's ``coldbrew.toml`` / ``coldbrew.yaml``.

A bundle is a folder: handler code, model artifacts and this file. A bare model file deployed on
its own gets a synthesised config that points the built-in model handler at it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from coldbrew import errors

CONFIG_FILES = ("coldbrew.toml", "coldbrew.yaml", "coldbrew.yml")
BUILTIN_MODEL_HANDLER = "coldbrew.runtime.model_handler:handler"
ModelFormat = Literal["auto", "joblib", "pickle", "skops", "onnx", "xgboost"]

MODEL_SUFFIXES: dict[str, str] = {
    ".joblib": "joblib",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".skops": "skops",
    ".onnx": "onnx",
    ".json": "xgboost",
    ".ubj": "xgboost",
}


class ValidationSample(BaseModel):
    """An event run through the handler at load time; the deploy is refused if it fails.

    ``expected`` is compared for equality (floats within ``tolerance``); ``range`` bounds the
    number found at the dotted ``path`` of the output (e.g. ``predictions.0``)."""

    model_config = ConfigDict(extra="forbid")

    input: Any
    expected: Any = None
    path: str | None = None
    range: tuple[float, float] | None = None
    tolerance: float = 1e-6


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
        from coldbrew.scaling.provisioned import parse_days

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

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, value: str) -> str:
        from coldbrew.scaling.policies import NAMED_HYBRID_CONFIGS

        if value != "fixed" and value not in NAMED_HYBRID_CONFIGS:
            known = ", ".join(["fixed", *sorted(NAMED_HYBRID_CONFIGS)])
            raise ValueError(f"unknown keep_alive policy {value!r}; known: {known}")
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
