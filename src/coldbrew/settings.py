"""Typed settings for a coldbrew server and CLI, read from ``COLDBREW_*`` environment variables.

Every backend is chosen here by a URL or name, never by code changes (see ARCHITECTURE.md).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import pydantic_settings
from pydantic import BeforeValidator, Field, FilePath, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from coldbrew import errors

DEFAULT_HOME = Path.home() / ".coldbrew"


# --- typed values: an invalid one stops the server at start, naming the variable -------------
def _lower(value: Any) -> Any:
    """Enumerations are matched case-insensitively (``ON`` is ``on``), and nothing else."""
    return value.strip().lower() if isinstance(value, str) else value


Lower = BeforeValidator(_lower)
"""Put on ``Annotated[Literal[...], Lower]`` for every enumerated setting."""

_SWITCH_WORDS = {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off"}


def _switch(value: Any) -> Any:
    """``COLDBREW_AUTH=true`` means ``on``: spelled out, because an unknown word once meant off."""
    value = _lower(value)
    return _SWITCH_WORDS.get(value, value) if isinstance(value, str) else value


Positive = Annotated[int, Field(gt=0)]
"""Sizes and counts that must be above zero."""
PositiveNumber = Annotated[float, Field(gt=0, allow_inf_nan=False)]
"""Finite and above zero."""
Seconds = PositiveNumber
"""Intervals and timeouts."""
Fraction = Annotated[float, Field(ge=0, le=1)]
Port = Annotated[int, Field(ge=1, le=65535)]


_S3_URL = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/|$)")


class Settings(BaseSettings):
    """Server settings. Each field maps to ``COLDBREW_<FIELD>`` (e.g. ``COLDBREW_HOME``)."""

    model_config = SettingsConfigDict(env_prefix="COLDBREW_", extra="ignore")

    def __init__(self, **values: Any) -> None:
        # The one place a bad setting is turned into a message for people (InvalidSettings).
        try:
            super().__init__(**values)
        except pydantic.ValidationError as exc:
            raise InvalidSettings.from_validation(exc, values) from None
        except pydantic_settings.SettingsError as exc:
            raise InvalidSettings.from_source(exc) from None

    home: Path = Field(default=DEFAULT_HOME)
    """Folder holding the SQLite registry, the artifact store, materialised bundles and logs."""

    database_url: str | None = None
    """SQLAlchemy URL of the registry; defaults to ``sqlite:///<home>/registry.db``.
    For PostgreSQL use ``postgresql+psycopg://user@host:5432/db``."""

    host: str = "127.0.0.1"
    """Interface the gateway binds to."""

    port: Port = 8080
    """TCP port the gateway listens on."""

    url: str = "http://127.0.0.1:8080"
    """Where the CLI finds the server."""

    max_payload_bytes: Positive = 6 * 1024 * 1024
    """Largest accepted sync invocation body (AWS Lambda's sync limit is 6 MB)."""

    max_bundle_bytes: Positive = 512 * 1024 * 1024
    """Largest accepted deploy upload, counted as the bytes arrive (whatever Content-Length
    says, chunked uploads included)."""

    max_unpacked_bytes: int = Field(default=1024**3, gt=0)
    """Largest total size of a bundle once unpacked (a zip or tar.gz), counted while
    extracting; a larger bundle is refused with 413 BUNDLE_TOO_LARGE."""

    max_bundle_files: int = Field(default=10_000, gt=0)
    """Most files and folders one bundle may unpack to."""

    gc_grace_s: float = Field(default=900.0, ge=0, allow_inf_nan=False)
    """Garbage collection (``coldbrew gc``) spares blobs and bundles written or used this
    recently, so a deploy in flight (blobs stored, version not yet recorded) keeps them."""

    gc_interval_s: float = Field(default=3600.0, ge=0, allow_inf_nan=False)
    """How often the server collects unreferenced blobs and bundles by itself (0: only after
    a function is deleted, and on ``coldbrew gc``)."""

    # --- slow or oversized requests (docs/SECURITY.md) ---
    header_timeout_s: Seconds = 10.0
    """A request line and header block not complete this long after its first byte (or after the
    connection opened) gets 408 and the connection is closed."""

    body_timeout_s: Seconds = 30.0
    """A request body from which no byte arrives for this long gets 408 and is closed."""

    max_header_count: Positive = 100
    """More header lines than this in one request: 431."""

    max_header_bytes: Positive = 64 * 1024
    """A request line and header block larger than this: 431."""

    preload_modules: list[str] = Field(
        default_factory=lambda: [
            "numpy",
            "sklearn.ensemble",
            "sklearn.linear_model",
            "sklearn.pipeline",
            "sklearn.preprocessing",
            "joblib",
            "onnxruntime",
            "onnx",  # the ONNX loader reads class labels with it: ~60 ms to import
            "xgboost",
            "skops.io",
        ]
    )
    """Libraries the runtime template imports once, so forked instances start without paying
    for them. Comma-free JSON list in the environment, e.g. ``'["numpy","torch"]'``."""

    # --- dependency layers (docs/RUNTIME.md, "Dependencies") ---
    pip_index_url: str | None = None
    """Package index that bundles' requirements are installed from (pip ``--index-url``);
    default: pip's own configuration (``PIP_INDEX_URL``, pip.conf), usually PyPI."""

    pip_find_links: list[str] = Field(default_factory=list)
    """Local folders or pages of wheels pip also looks in (JSON list, pip ``--find-links``)."""

    pip_no_index: bool = False
    """Use only ``pip_find_links``, never an index (air-gapped servers)."""

    pip_timeout_s: float = Field(default=15.0, gt=0, le=600)
    """Network timeout of each pip request while a deploy installs requirements."""

    reap_interval_s: Seconds = 0.5
    """How often pools look for idle instances to stop and dead ones to forget."""

    version_templates: bool = True
    """After a version's first cold start, keep a template with its model loaded, so later cold
    starts are a fork (milliseconds) instead of a model load."""

    version_template_idle_s: Seconds = 1800
    """A version template is released after its version has had no instance for this long."""

    spares: bool = True
    """Templates keep one instance forked ahead of demand, so a cold start skips the fork and
    the cgroup migration (~25 ms here). Costs one mostly-shared process per template."""

    policy_minute_s: Seconds = 60.0
    """Seconds in one minute of keep-alive policy time. Only tests and demos change it."""

    memory_enforcement: Annotated[Literal["auto", "cgroup", "rss", "off"], Lower] = "auto"
    """``auto`` (cgroup when it can be made, else RSS sampling), ``cgroup``, ``rss`` or ``off``."""

    # --- isolation of user code (docs/SECURITY.md, "Isolation") ---
    isolation: Annotated[Literal["auto", "on", "off"], BeforeValidator(_switch)] = "auto"
    """Run each function's code as its own unprivileged uid: ``auto`` (on when coldbrew runs as
    root), ``on`` (refuse to start unless root) or ``off``."""

    isolation_uid_base: Annotated[int, Field(ge=1000, le=2**31 - 2**20)] = 200000
    """Functions get uids (and gids) ``base+1``, ``base+2``, ... (recorded in
    ``<home>/uids.json``); gid ``base`` is the group allowed to reach the interpreter."""

    instance_max_processes: Positive = 4096
    """RLIMIT_NPROC of a function's processes (the kernel counts processes and threads per uid,
    so this bounds all instances of one function together)."""

    instance_max_open_files: Positive = 4096
    """RLIMIT_NOFILE of each instance."""

    instance_tmp_mb: Positive = 512
    """Size of each instance's private /tmp (a tmpfs; its pages count towards memory_mb)."""

    log_level: Annotated[Literal["critical", "error", "warning", "info", "debug"], Lower] = "info"
    """Log level of the gateway."""

    # --- observability and cost (docs/OBSERVABILITY.md) ---
    log_format: Annotated[Literal["json", "text"], Lower] = "text"
    """``json`` (one JSON object per line, for log shippers) or ``text`` (for people)."""

    access_log: bool | None = None
    """One log line per invocation. Default: on with ``log_format=json`` (for log shippers),
    off with ``text`` (every invocation is in the meter and in /metrics anyway, and a line per
    request costs several percent of throughput)."""

    price_table: Annotated[Literal["aws-x86", "aws-arm64", "custom"], Lower] = "aws-x86"
    """Prices the meter bills with: ``aws-x86``, ``aws-arm64`` or ``custom``."""

    price_table_custom: dict[str, float | str] | None = Field(default=None, validate_default=True)
    """With ``price_table=custom``: JSON ``{"per_request": .., "per_gb_second": ..,
    "per_provisioned_gb_second": ..}`` in USD."""

    metrics_max_functions: Positive = 50
    """Distinct function labels in /metrics; later functions are counted as ``_other``."""

    metrics_sample_interval_s: Seconds = 1.0
    """How often pool gauges and provisioned-concurrency cost are sampled."""

    meter_flush_interval_s: Seconds = 0.5
    """How often buffered usage records are written to the registry in one batch."""

    meter_retention_days: float = Field(default=400, ge=0)
    """Meter rows older than this are deleted (0: kept forever). 400 days keeps a year's
    reports comparable month by month."""

    prediction_retention_days: float = Field(default=30, ge=0)
    """Prediction log rows older than this are deleted (0: kept forever)."""

    prediction_flush_interval_s: Seconds = 1.0
    """How often sampled predictions are written to the registry in one batch."""

    retention_interval_s: Seconds = 3600.0
    """How often the retention pass runs (and once at start)."""

    alert_min_accuracy: float | None = Field(default=None, ge=0, le=1)
    """Alert when a version's accuracy over the quality window falls below this (feedback)."""

    alert_max_mae: float | None = Field(default=None, ge=0)
    """Alert when a version's mean absolute error over the quality window exceeds this."""

    alert_quality_window_s: Seconds = 3600.0
    """The window of feedback the quality gauges and alert rules look at."""

    alert_max_ece: float | None = Field(default=None, ge=0, le=1)
    """Alert when a version's expected calibration error over the quality window exceeds this."""

    alert_max_psi: float | None = Field(default=None, gt=0)
    """Alert when a version's input drift (PSI of any feature) over the quality window exceeds
    this (e.g. 0.25); checked every ``alert_drift_interval_s``."""

    alert_drift_interval_s: Seconds = 300.0
    """How often input drift is measured for the PSI rule (it reads the logged inputs)."""

    alert_min_drift_inputs: int = Field(default=100, ge=1)
    """The PSI rule needs this many logged inputs of a version in its window before it may fire."""

    prediction_cache_max_entries: int = Field(default=100_000, ge=1)
    """Entries the in-process prediction cache holds (all functions), least recently used out."""

    alert_min_feedback: int = Field(default=20, ge=1)
    """A quality rule needs this much feedback in its window before it may fire."""

    alert_webhooks: list[str] = Field(default_factory=list)
    """URLs that get a JSON POST when an alert fires or resolves (JSON list in the env)."""

    alert_interval_s: Seconds = 5.0
    """How often alert rules are evaluated."""

    rollout_interval_s: Seconds = 2.0
    """How often the rollout controller judges each active rollout (docs/DELIVERY.md)."""

    shadow_max_concurrency: int = Field(default=32, ge=1, le=10_000)
    """Shadow copies in flight at once; beyond it a copy is dropped (and counted), never queued
    (docs/DELIVERY.md)."""

    alert_window_s: Seconds = 300.0
    """Sliding window the alert rules look at."""

    alert_error_rate: Fraction = 0.01
    """Fire when more than this fraction of a function's invocations fail in the window."""

    alert_p95_ms: PositiveNumber = 1000.0
    """Fire when a function's p95 gateway latency exceeds this in the window."""

    alert_cold_start_ratio: Fraction = 0.05
    """Fire when more than this fraction of a function's invocations are cold starts."""

    alert_cost_anomaly_factor: PositiveNumber = 3.0
    """Fire when the window's spend exceeds this multiple of its trailing hourly baseline."""

    alert_min_invocations: Annotated[int, Field(ge=0)] = 20
    """A rule needs at least this many invocations in the window before it may fire."""

    # --- async invocations and schedules (docs/ASYNC.md) ---
    async_concurrency: Annotated[int, Field(ge=1, le=1000)] = 8
    """Async events one gateway runs at once (more wait in the durable queue)."""

    async_poll_s: Seconds = 0.5
    """How often an idle gateway looks for events that became visible (retries coming due,
    expired leases, events queued by other gateways)."""

    async_visibility_s: Annotated[float, Field(ge=1, le=3600, allow_inf_nan=False)] = 30.0
    """Lease of a running event, extended every third of it while it runs; a gateway that
    dies leaves its events to run elsewhere (or after its restart) this long afterwards."""

    async_retry_delay_s: Annotated[float, Field(ge=0, le=3600, allow_inf_nan=False)] = 60.0
    """Wait before retrying a function error, doubled for the second retry (Lambda: 1 and 2
    minutes), with +/-20% jitter."""

    async_retention_s: Annotated[float, Field(ge=60, allow_inf_nan=False)] = 86_400.0
    """Finished events (and so their idempotency keys) are kept this long."""

    schedule_poll_s: Seconds = 1.0
    """How often each gateway checks whether a schedule's tick is due."""

    # --- security and tenancy (docs/SECURITY.md) ---
    auth: Annotated[Literal["auto", "on", "off"], BeforeValidator(_switch)] = "auto"
    """``auto`` (on whenever ``host`` is not a loopback address), ``on`` or ``off`` (any case;
    ``true``/``yes``/``1`` mean ``on``, ``false``/``no``/``0`` mean ``off``; anything else is
    refused at start)."""

    api_key: str | None = None
    """The CLI's credential (``COLDBREW_API_KEY``), sent as a bearer token. Never read by the
    server."""

    jwt_secret: str | None = None
    """HMAC secret for HS256 bearer tokens."""

    jwt_jwks_file: FilePath | None = None
    """JWKS file with the public keys of RS256/ES256 bearer tokens."""

    jwt_issuer: str | None = None
    """When set, tokens must carry this ``iss``."""

    jwt_audience: str | None = None
    """When set, tokens must carry this ``aud``."""

    jwt_role_claim: str = "role"
    """Claim holding the coldbrew role (admin, deployer, invoker, viewer)."""

    jwt_functions_claim: str = "functions"
    """Claim holding the function globs (a list, or a comma-separated string)."""

    redis_url: str | None = None
    """Redis holding rate-limit and quota state shared by several gateways, e.g.
    ``redis://127.0.0.1:6379/0``; in-process state when unset."""

    trusted_proxies: list[str] = Field(default_factory=list)
    """CIDRs of proxies whose ``X-Forwarded-For`` is believed (JSON list in the env)."""

    max_request_s: Seconds = 900.0
    """Upper bound on any request's ``X-Coldbrew-Deadline-Ms``."""

    tls_cert: FilePath | None = None
    """PEM certificate (chain): with ``tls_key`` the gateway serves HTTPS/WSS."""

    tls_key: FilePath | None = Field(default=None, validate_default=True)
    """PEM private key of ``tls_cert``."""

    artifact_key: str | None = None
    """Base64 of 32 bytes: artifacts are stored encrypted (AES-256-GCM) under this key."""

    artifacts_url: str | None = None
    """``s3://bucket/prefix``: artifacts live in an S3-compatible bucket shared by every gateway
    and node (docs/CLUSTER.md); each node keeps its bundles folder as a local cache. Unset: the
    local folder ``<home>/artifacts``."""

    s3_endpoint_url: str | None = None
    """Endpoint of the S3-compatible service (MinIO, moto), e.g. ``http://127.0.0.1:9000``;
    AWS's own when unset. Credentials come from boto3's usual places (``AWS_*`` variables)."""

    s3_source_buckets: str | None = None
    """Comma-separated buckets (``bucket``, or ``bucket/prefix``: only keys under it) that
    tenants' ``kind = "s3"`` event sources may read and write their batch results to; with auth
    on, an S3 source is refused unless its bucket, prefix and ``batch_output`` are in it
    (core/s3_grants.py, jobs/sources/access.py, docs/SECURITY.md)."""

    s3_source_endpoints: str | None = None
    """Comma-separated ``http(s)://`` S3 endpoints that an S3 source's ``endpoint_url`` may name
    with auth on, besides the gateway's own (``s3_endpoint_url``, ``AWS_ENDPOINT_URL_S3``)."""

    backend: Annotated[Literal["local", "ray"], Lower] = "local"
    """Where instances run: ``local`` processes on this machine (the default), or ``ray``: on
    the nodes of a Ray cluster, through one node agent per node (docs/CLUSTER.md; needs
    ``pip install 'coldbrew[ray]'``)."""

    ray_address: str | None = None
    """Address of the Ray cluster with ``backend=ray``: ``auto`` (the cluster this machine
    joined with ``ray start``) or ``HOST:PORT`` of its head (GCS). Unset: ``auto``."""

    secrets_key: str | None = None
    """Base64 of 32 bytes: the key ``coldbrew secrets`` values are encrypted under (AES-256-GCM).
    Unset: the artifact key; neither set: a key generated once into ``$COLDBREW_HOME/secrets.key``
    (mode 0600). See docs/DATA.md."""

    feature_cache_url: str | None = None
    """Redis URL the instances' ``cache = "redis"`` feature lookups share (docs/DATA.md). It is
    handed to function code: give it a Redis database or ACL user of its own, not the
    limiter's ``COLDBREW_REDIS_URL``."""

    pickle_policy: Annotated[Literal["auto", "refuse", "allow"], Lower] = "auto"
    """Pickle-based models (joblib, pickle) run code when loaded: ``refuse`` them unless the
    deploy marks them trusted, ``allow`` them, or ``auto``: refuse when auth is on."""

    # --- checks that span fields, or need more than a type --------------------------------------
    @field_validator("price_table_custom")
    @classmethod
    def _custom_prices(cls, value: dict[str, Any] | None, info: ValidationInfo) -> Any:
        if info.data.get("price_table") == "custom" and value is None:
            raise ValueError("COLDBREW_PRICE_TABLE=custom needs COLDBREW_PRICE_TABLE_CUSTOM")
        if value is not None:
            from coldbrew.core.pricing import PriceTable

            try:
                PriceTable.model_validate(value)
            except pydantic.ValidationError as exc:
                raise ValueError(_summary(exc)) from None
        return value

    @field_validator("tls_key")
    @classmethod
    def _tls_pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if (value is None) != (info.data.get("tls_cert") is None) and "tls_cert" in info.data:
            raise ValueError("TLS needs both COLDBREW_TLS_CERT and COLDBREW_TLS_KEY")
        return value

    @field_validator("artifact_key", "secrets_key")
    @classmethod
    def _artifact_key(cls, value: str | None) -> str | None:
        if value:
            try:
                key = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise ValueError("must be base64 (e.g. `openssl rand -base64 32`)") from None
            if len(key) != 32:
                raise ValueError(f"must be base64 of 32 bytes, decodes to {len(key)}")
        return value

    @field_validator("url", "alert_webhooks", "redis_url", "feature_cache_url")
    @classmethod
    def _urls(cls, value: Any, info: ValidationInfo) -> Any:
        schemes = (
            ("redis://", "rediss://", "unix://")
            if info.field_name in ("redis_url", "feature_cache_url")
            else ("http://", "https://")
        )
        for url in value if isinstance(value, list) else [value]:
            if url is not None and not url.lower().startswith(schemes):
                shown = "the URL" if info.field_name in SECRET_FIELDS else repr(url[:80])
                raise ValueError(f"{shown} does not start with {' or '.join(schemes)}")
        return value

    @field_validator("ray_address")
    @classmethod
    def _ray_address(cls, value: str | None) -> str | None:
        if value is None or value == "auto":
            return value
        if value.startswith("ray://"):
            raise ValueError("Ray Client (ray://) is not supported: run the gateway on a Ray node")
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError("must be 'auto' or HOST:PORT of the Ray head, e.g. 10.0.0.5:6379")
        return value

    @field_validator("artifacts_url")
    @classmethod
    def _artifacts_url(cls, value: str | None) -> str | None:
        if value is not None and not _S3_URL.match(value):
            raise ValueError("must be s3://bucket/prefix (a bucket name: a-z, 0-9, '.', '-')")
        return value

    @field_validator("s3_source_buckets", "s3_source_endpoints")
    @classmethod
    def _s3_source_grants(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            from coldbrew.core import s3_grants  # the parsers the sources use too

            parse = (
                s3_grants.parse_buckets
                if info.field_name == "s3_source_buckets"
                else s3_grants.parse_endpoints
            )
            parse(value)  # its ValueError names the bad entry
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # its ValueError names the bad entry
        return value

    def pickle_allowed(self) -> bool:
        """Whether untrusted pickle-based models may be deployed."""
        if self.pickle_policy in ("allow", "refuse"):
            return self.pickle_policy == "allow"
        return not self.auth_enabled()

    def auth_enabled(self) -> bool:
        if self.auth in ("on", "off"):
            return self.auth == "on"
        from coldbrew.core.network import is_loopback_host

        return not is_loopback_host(self.host)

    def registry_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'registry.db'}"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def bundles_dir(self) -> Path:
        return self.home / "bundles"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"


# --- reporting a bad setting ----------------------------------------------------------------
SECRET_FIELDS = frozenset(
    {
        "api_key",
        "jwt_secret",
        "artifact_key",
        "secrets_key",
        "database_url",
        "redis_url",
        "feature_cache_url",
    }
)
"""Settings whose values are never echoed in an error message."""


class InvalidSettings(errors.ValidationError):
    """A ``COLDBREW_*`` value that is not allowed. Its message names the variable, the value
    and what is allowed, in one paragraph; ``coldbrew`` prints it and exits with status 2."""

    @classmethod
    def from_validation(
        cls, exc: pydantic.ValidationError, given: dict[str, Any]
    ) -> InvalidSettings:
        problems = []
        for error in exc.errors(include_url=False):
            field = str(error["loc"][0]) if error["loc"] else ""
            problems.append(f"{_variable(field)}={_shown(field, error, given)}: {_reason(error)}")
        return cls("invalid setting " + "; ".join(problems) + _ADVICE)

    @classmethod
    def from_source(cls, exc: pydantic_settings.SettingsError) -> InvalidSettings:
        found = re.search(r'field "([^"]+)"', str(exc))
        variable = _variable(found.group(1)) if found else "a COLDBREW_* variable"
        return cls(
            f"invalid setting {variable}: not valid JSON (lists are JSON, e.g. "
            f'\'["numpy","torch"]\'; objects are JSON objects){_ADVICE}'
        )


_ADVICE = ". Fix or unset the variable and start again."


def _variable(field: str) -> str:
    return f"COLDBREW_{field.upper()}" if field else "COLDBREW_*"


def _shown(field: str, error: Any, given: dict[str, Any]) -> str:
    if field in SECRET_FIELDS:
        return "<hidden>"
    # The value as the user wrote it (the error's own input may be lowercased already).
    raw = given.get(field, os.environ.get(_variable(field), error.get("input")))
    if raw is None:
        return "(unset)"
    text = repr(raw if isinstance(raw, str) else str(raw))
    return text if len(text) <= 80 else text[:77] + "...'"


def _reason(error: Any) -> str:
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    if error["type"] == "literal_error":
        message = message.replace("Input should be", "allowed values are")
    if message[:2].istitle():  # "Input should..." reads on after a colon; "TLS needs" stays
        message = message[0].lower() + message[1:]
    return message


def _summary(exc: pydantic.ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'value'}: {_reason(e)}" for e in exc.errors()
    )
