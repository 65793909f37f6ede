"""Creating, listing, revoking and rotating API keys, and looking them up per request.

Lookups are cached for ``CACHE_TTL_S``: a revocation or rotation reaches every gateway within
that time, without a database query on every request. ``last_used_at`` is written at most once
a minute per key, off the request path.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coldbrew import errors
from coldbrew.core.network import check_cidrs
from coldbrew.registry.security import SecurityStore, now
from coldbrew.security import keys
from coldbrew.security.principal import ROLES, KeyLimits, Principal, parse_functions

CACHE_TTL_S = 1.0
MAX_LIMIT = 2**31 - 1
"""Bursts and quotas are 32-bit columns in the registry."""
LAST_USED_EVERY_S = 60.0


@dataclass(frozen=True)
class KeySpec:
    role: str
    functions: tuple[str, ...] = ("*",)
    name: str = ""
    rate_per_s: float | None = None
    burst: int | None = None
    daily_quota: int | None = None
    monthly_quota: int | None = None
    ip_allowlist: tuple[str, ...] = ()

    def validate(self) -> KeySpec:
        if self.role not in ROLES:
            raise errors.ValidationError(f"unknown role {self.role!r}; known: {', '.join(ROLES)}")
        if self.rate_per_s is not None and not 0 < self.rate_per_s < math.inf:  # NaN too
            raise errors.ValidationError("rate must be a positive, finite number")
        for value in (self.burst, self.daily_quota, self.monthly_quota):
            if value is not None and not 0 <= value <= MAX_LIMIT:
                raise errors.ValidationError(f"burst and quotas must be 0 to {MAX_LIMIT}")
        try:
            ips = tuple(check_cidrs(self.ip_allowlist))
        except ValueError as exc:
            raise errors.ValidationError(f"bad IP allowlist: {exc}") from None
        functions = self.functions if self.role != "admin" else ("*",)
        return KeySpec(**{**self.__dict__, "ip_allowlist": ips, "functions": functions})

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> KeySpec:
        try:
            return cls(
                role=str(body.get("role") or ""),
                functions=parse_functions(body.get("functions", "*")) or ("*",),
                name=str(body.get("name") or "")[:128],
                rate_per_s=_opt(float, body.get("rate_per_s")),
                burst=_opt(int, body.get("burst")),
                daily_quota=_opt(int, body.get("daily_quota")),
                monthly_quota=_opt(int, body.get("monthly_quota")),
                ip_allowlist=parse_functions(body.get("ip_allowlist")),
            ).validate()
        except (TypeError, ValueError) as exc:
            raise errors.ValidationError(f"bad key spec: {exc}") from None


def _opt(kind: type, value: Any) -> Any:
    return None if value is None else kind(value)


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A key row as the API shows it: never the hash."""
    shown = {k: v for k, v in row.items() if k != "secret_sha256"}
    for k, v in shown.items():
        if isinstance(v, datetime):
            shown[k] = v.isoformat()
    return shown


def principal_of(row: dict[str, Any]) -> Principal:
    return Principal(
        id=row["id"],
        kind="key",
        role=row["role"],
        functions=tuple(row["functions"] or ()),
        ip_allowlist=tuple(row["ip_allowlist"] or ()),
        limits=KeyLimits(row["rate_per_s"], row["burst"], row["daily_quota"], row["monthly_quota"]),
    )


class Keyring:
    def __init__(self, store: SecurityStore) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._last_used: dict[str, float] = {}

    def create(self, spec: KeySpec) -> tuple[dict[str, Any], str]:
        spec = spec.validate()
        new = keys.new_key()
        row = {
            "id": new.id,
            "prefix": new.prefix,
            "secret_sha256": new.secret_sha256,
            "name": spec.name,
            "role": spec.role,
            "functions": list(spec.functions),
            "ip_allowlist": list(spec.ip_allowlist),
            "rate_per_s": spec.rate_per_s,
            "burst": spec.burst,
            "daily_quota": spec.daily_quota,
            "monthly_quota": spec.monthly_quota,
        }
        self.store.add_key(row)
        created = self.store.get_key(new.id)
        assert created is not None
        return public(created), new.token

    def list(self) -> list[dict[str, Any]]:
        return [public(row) for row in self.store.list_keys()]

    def revoke(self, key_id: str) -> dict[str, Any]:
        self._existing(key_id)
        self.store.update_key(key_id, revoked_at=now())
        self._cache.pop(key_id, None)
        return public(self._existing(key_id))

    def rotate(self, key_id: str) -> tuple[dict[str, Any], str]:
        """A new secret for the same key (same id, role, scopes, limits); the old one stops
        working at once here and within ``CACHE_TTL_S`` on other gateways."""
        row = self._existing(key_id)
        if row["revoked_at"] is not None:
            raise errors.ValidationError(f"key {key_id} is revoked; create a new one")
        new = keys.new_key(key_id)
        self.store.update_key(key_id, secret_sha256=new.secret_sha256)
        self._cache.pop(key_id, None)
        return public(self._existing(key_id)), new.token

    def _existing(self, key_id: str) -> dict[str, Any]:
        row = self.store.get_key(key_id)
        if row is None:
            raise errors.NotFound(f"no key {key_id}")
        return row

    # --- per request ----------------------------------------------------------------------------
    def lookup(self, key_id: str) -> dict[str, Any] | None:
        """The key's row, cached briefly (runs in a worker thread on a cache miss)."""
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        row = self.store.get_key(key_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (time.monotonic() + CACHE_TTL_S, row)
        return row

    def cached(self, key_id: str) -> tuple[bool, dict[str, Any] | None]:
        cached = self._cache.get(key_id)
        if cached is not None and cached[0] > time.monotonic():
            return True, cached[1]
        return False, None

    def touch_due(self, key_id: str) -> bool:
        last = self._last_used.get(key_id, 0.0)
        if time.monotonic() - last < LAST_USED_EVERY_S:
            return False
        self._last_used[key_id] = time.monotonic()
        return True

    def touch(self, key_id: str) -> None:
        self.store.update_key(key_id, last_used_at=now())
