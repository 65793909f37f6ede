"""A small synchronous HTTP client for the coldbrew REST API, used by every CLI command.

It turns the two ways a call can fail into two exceptions the commands map to exit codes:
``ServerUnreachable`` (nothing answered: exit 2) and ``ApiError`` (the server answered with its
``{"error": {"code", "message"}}`` body: exit 1). Tests can hand it any ``httpx`` transport.

    ClientError
     ├── ServerUnreachable
     └── ApiError
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import httpx

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
"""Deploys train nothing but do load the model and run its validation sample server-side, and
a cold invoke may wait in a queue; a minute covers both while a dead host fails in seconds."""


class ClientError(Exception):
    """Base of the errors a CLI command reports in one line."""


class ServerUnreachable(ClientError):
    """No server answered at the URL (refused, DNS failure, connect timeout)."""

    def __init__(self, url: str, reason: str = "") -> None:
        super().__init__(
            f"cannot reach the coldbrew server at {url}: is it running? (coldbrew serve)"
        )
        self.url = url
        self.reason = reason


class ApiError(ClientError):
    """The server refused the request with a stable error code."""

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"error {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


@dataclass
class InvokeResult:
    """A raw invocation response: the CLI prints the body as-is, so it is not parsed here."""

    status: int
    content: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def error_from_response(response: httpx.Response) -> ApiError:
    """Read the platform's error body; fall back to the HTTP reason for anything else (e.g. a
    proxy in front of the server answering with HTML)."""
    try:
        body = response.json()
        error = body["error"]
        return ApiError(response.status_code, str(error["code"]), str(error["message"]), body)
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:200] or response.reason_phrase
        return ApiError(response.status_code, f"HTTP_{response.status_code}", text)


class _ProgressReader:
    """A file wrapper that reports how many bytes httpx has read, to drive a progress bar."""

    def __init__(self, data: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._data = data
        self._on_read = on_read

    def seek(self, offset: int, whence: int = 0) -> int:
        # httpx seeks to measure the length, so the upload gets a Content-Length header
        # (the server refuses oversized bundles from it before reading them).
        return self._data.seek(offset, whence)

    def tell(self) -> int:
        return self._data.tell()

    def read(self, size: int = -1) -> bytes:
        chunk = self._data.read(size)
        self._on_read(len(chunk))
        return chunk


class ColdbrewClient:
    """One method per REST endpoint; returns decoded JSON or raises a ``ClientError``."""

    def __init__(
        self,
        url: str,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        api_key: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        # COLDBREW_API_KEY (an API key or a JWT) goes as a bearer token on every request.
        api_key = api_key or os.environ.get("COLDBREW_API_KEY") or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.url, transport=transport, timeout=timeout, headers=headers
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ColdbrewClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServerUnreachable(self.url, str(exc)) from None
        except httpx.RemoteProtocolError as exc:
            # Something answered that does not speak HTTP, or the server died mid-request.
            raise ServerUnreachable(self.url, str(exc)) from None

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if response.is_error:
            raise error_from_response(response)
        return response.json()

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any endpoint, decoded (keys, audit and other admin endpoints)."""
        return self._json(method, path, **kwargs)

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def deploy(
        self,
        name: str,
        filename: str,
        data: IO[bytes],
        description: str | None = None,
        on_progress: Callable[[int], None] | None = None,
        trusted: bool = False,
    ) -> dict[str, Any]:
        """Upload ``data`` as multipart; the ``created`` flag of the answer tells new from
        unchanged (201 vs 200). ``trusted`` allows a pickle-based model (docs/SECURITY.md)."""
        fields = {"name": name}
        if trusted:
            fields["trusted"] = "true"
        if description:
            fields["description"] = description
        stream: Any = _ProgressReader(data, on_progress) if on_progress else data
        files = {"file": (filename, stream, "application/octet-stream")}
        return self._json("POST", "/v1/functions", data=fields, files=files)

    def list_functions(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/functions")["functions"]

    def get_function(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/functions/{name}")

    def delete_function(self, name: str) -> dict[str, Any]:
        return self._json("DELETE", f"/v1/functions/{name}")

    def list_versions(self, name: str) -> list[dict[str, Any]]:
        return self._json("GET", f"/v1/functions/{name}/versions")["versions"]

    def list_aliases(self, name: str) -> list[dict[str, Any]]:
        return self._json("GET", f"/v1/functions/{name}/aliases")["aliases"]

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        weights: dict[str, float] | None = None,
        sticky: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"version": version}
        if weights:
            body["weights"] = weights
        if sticky:
            body["sticky"] = sticky
        return self._json("PUT", f"/v1/functions/{name}/aliases/{alias}", json=body)

    def delete_alias(self, name: str, alias: str) -> dict[str, Any]:
        return self._json("DELETE", f"/v1/functions/{name}/aliases/{alias}")

    def invoke(
        self,
        target: str,
        payload: bytes,
        run_async: bool = False,
        idempotency_key: str | None = None,
    ) -> InvokeResult:
        """Invoke ``name`` or ``name:qualifier``; errors are returned, not raised, because the
        caller prints the body and headers of failed invocations too. ``run_async`` queues it
        (202 and ``{"request_id"}``, docs/ASYNC.md)."""
        headers = {"content-type": "application/json"}
        if idempotency_key:
            headers["x-coldbrew-idempotency-key"] = idempotency_key
        response = self._send(
            "POST",
            f"/v1/functions/{target}/invoke" + ("?async=1" if run_async else ""),
            content=payload,
            headers=headers,
        )
        return InvokeResult(response.status_code, response.content, dict(response.headers))
