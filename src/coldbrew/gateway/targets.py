"""How each protocol names a function and its qualifier, parsed in one place.

``digits``, ``digits:3``, ``digits:prod`` on the native API and WebSocket paths; Lambda's
``name``, ``name:alias``, ``function:name[:q]``, ``123456789012:function:name[:q]`` or a full ARN.
Here, not in a protocol module, because the route table's access rules (``policy.py``) need the same
parsing before any endpoint runs.
"""

from __future__ import annotations

import re

from coldbrew import errors

_ARN = re.compile(
    r"^(?:arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:)?(?:\d{12}:)?function:"
    r"(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?$"
)


def split_qualifier(target: str) -> tuple[str, str | None]:
    name, _, qualifier = target.partition(":")
    return name, (qualifier or None)


def parse_function_name(raw: str, qualifier: str | None) -> tuple[str, str | None]:
    """``name``, ``name:alias``, ``function:name[:q]``, ``123456789012:function:name[:q]`` or a
    full ARN -> ``(name, qualifier)``; a ``?Qualifier=`` that contradicts the name is refused,
    as Lambda refuses it."""
    found = _ARN.match(raw)
    if found:
        name, embedded = found.group("name"), found.group("qualifier")
    elif raw.startswith("arn:"):
        raise invalid_parameter(f"'{raw}' is not a Lambda function ARN")
    else:
        name, _, embedded_raw = raw.partition(":")
        embedded = embedded_raw or None
    if embedded and qualifier and embedded != qualifier:
        raise invalid_parameter(
            f"the qualifier in the function name ({embedded}) differs from Qualifier={qualifier}"
        )
    chosen = embedded or qualifier
    return name, (None if chosen == "$LATEST" else chosen)


class InvalidParameter(errors.ValidationError):
    """A malformed parameter rather than a malformed body (InvalidParameterValueException)."""


def invalid_parameter(message: str) -> InvalidParameter:
    return InvalidParameter(message)
