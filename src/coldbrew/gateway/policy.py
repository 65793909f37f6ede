"""The gateway's one route table: every endpoint of every protocol with its access rule.

An :class:`Endpoint` is a path, a handler, its methods and what it requires; the table makes
both the Starlette routes and the rule lookup of the security middleware from the same entries,
in the same order, so the router and the middleware cannot disagree (a route without a rule
cannot be written). ``tests/security/test_security_matrix.py`` checks every role against it.
Kinds of rule:

- ``open``: no credentials (health probes).
- ``function``: the path names a function; outside the caller's scope it is NOT_FOUND,
  exactly like a missing function; inside it, a role without the permission is FORBIDDEN.
- ``any``: any authenticated caller with the permission; the handler filters what it shows
  (lists) or checks the function it learns from the body (deploy, routes, @connections, API
  Gateway routes).
- ``global``: aggregate views over every function (metrics, dashboard, usage, cost, alerts):
  only for callers scoped to ``*``, since they would reveal other functions.
- ``admin``: keys, secrets, the audit log and garbage collection.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from starlette.routing import BaseRoute, Route, WebSocketRoute

from coldbrew import errors
from coldbrew.gateway.targets import parse_function_name, split_qualifier
from coldbrew.registry.routes import reserved_prefix

Kind = Literal["open", "function", "any", "global", "admin"]
WEBSOCKET = "WEBSOCKET"
"""The method of a WebSocket handshake, for the table and :meth:`EndpointTable.classify`."""


@dataclass(frozen=True)
class Rule:
    kind: Kind
    permission: str = "read"
    function: str | None = None
    audit: str | None = None
    """Name of the administrative action, recorded in the audit log."""

    def resolve(self, params: Mapping[str, str], path: str) -> Rule:
        return self


class AccessRule(Protocol):
    """A rule, or what makes one from the path parameters of the request (the function)."""

    def resolve(self, params: Mapping[str, str], path: str) -> Rule: ...


@dataclass(frozen=True)
class FunctionRule:
    """The path names the function: ``{function}`` in the Lambda API (a name, partial or full
    ARN), ``{name}`` everywhere else (a name with an optional ``:qualifier``)."""

    permission: str
    audit: str | None = None

    def resolve(self, params: Mapping[str, str], path: str) -> Rule:
        if "function" in params:
            try:
                name = parse_function_name(params["function"], None)[0]
            except errors.ColdbrewError:
                name = params["function"]  # the handler answers the bad name
        else:
            name = split_qualifier(params["name"])[0]
        return Rule("function", self.permission, name, self.audit)


OPEN = Rule("open")
FALLBACK = Rule("any", "invoke")
"""Whatever no endpoint takes goes to the API Gateway catch-all, which checks the function of
the route it matches."""
RESERVED = Rule("any", "read")
"""A path under coldbrew's own prefixes that no endpoint serves (a typo like
``/v1/functoins``): never a route's (registry/routes.RESERVED_PREFIXES), so the catch-all
answers NOT_FOUND; any authenticated caller may learn that, whatever its role."""


class CatchAllRule:
    """The API Gateway catch-all: RESERVED under coldbrew's prefixes, else FALLBACK."""

    def resolve(self, params: Mapping[str, str], path: str) -> Rule:
        return RESERVED if reserved_prefix(path) else FALLBACK


def function(permission: str, audit: str | None = None) -> FunctionRule:
    return FunctionRule(permission, audit)


def anyone(permission: str, audit: str | None = None) -> Rule:
    return Rule("any", permission, audit=audit)


def admin(audit: str | None = None) -> Rule:
    return Rule("admin", "admin", audit=audit)


GLOBAL_READ = Rule("global", "read")


@dataclass(frozen=True)
class Endpoint:
    """One row of the table: ``methods`` is space-separated (``"GET"``, ``"PUT POST"``), or
    ``"WEBSOCKET"`` for a WebSocket endpoint."""

    path: str
    endpoint: Callable[..., Any]
    methods: str
    rule: AccessRule
    route: BaseRoute = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chosen = self.methods.split()
        if chosen == [WEBSOCKET]:
            route: BaseRoute = WebSocketRoute(self.path, self.endpoint)
        else:
            if not chosen or WEBSOCKET in chosen:
                raise ValueError(f"{self.path}: methods {self.methods!r} (WEBSOCKET goes alone)")
            route = Route(self.path, self.endpoint, methods=chosen)
        object.__setattr__(self, "route", route)


CLASSIFY_CACHE = 4096
CACHED_PATH_CHARS = 256
"""How many (method, path) rules a table remembers, and the longest path it remembers (so the
cache stays within about 1 MB whatever paths callers send)."""


class EndpointTable:
    """The endpoints in routing order: :attr:`routes` for Starlette, :meth:`classify` for the
    security middleware. Both take the first entry whose path and method match, as the
    router does."""

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self.endpoints = list(endpoints)
        self.routes: list[BaseRoute] = [e.route for e in self.endpoints]
        self._match = []
        for entry in self.endpoints:
            route = entry.route
            # Starlette adds HEAD to every GET route; a WebSocket route has no methods.
            methods = frozenset(getattr(route, "methods", None) or {WEBSOCKET})
            self._match.append((methods, route.path_regex, entry.rule))  # type: ignore[attr-defined]
        # A rule depends on the method and the path alone, so the hot paths (one invoke URL
        # per function) are matched once; bounded, since paths are the caller's to choose.
        self._cached = functools.lru_cache(maxsize=CLASSIFY_CACHE)(self._classify)

    def classify(self, method: str, path: str) -> Rule:
        """The rule for one request. ``method`` is ``WEBSOCKET`` for a WebSocket handshake."""
        if len(path) > CACHED_PATH_CHARS:  # a long path is matched, never remembered
            return self._classify(method, path)
        return self._cached(method, path)

    def _classify(self, method: str, path: str) -> Rule:
        if method == "HEAD":  # Starlette serves HEAD with the GET handler: same rule
            method = "GET"
        for methods, pattern, rule in self._match:
            if method in methods:
                found = pattern.match(path)
                if found:
                    return rule.resolve(found.groupdict(), path)
        # No endpoint takes this method on this path: the router answers 405 or NOT_FOUND.
        return RESERVED if reserved_prefix(path) else FALLBACK
