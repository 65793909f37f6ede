"""Which version of a weighted alias runs one invocation: a pure choice, tested by tables.

The alias's other versions take the first slices of ``[0, 1)`` in ascending version order
(fractions as stored), the main version the rest. A draw lands in one slice:

- with a **sticky key** (the ``X-Coldbrew-Sticky-Key`` header, or the event field at the
  alias's JSON path) the draw is a stable hash of ``function:alias`` and the key, so one key
  always lands on the same version while the weights stay as they are; when a candidate's
  fraction only grows (a rollout), a key only ever moves from the baseline to the candidate;
- without one it is ``random.random()``: each invocation on its own.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson

T = TypeVar("T")
_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[([0-9]+)\]")
_MAX_KEY = 1024
"""Longer keys are cut: what is hashed must stay cheap whatever a caller sends."""


def pick(main: T, weighted: Sequence[tuple[float, T]], draw: float) -> T:
    """The version whose slice holds ``draw`` (in ``[0, 1)``)."""
    edge = 0.0
    for fraction, version in weighted:
        edge += fraction
        if draw < edge:
            return version
    return main


def stable_draw(salt: str, key: str) -> float:
    """A number in ``[0, 1)`` that depends only on ``salt`` and ``key``."""
    digest = hashlib.blake2b(f"{salt}\0{key[:_MAX_KEY]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def path_tokens(path: str) -> list[str | int]:
    """``$.user.id`` -> ``["user", "id"]``; ``$.items[0]`` -> ``["items", 0]``. The grammar is
    checked when the alias is set (``registry.names.check_sticky_path``)."""
    return [name if name else int(index) for name, index in _TOKEN.findall(path[1:])]


def find(event: Any, path: str) -> str | None:
    """The value at ``path`` in ``event`` as a key string, or None when it is absent."""
    value = event
    for token in path_tokens(path):
        if isinstance(token, int):
            if not isinstance(value, list) or token >= len(value):
                return None
            value = value[token]
        elif isinstance(value, dict) and token in value:
            value = value[token]
        else:
            return None
    if value is None or isinstance(value, dict | list):
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def sticky_key(header: str | None, path: str | None, event: Any, payload: bytes) -> str | None:
    """The caller's sticky key: the header first, else the event field at ``path``."""
    if header:
        return header
    if path is None:
        return None
    if event is None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
    return find(event, path)


def choose(
    main: T,
    weighted: Sequence[tuple[float, T]],
    salt: str,
    key: str | None,
    rand: Any = random.random,
) -> T:
    """The version one invocation runs on."""
    return pick(main, weighted, stable_draw(salt, key) if key is not None else rand())
