"""sha256 helpers shared by every store, and the content hash that identifies a version."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from coldbrew import errors

CHUNK_SIZE = 1024 * 1024
"""Read size when streaming; large enough to be fast, small enough that model files of several
GB never have to fit in memory."""

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def hash_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def hash_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so its size does not matter."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(sha256: str) -> str:
    """Return ``sha256`` if it is 64 lowercase hex digits, else raise ValidationError.

    Stores build file paths from it, so anything else could escape the store's folder."""
    if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
        raise errors.ValidationError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def content_hash(manifest: dict[str, str], config: dict[str, Any]) -> str:
    """The content hash of a version: sha256 of canonical JSON of its manifest and config.

    Keys are sorted and separators fixed so the same bundle always hashes the same, which is
    what makes deploys idempotent."""
    canonical = json.dumps(
        {"config": config, "manifest": manifest},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hash_bytes(canonical.encode("utf-8"))
