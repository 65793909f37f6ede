"""The security middleware: authenticate, authorise, limit, bound and audit every request.

It is the outermost layer (before the invocation fast path), so no protocol can skip it:
native REST, the Lambda API, Open Inference v2, WebSocket handshakes, API Gateway routes and
the dashboards all pass through ``__call__``. What each endpoint needs comes from
``policy.classify``; handlers that learn a function only from the body (deploy, routes,
@connections, API Gateway routes) finish the check with :func:`require_function`.

With auth off (loopback, the default) every caller is the anonymous admin, but function rate
limits, deadlines and the audit log still apply.
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
from coldbrew.gateway.errors import STATUS_BY_CODE
from coldbrew.gateway.policy import Rule, classify
from coldbrew.security import audit, keys
from coldbrew.security.errors import DeadlineExceeded, Forbidden, Unauthorized
from coldbrew.security.keyring import principal_of
from coldbrew.security.limits import Decision
from coldbrew.security.network import client_ip, in_any
from coldbrew.security.principal import ANONYMOUS, CALLER, Principal
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
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        platform = scope["app"].state.platform
        security: Security = platform.security
        method = "WEBSOCKET" if scope["type"] == "websocket" else scope["method"]
        rule = classify(method, scope["path"])
        ip = client_ip(scope, security.trusted_proxies)
        recorder = _Recorder(send) if rule.audit else None
        send = recorder.send if recorder else send
        principal: Principal | None = None
        try:
            principal = await self._authorize(security, rule, scope, ip)
            scope[PRINCIPAL] = principal
            deadline_s = _deadline(scope, security.max_request_s)
            decision = await self._limit(platform, security, rule, principal)
        except errors.ColdbrewError as exc:
            await _deny(scope, send, exc, getattr(exc, "decision", None))
            if recorder:
                self._audit(security, rule, scope, principal, ip, recorder)
            return
        if decision is not None:
            send = _with_limit_headers(send, decision)
        token = CALLER.set(principal.caller)
        try:
            await self._call(scope, receive, send, deadline_s)
        finally:
            CALLER.reset(token)
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
                await _deny(scope, send, exc, None)

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

    async def _limit(
        self, platform: Any, security: Security, rule: Rule, principal: Principal
    ) -> Decision | None:
        if not rule.limited:
            return None
        rate = burst = None
        if rule.function:
            try:
                version = await platform.scheduler.resolve(rule.function, None)
                rate, burst = version.config.rate_limit, version.config.burst
            except errors.ColdbrewError:
                pass  # the handler answers for a missing function
        if not rate and not principal.limits.any():
            return None
        decision = await security.limiter.check(
            principal.caller, principal.limits, rule.function, rate, burst
        )
        if decision is not None and not decision.allowed:
            raise _refusal(decision)
        return decision

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
            if not text.isdigit() or int(text) <= 0:
                raise errors.ValidationError(
                    "X-Coldbrew-Deadline-Ms must be a positive number of milliseconds"
                )
            return min(int(text) / 1000, cap_s)
    return None


def _refusal(decision: Decision) -> errors.Throttled:
    from coldbrew.security.errors import QuotaExceeded, RateLimited

    cls = QuotaExceeded if decision.code == "QUOTA_EXCEEDED" else RateLimited
    what = "quota" if cls is QuotaExceeded else "rate limit"
    exc = cls(f"{what} exceeded; retry in {decision.retry_after_s} s", decision.retry_after_s)
    exc.decision = decision  # type: ignore[attr-defined]
    return exc


def limit_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    return [
        (b"ratelimit-limit", str(decision.limit).encode()),
        (b"ratelimit-remaining", str(decision.remaining).encode()),
        (b"ratelimit-reset", str(decision.reset_s).encode()),
    ]


def _with_limit_headers(send: Send, decision: Decision) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [*message.get("headers", []), *limit_headers(decision)],
            }
        await send(message)

    return wrapped


async def _deny(
    scope: Scope, send: Send, exc: errors.ColdbrewError, decision: Decision | None
) -> None:
    """The JSON error, on HTTP; on a WebSocket handshake the same as an HTTP response when the
    server supports it, else a close before accept (the client sees 403)."""
    status = STATUS_BY_CODE.get(exc.code, 500)
    body: dict[str, Any] = {"error": exc.to_dict(), "message": exc.message}
    headers = [(b"content-type", b"application/json")]
    if isinstance(exc, errors.Throttled):
        headers.append((b"retry-after", str(exc.retry_after_s).encode()))
    if decision is not None:
        headers.extend(limit_headers(decision))
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="coldbrew"'))
    if scope["path"].startswith(("/2015-03-31/", "/ws/@connections")):
        headers.append((b"x-amzn-errortype", _AWS_TYPES.get(status, "ServiceException").encode()))
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


_AWS_TYPES = {
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "TooManyRequestsException",
    400: "InvalidRequestContentException",
    504: "ServiceException",
}


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
