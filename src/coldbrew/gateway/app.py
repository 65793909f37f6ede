"""The gateway: one Starlette application for every protocol coldbrew speaks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coldbrew import __version__
from coldbrew.gateway import functions, invoke
from coldbrew.gateway.errors import EXCEPTION_HANDLERS, json_response
from coldbrew.platform import Platform
from coldbrew.settings import Settings


async def health(request: Request) -> Response:
    return json_response(200, {"status": "ok", "version": __version__})


def routes() -> list[Route]:
    return [
        Route("/healthz", health, methods=["GET"]),
        Route("/v1/functions", functions.list_functions, methods=["GET"]),
        Route("/v1/functions", functions.deploy, methods=["POST"]),
        Route("/v1/functions/{name}", functions.get_function, methods=["GET"]),
        Route("/v1/functions/{name}", functions.delete_function, methods=["DELETE"]),
        Route("/v1/functions/{name}/versions", functions.list_versions, methods=["GET"]),
        Route("/v1/functions/{name}/aliases", functions.list_aliases, methods=["GET"]),
        Route("/v1/functions/{name}/aliases/{alias}", functions.put_alias, methods=["PUT"]),
        Route("/v1/functions/{name}/aliases/{alias}", functions.delete_alias, methods=["DELETE"]),
        Route("/v1/functions/{name}/invoke", invoke.invoke, methods=["POST"]),
    ]


def create_app(settings: Settings, platform: Platform | None = None) -> Starlette:
    platform = platform or Platform.from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await platform.start()
        try:
            yield
        finally:
            await platform.stop()

    app = Starlette(
        routes=routes(),
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.platform = platform
    return app
