"""``InvocationRequest``: one invocation, whatever protocol or producer it came from.

Adapters (native REST, Lambda Invoke, Open Inference v2, API Gateway routes, WebSocket messages,
stream sessions) and producers (async events, schedules, batch jobs) only translate their wire
format into one of these and hand it to :class:`coldbrew.dataplane.DataPlane`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coldbrew.core.outcome import Kind
from coldbrew.security.principal import ANONYMOUS, Principal


@dataclass(slots=True)
class InvocationRequest:
    function: str
    """The function's name, without qualifier."""
    payload: bytes
    """The event as JSON bytes (or the protocol's raw body, e.g. Open Inference binary)."""
    request_id: str
    qualifier: str | None = None
    """A version number or alias name; None means ``latest``."""
    principal: Principal = ANONYMOUS
    """Who calls: its rate limits and quotas apply, and the meter names it."""
    protocol: str = "native"
    kind: Kind = "sync"
    client_context: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None
    want_logs: bool = False
    """Return the invocation's captured output (Lambda's ``LogType: Tail``)."""
    event: Any = field(default=None)
    """The parsed event when the adapter already has it (saves a second parse for the schema
    check); None means "parse ``payload`` if a schema needs it"."""
    check_schema: bool = True
    """False for envelopes the function's schema does not describe (binary tensors)."""
    limited: bool = True
    """False when the limits were already charged for this invocation (an async event was
    charged when it was accepted, not again when it runs)."""
    sticky_key: str | None = None
    """Keeps a caller on one version of a weighted alias (``X-Coldbrew-Sticky-Key``); None:
    the alias's sticky JSON path, if it has one, else a random draw (dataplane/split.py)."""
