"""HTTP routes that mount functions the way API Gateway does: ``METHOD /path/{param}/{proxy+}``.

A route key is parsed and checked here, where routes are stored, so a malformed one is refused
before it reaches the table; matching a request against the stored routes lives in
``gateway/apigateway/routing.py``. Routes come from ``/v1/routes``, ``coldbrew route add`` or a
bundle's ``routes = [...]`` (registered on deploy).

Routes cannot capture what is coldbrew's own: a path under one of ``RESERVED_PREFIXES`` is
refused here (ROUTE_RESERVED) and never dispatched to a route by the gateway, so a mistyped
``/v1/functoins`` is coldbrew's JSON 404 and not some function's event. A greedy or catch-all
route (``{name+}`` anywhere, ``$default``) takes a whole subtree, so only an admin may add one
(checked where the caller is known: ``gateway/apigateway/admin.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, Integer, String, UniqueConstraint, delete, false, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from coldbrew import errors
from coldbrew.registry import names
from coldbrew.registry.models import Base, UTCDateTime, utcnow
from coldbrew.registry.registry import Registry

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY")
PAYLOAD_FORMATS = ("1.0", "2.0")
DEFAULT_STAGE = "$default"
CATCH_ALL_KEY = "$default"
"""API Gateway's catch-all route key; coldbrew does not store it (use an admin's greedy route)."""
RESERVED_PREFIXES = (
    "/v1",
    "/v2",
    "/2015-03-31",
    "/ws",
    "/stream",
    "/metrics",
    "/ui",
    "/healthz",
    "/openapi.json",
    "/docs",
)
"""The paths coldbrew itself serves (``tests/protocols`` checks every route of the gateway is
under one): never routable, never dispatched to a route. Any AWS-style API version prefix
(``/YYYY-MM-DD``, as ``/2019-09-25`` of Lambda's event-invoke config) is reserved too."""
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SEGMENT = re.compile(r"^(?:\{[A-Za-z_][A-Za-z0-9_]*\+?\}|[A-Za-z0-9._~!$&'()*,;=:@%-]+)$")


class RouteRow(Base):
    __tablename__ = "routes"
    __table_args__ = (UniqueConstraint("method", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(512))
    function_name: Mapped[str] = mapped_column(String(64))
    qualifier: Mapped[str | None] = mapped_column(String(64), nullable=True)
    payload_format: Mapped[str] = mapped_column(String(8), default="2.0")
    stage: Mapped[str] = mapped_column(String(64), default=DEFAULT_STAGE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    forward_credentials: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    """Whether the event keeps the caller's ``Authorization`` and ``X-Api-Key`` headers."""


@dataclass(frozen=True)
class RouteRecord:
    id: int
    method: str
    path: str
    function_name: str
    qualifier: str | None
    payload_format: str
    stage: str
    created_at: datetime
    forward_credentials: bool = False

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def target(self) -> str:
        return self.function_name + (f":{self.qualifier}" if self.qualifier else "")

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "route": self.route_key,
            "method": self.method,
            "path": self.path,
            "function": self.function_name,
            "qualifier": self.qualifier,
            "payload_format": self.payload_format,
            "stage": self.stage,
            "forward_credentials": self.forward_credentials,
            "created_at": self.created_at.isoformat(),
        }


def reserved_prefix(path: str) -> str | None:
    """The coldbrew prefix ``path`` lies under (``/v1/functoins`` -> ``/v1``), else None.

    Case and repeated slashes are ignored: ``//V1/keys`` is coldbrew's too, as far as routes
    are concerned."""
    parts = [part for part in path.lower().split("/") if part]
    normal = "/" + "/".join(parts)
    for prefix in RESERVED_PREFIXES:
        if normal == prefix or normal.startswith(prefix + "/"):
            return prefix
    if parts and _API_VERSION.match(parts[0]):
        return "/" + parts[0]
    return None


def is_catch_all(path: str) -> bool:
    """Whether a route takes a whole subtree: a greedy ``{name+}`` segment (``/{proxy+}``,
    ``/api/{proxy+}``) or API Gateway's ``$default``. Only an admin may add one."""
    return path.strip() == CATCH_ALL_KEY or "+}" in path


def parse_route_key(key: str) -> tuple[str, str]:
    """``"GET /items/{id}"`` -> ``("GET", "/items/{id}")``; VALIDATION_ERROR when malformed,
    ROUTE_RESERVED when the path is under one of coldbrew's own prefixes.

    Rules follow API Gateway: a greedy ``{name+}`` only as the last segment, parameter names
    unique, no empty segments (``/`` alone is the root)."""
    if key.strip() == CATCH_ALL_KEY:
        raise errors.ValidationError(
            f"route '{CATCH_ALL_KEY}' is not supported; an admin can add 'ANY /{{proxy+}}', "
            "which takes every path coldbrew does not serve itself",
            route=key,
        )
    method, _, path = key.strip().partition(" ")
    method, path = method.upper(), path.strip()
    if method not in METHODS:
        raise errors.ValidationError(
            f"route '{key}': method must be one of {', '.join(METHODS)}", route=key
        )
    if not path.startswith("/"):
        raise errors.ValidationError(f"route '{key}': path must start with '/'", route=key)
    segments = [] if path == "/" else path[1:].split("/")
    seen: set[str] = set()
    for i, segment in enumerate(segments):
        if not _SEGMENT.match(segment):
            raise errors.ValidationError(f"route '{key}': bad path segment '{segment}'", route=key)
        if segment.startswith("{"):
            name = segment.strip("{}+")
            if name in seen:
                raise errors.ValidationError(f"route '{key}': '{name}' appears twice", route=key)
            seen.add(name)
            if segment.endswith("+}") and i != len(segments) - 1:
                raise errors.ValidationError(
                    f"route '{key}': a greedy {segment} must be the last segment", route=key
                )
    prefix = reserved_prefix(path)
    if prefix is not None:
        raise errors.RouteReserved(
            f"route '{key}': paths under {prefix} are coldbrew's own and cannot be routed to "
            "a function; pick another prefix",
            route=key,
            reserved_prefix=prefix,
        )
    return method, path


def parse_declared_route(spec: str) -> tuple[str, str, str]:
    """A bundle's route string: ``"GET /items/{id}"`` (payload 2.0) or ``"1.0 GET /items"``."""
    spec = spec.strip()
    payload_format = "2.0"
    head, _, rest = spec.partition(" ")
    if head in PAYLOAD_FORMATS:
        payload_format, spec = head, rest
    method, path = parse_route_key(spec)
    return method, path, payload_format


class RouteTable:
    """The ``routes`` table, through the registry's engine (same database, same transactions
    discipline: every write is one short transaction)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def add(
        self,
        route: str,
        function_name: str,
        qualifier: str | None = None,
        payload_format: str = "2.0",
        stage: str = DEFAULT_STAGE,
        forward_credentials: bool = False,
    ) -> RouteRecord:
        """Mount a function on a route; CONFLICT if that method and path are already taken."""
        method, path = parse_route_key(route)
        names.check_function_name(function_name)
        if payload_format not in PAYLOAD_FORMATS:
            raise errors.ValidationError(
                f"payload_format must be one of {', '.join(PAYLOAD_FORMATS)}"
            )
        row = RouteRow(
            method=method,
            path=path,
            function_name=function_name,
            qualifier=qualifier or None,
            payload_format=payload_format,
            stage=stage or DEFAULT_STAGE,
            created_at=utcnow(),
            forward_credentials=forward_credentials,
        )
        try:
            with self.registry._write() as session:
                session.add(row)
                session.flush()
                return _record(row)
        except IntegrityError:
            raise errors.Conflict(f"route '{method} {path}' already exists", route=route) from None

    def declare(self, function_name: str, specs: list[str]) -> list[RouteRecord]:
        """Routes a bundle declares, registered on deploy: added when new, their payload
        format updated when this function already owns them; CONFLICT when another owns one."""
        parsed = [parse_declared_route(spec) for spec in specs]
        records = []
        with self.registry._write() as session:
            for method, path, payload_format in parsed:
                row = session.scalar(
                    select(RouteRow).where(RouteRow.method == method, RouteRow.path == path)
                )
                if row is None:
                    row = RouteRow(
                        method=method,
                        path=path,
                        function_name=function_name,
                        qualifier=None,
                        payload_format=payload_format,
                        stage=DEFAULT_STAGE,
                        created_at=utcnow(),
                        forward_credentials=False,
                    )
                    session.add(row)
                elif row.function_name != function_name:
                    raise errors.Conflict(
                        f"route '{method} {path}' belongs to function '{row.function_name}'",
                        route=f"{method} {path}",
                    )
                else:
                    row.payload_format = payload_format
                session.flush()
                records.append(_record(row))
        return records

    def list(self) -> list[RouteRecord]:
        with self.registry._read() as session:
            rows = session.scalars(select(RouteRow).order_by(RouteRow.id))
            return [_record(row) for row in rows]

    def delete(self, route_id: int) -> None:
        with self.registry._write() as session:
            deleted = session.execute(delete(RouteRow).where(RouteRow.id == route_id))
            if deleted.rowcount == 0:  # type: ignore[attr-defined]
                raise errors.NotFound(f"no route with id {route_id}")

    def match(self, method: str, path: str) -> tuple[RouteRecord, dict[str, str]] | None:
        """The route API Gateway would pick for a request, with its path parameters."""
        return best_match(self.list(), method, path)


def declare_routes(registry: Registry, function_name: str, specs: list[str]) -> None:
    """Deploy hook: register the routes a bundle's config declares (nothing when none)."""
    if specs:
        RouteTable(registry).declare(function_name, specs)


def match_path(template: str, path: str) -> dict[str, str] | None:
    """Path parameters when ``path`` fits ``template`` (``/items/{id}``, ``/files/{key+}``)."""
    want = [] if template == "/" else template[1:].split("/")
    got = [] if path in ("", "/") else path[1:].split("/")
    params: dict[str, str] = {}
    for i, segment in enumerate(want):
        if segment.endswith("+}"):
            rest = got[i:]
            if not rest or not rest[0]:
                return None  # a greedy parameter needs at least one segment
            params[segment[1:-2]] = "/".join(rest)
            return params
        if i >= len(got) or not got[i]:
            return None
        if segment.startswith("{"):
            params[segment[1:-1]] = got[i]
        elif segment != got[i]:
            return None
    return params if len(got) == len(want) else None


def specificity(route: RouteRecord) -> tuple[int, int, int, int]:
    """Sort key, most specific first, as API Gateway chooses: more literal segments, then
    fewer greedy ones, then more segments, then an explicit method over ANY."""
    segments = [] if route.path == "/" else route.path[1:].split("/")
    literal = sum(1 for s in segments if not s.startswith("{"))
    greedy = sum(1 for s in segments if s.endswith("+}"))
    return (literal, -greedy, len(segments), 0 if route.method == "ANY" else 1)


def best_match(
    routes: list[RouteRecord], method: str, path: str
) -> tuple[RouteRecord, dict[str, str]] | None:
    """The most specific route accepting ``method`` and ``path``, with its path parameters."""
    method = method.upper()
    found = []
    for route in routes:
        head_on_get = method == "HEAD" and route.method == "GET"
        if route.method not in (method, "ANY") and not head_on_get:
            continue
        params = match_path(route.path, path)
        if params is not None:
            found.append((specificity(route), route.method == method, route, params))
    if not found:
        return None
    found.sort(key=lambda f: (f[0], f[1]), reverse=True)
    return found[0][2], found[0][3]


def _record(row: RouteRow) -> RouteRecord:
    return RouteRecord(
        id=row.id,
        method=row.method,
        path=row.path,
        function_name=row.function_name,
        qualifier=row.qualifier,
        payload_format=row.payload_format,
        stage=row.stage,
        created_at=row.created_at,
        forward_credentials=bool(row.forward_credentials),
    )
