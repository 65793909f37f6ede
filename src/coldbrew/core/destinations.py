"""Destination strings of async invocations (``[destinations]`` in coldbrew.toml, or Lambda's
DestinationConfig): parsed here, below ``runtime`` and ``jobs``, so a bad one is refused when
the config is read. Delivery lives in ``coldbrew.jobs.destinations``.

- ``function:NAME`` or a Lambda function ARN (``arn:aws:lambda:...:function:NAME``);
- an ``http://`` / ``https://`` URL (a webhook);
- ``results`` (the function's queue of results, ``GET /v1/functions/{name}/results``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

RESULTS = "results"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # = registry.names.FUNCTION_NAME_RE
_LAMBDA_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]*:\d*:function:([^:]+)(?::[^:]+)?$")


@dataclass(frozen=True)
class Destination:
    kind: Literal["function", "webhook", "results"]
    target: str
    """The function name, the URL, or ``results``."""


def parse_destination(value: str) -> Destination:
    """A destination, or ValueError saying which shapes are understood."""
    value = value.strip()
    if value == RESULTS:
        return Destination("results", RESULTS)
    if value.startswith(("http://", "https://")) and len(value) > len("https://"):
        return Destination("webhook", value)
    name = None
    if value.startswith("function:"):
        name = value[len("function:") :]
    else:
        found = _LAMBDA_ARN.match(value)
        if found:
            name = found.group(1)
    if name is not None and _NAME.fullmatch(name):
        return Destination("function", name)
    raise ValueError(
        f"destination {value!r} is not understood; use 'function:NAME', a Lambda function ARN, "
        "an http(s):// URL, or 'results'"
    )
