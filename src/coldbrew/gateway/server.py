"""Running the gateway under uvicorn."""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from coldbrew import errors
from coldbrew.gateway.app import create_app
from coldbrew.gateway.http_protocol import CoalescingHttpToolsProtocol, HttpLimits
from coldbrew.settings import Settings


def configure_logging(level: str, fmt: str = "text") -> None:
    from coldbrew.observe.logs import configure

    configure(level, fmt)


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's ssl options when a certificate and key are configured (HTTPS and WSS)."""
    if settings.tls_cert is None and settings.tls_key is None:
        return {}
    if settings.tls_cert is None or settings.tls_key is None:
        raise errors.ValidationError("TLS needs both COLDBREW_TLS_CERT and COLDBREW_TLS_KEY")
    return {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}


def http_limits(settings: Settings) -> HttpLimits:
    """Bounds on slow and oversized requests (gateway/http_protocol.py)."""
    return HttpLimits(
        header_timeout_s=settings.header_timeout_s,
        body_timeout_s=settings.body_timeout_s,
        max_header_count=settings.max_header_count,
        max_header_bytes=settings.max_header_bytes,
    )


def build_server(settings: Settings) -> uvicorn.Server:
    configure_logging(settings.log_level, settings.log_format)
    access = (
        settings.access_log if settings.access_log is not None else (settings.log_format == "json")
    )
    if not access:
        # Below INFO's reach: access_log() returns before formatting anything.
        logging.getLogger("coldbrew.access").setLevel(logging.WARNING)
    app = create_app(settings, freeze_startup=True)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        # X-Forwarded-For is judged by the security middleware (COLDBREW_TRUSTED_PROXIES);
        # uvicorn's own handling would believe any loopback peer.
        proxy_headers=False,
        http=CoalescingHttpToolsProtocol.with_limits(http_limits(settings)),
        **tls_options(settings),
    )
    return uvicorn.Server(config)


def run(settings: Settings) -> None:
    build_server(settings).run()
