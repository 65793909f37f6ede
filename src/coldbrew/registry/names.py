"""Validation of the names and values callers hand to the registry."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from coldbrew import errors

# Every pattern is used with ``fullmatch``: ``$`` would also match before a trailing newline.
MAX_NAME_LENGTH = 64
FUNCTION_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
ALIAS_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
DIGITS_RE = re.compile(r"[0-9]+")
LATEST_QUALIFIERS = frozenset({"$LATEST", "latest"})
MAX_VERSION = 2**31 - 1
"""Versions are 32-bit in the registry (PostgreSQL ``integer``); a larger number names none."""


def check_function_name(name: str) -> str:
    # The length test first: a 10,000-character name costs no regex scan, and says why.
    if (
        not isinstance(name, str)
        or len(name) > MAX_NAME_LENGTH
        or not FUNCTION_NAME_RE.fullmatch(name)
    ):
        raise errors.ValidationError(
            f"invalid function name {_shown(name)}: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def check_alias_name(alias: str) -> str:
    # Starting with a letter also rules out all-digit names, which would read as versions.
    if (
        not isinstance(alias, str)
        or len(alias) > MAX_NAME_LENGTH
        or not ALIAS_NAME_RE.fullmatch(alias)
    ):
        raise errors.ValidationError(
            f"invalid alias name {_shown(alias)}: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter"
        )
    return alias


def check_version_number(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise errors.ValidationError(
            f"invalid version number {_shown(version)}: versions are 1 to {MAX_VERSION}"
        )
    return version


def version_qualifier(qualifier: str | None) -> int | None:
    """The version number a qualifier names when it is all ASCII digits, else None (an alias or
    ``$LATEST``). A number beyond any version is NotFound here, before it reaches the database,
    whose integers it would overflow."""
    if qualifier is None or not DIGITS_RE.fullmatch(qualifier):
        return None
    if len(qualifier) > 10 or int(qualifier) > MAX_VERSION:
        raise errors.NotFound(
            f"version {_shown(qualifier)} not found: versions are 1 to {MAX_VERSION}"
        )
    return int(qualifier)


def _shown(value: Any) -> str:
    """A caller's value in a message, cut short: error messages must not echo 10 kB back."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:70]}... ({len(str(value))} characters)"


def check_content_sha256(value: str) -> str:
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise errors.ValidationError(
            f"content_sha256 must be 64 lowercase hex digits: {_shown(value)}"
        )
    return value


def as_json(value: Any, what: str) -> Any:
    """A deep, JSON-only copy of ``value``: the caller keeps no handle on stored state, and a
    value the database could not store is refused here rather than at commit."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise errors.ValidationError(f"{what} is not JSON-serialisable: {exc}") from None


def check_manifest(manifest: Any) -> dict[str, str]:
    if not isinstance(manifest, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in manifest.items()
    ):
        raise errors.ValidationError("manifest must map relative paths to sha256 strings")
    return dict(manifest)


def check_weights(version: int, weights: dict[int, float] | None) -> dict[int, float] | None:
    """Validate a traffic split; the alias's own version receives ``1 - sum(weights)``."""
    if not weights:
        return None
    if not isinstance(weights, dict):
        raise errors.ValidationError("weights must map version numbers to fractions")
    clean: dict[int, float] = {}
    for other, fraction in weights.items():
        check_version_number(other)
        if other == version:
            raise errors.ValidationError(
                f"weights must name other versions than the alias's own ({version})"
            )
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not math.isfinite(fraction)
            or not 0 <= fraction <= 1
        ):
            raise errors.ValidationError(f"weight of version {other} must be in [0, 1]")
        clean[other] = float(fraction)
    if sum(clean.values()) >= 1:
        raise errors.ValidationError("weights must sum to less than 1")
    return clean


STICKY_PATH_RE = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_-]*|\[[0-9]{1,6}\])+")
"""``$.user.id``, ``$.items[0].key``: dotted names and list indexes from the event's root."""


def check_sticky_path(path: str | None) -> str | None:
    """A sticky-key JSON path, or None; refused unless it has the small grammar above."""
    if path is None or path == "":
        return None
    if not isinstance(path, str) or len(path) > 256 or not STICKY_PATH_RE.fullmatch(path):
        raise errors.ValidationError(
            f"invalid sticky path {_shown(path)}: use a JSON path like '$.user.id' or "
            "'$.items[0].key' (names and list indexes from the event's root)"
        )
    return path
