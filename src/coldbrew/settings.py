"""Typed settings for a coldbrew server and CLI, read from ``COLDBREW_*`` environment variables.

Every backend is chosen here by a URL or name, never by code changes (see ARCHITECTURE.md).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path.home() / ".coldbrew"


class Settings(BaseSettings):
    """Server settings. Each field maps to ``COLDBREW_<FIELD>`` (e.g. ``COLDBREW_HOME``)."""

    model_config = SettingsConfigDict(env_prefix="COLDBREW_", extra="ignore")

    home: Path = Field(default=DEFAULT_HOME)
    """Folder holding the SQLite registry, the artifact store, materialised bundles and logs."""

    database_url: str | None = None
    """SQLAlchemy URL of the registry; defaults to ``sqlite:///<home>/registry.db``.
    For PostgreSQL use ``postgresql+psycopg://user@host:5432/db``."""

    host: str = "127.0.0.1"
    """Interface the gateway binds to."""

    port: int = 8080
    """TCP port the gateway listens on."""

    url: str = "http://127.0.0.1:8080"
    """Where the CLI finds the server."""

    max_payload_bytes: int = 6 * 1024 * 1024
    """Largest accepted sync invocation body (AWS Lambda's sync limit is 6 MB)."""

    max_bundle_bytes: int = 512 * 1024 * 1024
    """Largest accepted deploy upload."""

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

    reap_interval_s: float = 0.5
    """How often pools look for idle instances to stop and dead ones to forget."""

    version_templates: bool = True
    """After a version's first cold start, keep a template with its model loaded, so later cold
    starts are a fork (milliseconds) instead of a model load."""

    version_template_idle_s: float = 1800
    """A version template is released after its version has had no instance for this long."""

    spares: bool = True
    """Templates keep one instance forked ahead of demand, so a cold start skips the fork and
    the cgroup migration (~25 ms here). Costs one mostly-shared process per template."""

    policy_minute_s: float = 60.0
    """Seconds in one minute of keep-alive policy time. Only tests and demos change it."""

    memory_enforcement: str = "auto"
    """``auto`` (cgroup when it can be made, else RSS sampling), ``cgroup``, ``rss`` or ``off``."""

    log_level: str = "info"
    """Log level of the gateway."""

    # --- observability and cost (docs/OBSERVABILITY.md) ---
    log_format: str = "text"
    """``json`` (one JSON object per line, for log shippers) or ``text`` (for people)."""

    access_log: bool | None = None
    """One log line per invocation. Default: on with ``log_format=json`` (for log shippers),
    off with ``text`` (every invocation is in the meter and in /metrics anyway, and a line per
    request costs several percent of throughput)."""

    price_table: str = "aws-x86"
    """Prices the meter bills with: ``aws-x86``, ``aws-arm64`` or ``custom``."""

    price_table_custom: dict[str, float | str] | None = None
    """With ``price_table=custom``: JSON ``{"per_request": .., "per_gb_second": ..,
    "per_provisioned_gb_second": ..}`` in USD."""

    metrics_max_functions: int = 50
    """Distinct function labels in /metrics; later functions are counted as ``_other``."""

    metrics_sample_interval_s: float = 1.0
    """How often pool gauges and provisioned-concurrency cost are sampled."""

    meter_flush_interval_s: float = 0.5
    """How often buffered usage records are written to the registry in one batch."""

    alert_webhooks: list[str] = Field(default_factory=list)
    """URLs that get a JSON POST when an alert fires or resolves (JSON list in the env)."""

    alert_interval_s: float = 5.0
    """How often alert rules are evaluated."""

    alert_window_s: float = 300.0
    """Sliding window the alert rules look at."""

    alert_error_rate: float = 0.01
    """Fire when more than this fraction of a function's invocations fail in the window."""

    alert_p95_ms: float = 1000.0
    """Fire when a function's p95 gateway latency exceeds this in the window."""

    alert_cold_start_ratio: float = 0.05
    """Fire when more than this fraction of a function's invocations are cold starts."""

    alert_cost_anomaly_factor: float = 3.0
    """Fire when the window's spend exceeds this multiple of its trailing hourly baseline."""

    alert_min_invocations: int = 20
    """A rule needs at least this many invocations in the window before it may fire."""

    # --- security and tenancy (docs/SECURITY.md) ---
    auth: str = "auto"
    """``auto`` (on whenever ``host`` is not a loopback address), ``on`` or ``off``."""

    api_key: str | None = None
    """The CLI's credential (``COLDBREW_API_KEY``), sent as a bearer token. Never read by the
    server."""

    jwt_secret: str | None = None
    """HMAC secret for HS256 bearer tokens."""

    jwt_jwks_file: Path | None = None
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

    max_request_s: float = 900.0
    """Upper bound on any request's ``X-Coldbrew-Deadline-Ms``."""

    tls_cert: Path | None = None
    """PEM certificate (chain): with ``tls_key`` the gateway serves HTTPS/WSS."""

    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""

    artifact_key: str | None = None
    """Base64 of 32 bytes: artifacts are stored encrypted (AES-256-GCM) under this key."""

    pickle_policy: str = "auto"
    """Pickle-based models (joblib, pickle) run code when loaded: ``refuse`` them unless the
    deploy marks them trusted, ``allow`` them, or ``auto``: refuse when auth is on."""

    def pickle_allowed(self) -> bool:
        """Whether untrusted pickle-based models may be deployed."""
        if self.pickle_policy in ("allow", "refuse"):
            return self.pickle_policy == "allow"
        return not self.auth_enabled()

    def auth_enabled(self) -> bool:
        if self.auth in ("on", "off"):
            return self.auth == "on"
        from coldbrew.security.network import is_loopback_host

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
