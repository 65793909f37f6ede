"""What each endpoint of each protocol requires: a permission, and the function it concerns.

One table for every route the gateway serves, so that no endpoint can be added without
deciding its access rule; ``tests/security/test_security_matrix.py`` checks every row for every
role. Kinds of rule:

- ``open``: no credentials (health probes).
- ``function``: the path names a function; outside the caller's scope it is NOT_FOUND,
  exactly like a missing function; inside it, a role without the permission is FORBIDDEN.
- ``any``: any authenticated caller with the permission; the handler filters what it shows
  (lists) or checks the function it learns from the body (deploy, routes, @connections, API
  Gateway routes).
- ``global``: aggregate views over every function (metrics, dashboard, usage, cost, alerts):
  only for callers scoped to ``*``, since they would reveal other functions.
- ``admin``: keys and the audit log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from coldbrew import errors
from coldbrew.gateway.invoke import split_qualifier

Kind = Literal["open", "function", "any", "global", "admin"]


@dataclass(frozen=True)
class Rule:
    kind: Kind
    permission: str = "read"
    function: str | None = None
    audit: str | None = None
    """Name of the administrative action, recorded in the audit log."""
    limited: bool = False
    """An invocation: the caller's rate limits and quotas apply."""


OPEN = Rule("open")
_SEG = r"([^/]+)"


def _lambda_name(raw: str) -> str:
    from coldbrew.gateway.lambda_api import parse_function_name

    try:
        return parse_function_name(raw, None)[0]
    except errors.ColdbrewError:
        return raw


def _native_name(raw: str) -> str:
    return split_qualifier(raw)[0]


# (methods or None for any, path pattern, rule factory from the groups)
_TABLE: list[tuple[frozenset[str] | None, re.Pattern[str], object]] = []


def _add(methods: str | None, pattern: str, rule: object) -> None:
    chosen = frozenset(methods.split()) if methods else None
    _TABLE.append((chosen, re.compile(f"^{pattern}$"), rule))


def _fn(permission: str, audit: str | None = None, limited: bool = False, lam: bool = False):  # type: ignore[no-untyped-def]
    def make(groups: tuple[str, ...]) -> Rule:
        name = _lambda_name(groups[0]) if lam else _native_name(groups[0])
        return Rule("function", permission, name, audit, limited)

    return make


_add("GET HEAD", "/healthz", OPEN)
_add("GET HEAD", "/v2/health/(live|ready)", OPEN)
_add("GET", "/v1/functions", Rule("any", "read"))
_add("POST", "/v1/functions", Rule("any", "deploy", audit="function.deploy"))
_add("GET", f"/v1/functions/{_SEG}", _fn("read"))
_add("DELETE", f"/v1/functions/{_SEG}", _fn("deploy", "function.delete"))
_add("GET", f"/v1/functions/{_SEG}/(?:versions|aliases|logs)", _fn("read"))
_add("PUT", f"/v1/functions/{_SEG}/aliases/[^/]+", _fn("deploy", "alias.set"))
_add("DELETE", f"/v1/functions/{_SEG}/aliases/[^/]+", _fn("deploy", "alias.delete"))
_add("POST", f"/v1/functions/{_SEG}/invoke", _fn("invoke", limited=True))
_add("GET", "/v1/routes", Rule("any", "read"))
_add("POST", "/v1/routes", Rule("any", "deploy", audit="route.add"))
_add("DELETE", "/v1/routes/[^/]+", Rule("any", "deploy", audit="route.delete"))
_add("GET", "/v1/keys", Rule("admin", "admin"))
_add("POST", "/v1/keys", Rule("admin", "admin", audit="key.create"))
_add("DELETE", "/v1/keys/[^/]+", Rule("admin", "admin", audit="key.revoke"))
_add("POST", "/v1/keys/[^/]+/rotate", Rule("admin", "admin", audit="key.rotate"))
_add("GET", "/v1/audit", Rule("admin", "admin"))
_add("GET", "/(?:metrics|ui|v1/stats|v1/alerts|v1/usage|v1/cost)", Rule("global", "read"))
_add("GET", "/2015-03-31/functions/?", Rule("any", "read"))
_add("GET", f"/2015-03-31/functions/{_SEG}", _fn("read", lam=True))
_add("POST", f"/2015-03-31/functions/{_SEG}/invocations", _fn("invoke", limited=True, lam=True))
_add("GET", "/v2", Rule("any", "read"))
_add("GET", f"/v2/models/{_SEG}(?:/versions/[^/]+)?(?:/ready)?", _fn("read"))
_add("POST", f"/v2/models/{_SEG}(?:/versions/[^/]+)?/infer", _fn("invoke", limited=True))
_add(None, "/ws/@connections/[^/]+", Rule("any", "invoke"))
_add("WEBSOCKET", f"/ws/{_SEG}", _fn("invoke", limited=True))
_add("WEBSOCKET", f"/stream/{_SEG}", _fn("invoke", limited=True))

# Whatever no route above takes goes to the API Gateway catch-all, which checks the function of
# the route it matches.
FALLBACK = Rule("any", "invoke", limited=True)


def classify(method: str, path: str) -> Rule:
    """The rule for one request. ``method`` is ``WEBSOCKET`` for a WebSocket handshake."""
    if method == "HEAD":  # Starlette serves HEAD with the GET handler: same rule
        method = "GET"
    for methods, pattern, rule in _TABLE:
        if methods is not None and method not in methods:
            continue
        found = pattern.match(path)
        if found:
            return rule if isinstance(rule, Rule) else rule(found.groups())  # type: ignore[operator]
    return FALLBACK
