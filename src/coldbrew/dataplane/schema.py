"""The event schema rule: a function's ``[schema]`` (JSON Schema) checked before any instance
is spent on an event, the same way on every protocol."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson

from coldbrew import errors
from coldbrew.scaling.pool import VersionInfo

_validators: dict[str, jsonschema.protocols.Validator] = {}


def parse_event(payload: bytes) -> Any:
    """The event a JSON body holds; an empty body is ``{}`` (as Lambda's console sends)."""
    if not payload.strip():
        return {}
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise errors.ValidationError(f"request body is not valid JSON: {exc}") from None


def check_schema(version: VersionInfo, event: Any) -> None:
    schema = version.config.event_schema
    if schema is None:
        return
    validator = _validators.get(version.content_sha256)
    if validator is None:
        cls = jsonschema.validators.validator_for(schema)
        validator = _validators[version.content_sha256] = cls(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(event))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise errors.ValidationError(
            f"event does not match the function's schema at {where}: {error.message}", path=where
        )
