"""The security middleware: authenticate, authorise, limit, bound and audit every request.

It is the outermost layer (before the invocation fast path), so no protocol can skip it:
native REST, the Lambda API, Open Inference v2, WebSocket handshakes, API Gateway routes and
the dashboards all pass through ``__call__``. What each endpoint needs comes from the route
table it is given (``policy.EndpointTable.classify``, the same entries as the router's);
handlers that learn a function only from the body (deploy, routes, @connections, API Gateway
routes) finish the check with :func:`require_function`.

With auth off (loopback, the default) every caller is the anonymous admin, but deadlines and
the audit log still apply. Rate limits and quotas are not checked here: they are a property of
an invocation, so the data plane applies them (``coldbrew.dataplane.limits``), once per
invocation on every protocol, WebSocket messages included.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coldbrew import errors
from coldbrew.core.network import client_ip, in_any
from coldbrew.gateway.errors import AWS_ERROR_TYPES
from coldbrew.gateway.policy import EndpointTable, Rule
from coldbrew.security import audit, keys
from coldbrew.security.errors import DeadlineExceeded, Forbidden, Unauthorized
from coldbrew.security.keyring import principal_of
from coldbrew.security.principal import ANONYMOUS, Principal
from coldbrew.security.service import Security

log = logging.getLogger("coldbrew.auth")
PRINCIPAL = "coldbrew.principal"
AUDIT = "coldbrew.audit"
MAX_TOKEN_CHARS = 8192
DEADLINE_HEADER = b"x-coldbrew-deadline-ms"


def principal_of_scope(scope: Scope) -> Principal:
    return scope.get(PRINCIPAL) or ANONYMOUS


def current(connection: HTTPConnection) -> Principal:
    return principal_of_scope(connection.scope)


def require_function(connection: HTTPConnection, function: str, permission: str) -> None:
    """Raise NotFound for a function outside the caller's scope (as if it did not exist) and
    Forbidden for one inside it that the caller's role may not act on this way."""
    principal = current(connection)
    if not principal.sees(function):
        raise errors.NotFound(f"function '{function}' not found", function=function)
    if not principal.can(permission):
        raise Forbidden(f"role {principal.role!r} may not {permission} {function!r}")


def note_audit(connection: HTTPConnection, **details: Any) -> None:
    """Let a handler add what only it knows (the deployed function, version...) to the event."""
    connection.scope.setdefault(AUDIT, {}).update(details)


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, table: EndpointTable) -> None:
        self.app = app
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        platform = scope["app"].state.platform
        security: Security = platform.security
        method = "WEBSOCKET" if scope["type"] == "websocket" else scope["method"]
        rule = self.table.classify(method, scope["path"])
        ip = client_ip(scope, security.trusted_proxies)
        recorder = _Recorder(send) if rule.audit else None
        send = recorder.send if recorder else send
        principal: Principal | None = None
        try:
            principal = await self._authorize(security, rule, scope, ip)
            scope[PRINCIPAL] = principal
            deadline_s = _deadline(scope, security.max_request_s)
        except errors.ColdbrewError as exc:
            await _deny(scope, send, exc)
            if recorder:
                self._audit(security, rule, scope, principal, ip, recorder)
            return
        try:
            await self._call(scope, receive, send, deadline_s)
        finally:
            if recorder:
                self._audit(security, rule, scope, principal, ip, recorder)

    async def _call(
        self, scope: Scope, receive: Receive, send: Send, deadline: float | None
    ) -> None:
        if deadline is None:
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            async with asyncio.timeout(deadline):
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if not started:
                exc = DeadlineExceeded(f"the request's deadline of {deadline * 1000:.0f} ms passed")
                await _deny(scope, send, exc)

    # --- authentication and authorisation -------------------------------------------------------
    async def _authorize(
        self, security: Security, rule: Rule, scope: Scope, ip: str | None
    ) -> Principal:
        if rule.kind == "open" or not security.enabled:
            return ANONYMOUS
        principal = await _authenticate(security, scope)
        if principal.ip_allowlist and not in_any(ip, principal.ip_allowlist):
            raise Forbidden(f"this key may not be used from {ip}")
        if rule.kind == "function" and rule.function and not principal.sees(rule.function):
            raise errors.NotFound(f"function '{rule.function}' not found", function=rule.function)
        if not principal.can(rule.permission):
            raise Forbidden(f"role {principal.role!r} may not {rule.permission} here")
        if rule.kind == "global" and not principal.is_global:
            raise Forbidden("this view covers every function; it needs a key scoped to '*'")
        return principal

    def _audit(
        self,
        security: Security,
        rule: Rule,
        scope: Scope,
        principal: Principal | None,
        ip: str | None,
        recorder: _Recorder,
    ) -> None:
        details = dict(scope.get(AUDIT, {}))
        target = str(details.pop("target", None) or rule.function or scope["path"])
        details.setdefault("method", scope.get("method"))
        details.setdefault("path", scope["path"])
        actor = principal.actor if principal else "unauthenticated"
        row = audit.event(actor, rule.audit or "", target, details, ip, recorder.outcome())
        security.audit.record(row)


async def _authenticate(security: Security, scope: Scope) -> Principal:
    token = _credential(scope)
    if token is None:
        raise Unauthorized("credentials required: Authorization: Bearer <key or token>")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("credentials too long")
    if keys.looks_like_key(token):
        return await _key_principal(security, token)
    if token.count(".") == 2:
        return security.jwt.verify(token)
    raise Unauthorized("malformed credentials")


async def _key_principal(security: Security, token: str) -> Principal:
    parsed = keys.parse(token)
    if parsed is None:
        raise Unauthorized("invalid or revoked API key")
    key_id, secret = parsed
    hit, row = security.keyring.cached(key_id)
    if not hit:
        row = await asyncio.to_thread(security.keyring.lookup, key_id)
    if row is None or row["revoked_at"] is not None:
        raise Unauthorized("invalid or revoked API key")
    if not keys.secret_matches(secret, row["secret_sha256"]):
        raise Unauthorized("invalid or revoked API key")
    if security.keyring.touch_due(key_id):
        asyncio.get_running_loop().run_in_executor(None, security.keyring.touch, key_id)
    return principal_of(row)


def _credential(scope: Scope) -> str | None:
    """Bearer token, X-Api-Key, the access key id of a SigV4 request (the Lambda and
    @connections APIs: the whole API key is the access key id), or ``?token=`` on a WebSocket."""
    headers = {k: v for k, v in scope.get("headers", [])}
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme == "AWS4-HMAC-SHA256":
        found = value.split("Credential=", 1)
        if len(found) == 2:
            return found[1].split("/", 1)[0].strip() or None
    api_key = headers.get(b"x-api-key")
    if api_key:
        return api_key.decode("latin-1").strip()
    if scope["type"] == "websocket":
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0]
    return None


def _deadline(scope: Scope, cap_s: float) -> float | None:
    if scope["type"] != "http":
        return None
    for name, value in scope.get("headers", []):
        if name == DEADLINE_HEADER:
            text = value.decode("latin-1").strip()
            # isascii: '²'.isdigit() is true, int('²') fails; past 18 digits (30 million
            # years) int() is spared the work and the cap applies all the same.
            digits = text.isascii() and text.isdigit()
            ms = (int(text) if len(text) <= 18 else 10**18) if digits else 0
            if ms <= 0:
                raise errors.ValidationError(
                    "X-Coldbrew-Deadline-Ms must be a positive number of milliseconds"
                )
            return min(ms / 1000, cap_s)
    return None


async def _deny(scope: Scope, send: Send, exc: errors.ColdbrewError) -> None:
    """The JSON error, on HTTP; on a WebSocket handshake the same as an HTTP response when the
    server supports it, else a close before accept (the client sees 403)."""
    status = exc.status
    body: dict[str, Any] = {"error": exc.to_dict(), "message": exc.message}
    headers = [(b"content-type", b"application/json")]
    if isinstance(exc, errors.Throttled):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="coldbrew"'))
    if scope["path"].startswith(("/2015-03-31/", "/ws/@connections")):
        error_type = AWS_ERROR_TYPES.get(exc.code, "ServiceException")
        headers.append((b"x-amzn-errortype", error_type.encode()))
    payload = orjson.dumps(body)
    if scope["type"] == "websocket":
        if "websocket.http.response" in scope.get("extensions", {}):
            start = {"type": "websocket.http.response.start", "status": status, "headers": headers}
            await send(start)
            await send({"type": "websocket.http.response.body", "body": payload})
        else:
            await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class _Recorder:
    """Remembers the status and the start of the body, to name an audited action's outcome."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0
        self.body = b""

    async def send(self, message: Message) -> None:
        if message["type"] in ("http.response.start", "websocket.http.response.start"):
            self.status = int(message.get("status", 0))
        elif message["type"] == "http.response.body" and len(self.body) < 4096:
            self.body += message.get("body", b"")[:4096]
        await self._send(message)

    def outcome(self) -> str:
        if 0 < self.status < 400:
            return "ok"
        try:
            return str(orjson.loads(self.body)["error"]["code"])
        except Exception:
            return f"HTTP_{self.status}"
