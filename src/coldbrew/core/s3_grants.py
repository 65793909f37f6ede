"""The grants of ``COLDBREW_S3_SOURCE_BUCKETS`` and ``COLDBREW_S3_SOURCE_ENDPOINTS``, parsed:
plain values that settings.py checks at start and jobs/sources/access.py applies to a tenant's
S3 sources (docs/SECURITY.md, "Event sources")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


@dataclass(frozen=True)
class BucketGrant:
    bucket: str
    prefix: str = ""
    """Only keys starting with this ("": the whole bucket)."""

    def covers(self, bucket: str, prefix: str) -> bool:
        return bucket == self.bucket and prefix.startswith(self.prefix)


def parse_buckets(raw: str) -> list[BucketGrant]:
    """``COLDBREW_S3_SOURCE_BUCKETS``: ValueError naming the first malformed entry."""
    grants = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        bucket, _, prefix = entry.removeprefix("s3://").partition("/")
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(
                f"{entry!r} is not a bucket name or bucket/prefix "
                "(e.g. 'scoring-inbox,shared/team-a/')"
            )
        grants.append(BucketGrant(bucket, prefix))
    return grants


def normalise_endpoint(url: str) -> str:
    """Scheme and host compared case-insensitively, a trailing ``/`` ignored."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def parse_endpoints(raw: str) -> list[str]:
    """``COLDBREW_S3_SOURCE_ENDPOINTS``: ValueError naming the first malformed entry."""
    out = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        parts = urlsplit(entry)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{entry!r} is not an http(s):// URL (e.g. 'http://10.0.0.7:9000')")
        out.append(normalise_endpoint(entry))
    return out
