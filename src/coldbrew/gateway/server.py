"""Running the gateway under uvicorn."""

from __future__ import annotations

import uvicorn

from coldbrew.gateway.app import create_app
from coldbrew.settings import Settings


def configure_logging(level: str, fmt: str = "text") -> None:
    from coldbrew.observe.logs import configure

    configure(level, fmt)


def build_server(settings: Settings) -> uvicorn.Server:
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(config)


def run(settings: Settings) -> None:
    build_server(settings).run()
