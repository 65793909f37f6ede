"""API keys: ``cb_<id>_<secret>``.

The id (12 hex characters) is public: it names the key in listings, audit events and the
meter. The secret (32 random bytes, URL-safe base64) is shown once, when the key is created or
rotated; the registry keeps only its sha256. A sha256 (not a slow password hash) is right here:
the secret has 256 bits of entropy, so there is nothing to brute-force, and the check runs on
every request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "cb_"
_SHAPE = re.compile(r"^cb_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    id: str
    token: str
    """The whole key, to be shown once and never stored."""
    secret_sha256: str

    @property
    def prefix(self) -> str:
        return f"{KEY_PREFIX}{self.id}_"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(key_id: str | None = None) -> NewKey:
    """A fresh key; with ``key_id`` a new secret for an existing key (rotation)."""
    key_id = key_id or secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, f"{KEY_PREFIX}{key_id}_{secret}", hash_secret(secret))


def parse(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed key, else None (then it is not a key at all)."""
    found = _SHAPE.match(token)
    return (found.group(1), found.group(2)) if found else None


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def secret_matches(secret: str, stored_sha256: str) -> bool:
    """Constant-time: the time taken says nothing about how much of the secret was right."""
    return hmac.compare_digest(hash_secret(secret), stored_sha256)
