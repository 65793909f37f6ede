"""Secrets: named values (database URLs, API tokens) that functions get in their environment.

    coldbrew secrets set shop-db < url.txt     -> the registry's ``secrets`` table, encrypted
    coldbrew.toml: [secrets] DB_URL = "shop-db" -> the version's config holds the *name* only
    instance start (backends/local.py)          -> DB_URL=<value> in the instance's environment

A value is encrypted with AES-256-GCM under ``COLDBREW_SECRETS_KEY``, else the artifact key,
else a key generated once into ``$COLDBREW_HOME/secrets.key`` (0600, readable by the gateway's
user only: function uids cannot read the home). The secret's name is the associated data, so a
ciphertext copied onto another row fails to decrypt. Values leave this module in exactly one
place, :meth:`Secrets.environment`, on the way to an instance; every listing, log line, audit
event and API answer has names only.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coldbrew import errors
from coldbrew.registry.secrets import SecretTable
from coldbrew.settings import Settings

log = logging.getLogger("coldbrew.secrets")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_VALUE_BYTES = 64 * 1024
NONCE_BYTES = 12
KEY_FILE = "secrets.key"
CACHE_S = 2.0
"""How long a decrypted value is reused for further cold starts. A rotation through this
gateway drops it at once; one made through another gateway is seen within this time."""

SECRET_LOOKING = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH)", re.I
)
REDACTED = "********"


class SecretNotFound(errors.NotFound):
    code = "SECRET_NOT_FOUND"


class SecretUnreadable(errors.ColdbrewError):
    """The stored value does not decrypt: the key changed, or the row was altered."""

    code = "SECRET_UNREADABLE"


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise errors.ValidationError(
            f"a secret's name is 1-128 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit; got {name[:40]!r}"
        )
    return name


def looks_secret(variable: str) -> bool:
    """Whether a plain ``[environment]`` variable's name suggests a credential."""
    return bool(SECRET_LOOKING.search(variable))


def redact_environment(environment: dict[str, str]) -> dict[str, str]:
    """``[environment]`` as shown by the API: values of secret-looking names hidden."""
    return {k: REDACTED if looks_secret(k) else v for k, v in environment.items()}


def redact_config(config: dict[str, Any]) -> dict[str, Any]:
    """A version's config as shown by the API (``[secrets]`` holds names, and stays)."""
    environment = config.get("environment")
    if not environment:
        return config
    return {**config, "environment": redact_environment(environment)}


def load_key(settings: Settings) -> bytes:
    """The secrets key: COLDBREW_SECRETS_KEY, else the artifact key, else the home's key file
    (made on first use: 32 random bytes, base64, mode 0600, created exclusively so that two
    gateways starting at once cannot write different keys)."""
    for configured in (settings.secrets_key, settings.artifact_key):
        if configured:
            return base64.b64decode(configured)
    path = Path(settings.home) / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    log.warning("no COLDBREW_SECRETS_KEY or artifact key: generated %s (keep it safe)", path)
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    for _ in range(50):  # another process may be between its O_EXCL and its write
        text = path.read_text().strip()
        if text:
            key = base64.b64decode(text)
            if len(key) == 32:
                return key
            break
        time.sleep(0.02)
    raise SecretUnreadable(f"{path} does not hold base64 of 32 bytes; restore it or remove it")


class SecretCipher:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16]

    def seal(self, name: str, value: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, value, name.encode())

    def open(self, name: str, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], name.encode())
        except InvalidTag:
            raise SecretUnreadable(f"secret {name!r} does not decrypt") from None


class Secrets:
    """Set, list, remove and resolve secrets. Thread-safe; callers run it off the event loop,
    except :meth:`environment`, which a cold start calls (a cached hit costs a dict lookup)."""

    def __init__(self, table: SecretTable, key: Callable[[], bytes]) -> None:
        self.table = table
        self._key = key
        self._cipher: SecretCipher | None = None
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Secrets:
        return cls(SecretTable(settings.registry_url()), lambda: load_key(settings))

    @property
    def cipher(self) -> SecretCipher:
        """Made on first use, so a home without secrets never gets a key file."""
        with self._lock:
            if self._cipher is None:
                self._cipher = SecretCipher(self._key())
            return self._cipher

    def close(self) -> None:
        self.table.close()

    def set(self, name: str, value: bytes) -> dict[str, Any]:
        check_name(name)
        if not value:
            raise errors.ValidationError("a secret's value may not be empty")
        if len(value) > MAX_VALUE_BYTES:
            raise errors.ValidationError(f"a secret's value is at most {MAX_VALUE_BYTES} bytes")
        try:
            value.decode()
        except UnicodeDecodeError:
            raise errors.ValidationError("a secret's value must be UTF-8 text") from None
        if b"\x00" in value:  # an environment variable cannot hold one
            raise errors.ValidationError("a secret's value may not contain a NUL byte")
        generation = self.table.put(name, self.cipher.seal(name, value), self.cipher.key_id)
        self.forget(name)
        return {"name": name, "generation": generation}

    def list(self) -> list[dict[str, Any]]:
        return self.table.list()

    def remove(self, name: str) -> None:
        check_name(name)
        if not self.table.delete(name):
            raise SecretNotFound(f"secret {name!r} not found")
        self.forget(name)

    def forget(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)

    def value(self, name: str) -> str:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        row = self.table.get(name)
        if row is None:
            raise SecretNotFound(
                f"secret {name!r} is not set; set it with `coldbrew secrets set {name}`"
            )
        if row["key_id"] != self.cipher.key_id:
            raise SecretUnreadable(
                f"secret {name!r} was encrypted under another key (COLDBREW_SECRETS_KEY or the "
                f"artifact key changed); set it again"
            )
        value = self.cipher.open(name, row["ciphertext"]).decode()
        with self._lock:
            self._cache[name] = (now, value)
        return value

    def environment(self, config: dict[str, Any]) -> dict[str, str]:
        """The variables a version's ``[secrets]`` table maps to their values."""
        refs: dict[str, str] = config.get("secrets") or {}
        return {variable: self.value(name) for variable, name in refs.items()}


def referenced(config: dict[str, Any], name: str) -> bool:
    return name in (config.get("secrets") or {}).values()
