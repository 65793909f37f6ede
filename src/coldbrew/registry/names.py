"""Validation of the names and values callers hand to the registry."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from coldbrew import errors

FUNCTION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ALIAS_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DIGITS_RE = re.compile(r"^[0-9]+$")
LATEST_QUALIFIERS = frozenset({"$LATEST", "latest"})


def check_function_name(name: str) -> str:
    if not isinstance(name, str) or not FUNCTION_NAME_RE.match(name):
        raise errors.ValidationError(
            f"invalid function name {name!r}: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def check_alias_name(alias: str) -> str:
    # Starting with a letter also rules out all-digit names, which would read as versions.
    if not isinstance(alias, str) or not ALIAS_NAME_RE.match(alias):
        raise errors.ValidationError(
            f"invalid alias name {alias!r}: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter"
        )
    return alias


def check_version_number(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise errors.ValidationError(f"invalid version number {version!r}")
    return version


def check_content_sha256(value: str) -> str:
    if not isinstance(value, str) or not SHA256_RE.match(value):
        raise errors.ValidationError(f"content_sha256 must be 64 lowercase hex digits: {value!r}")
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
