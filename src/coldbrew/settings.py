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
            "joblib",
            "onnxruntime",
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

    memory_enforcement: str = "auto"
    """``auto`` (cgroup when it can be made, else RSS sampling), ``cgroup``, ``rss`` or ``off``."""

    log_level: str = "info"
    """Log level of the gateway."""

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
