"""The gateway: one Starlette application for every protocol coldbrew speaks."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from coldbrew.gateway import apigateway, lambda_api, native, oip, openapi, stream, websocket
from coldbrew.gateway.auth import SecurityMiddleware
from coldbrew.gateway.errors import EXCEPTION_HANDLERS
from coldbrew.gateway.native.fastpath import InvokeFastPath
from coldbrew.gateway.policy import OPEN, Endpoint, EndpointTable
from coldbrew.jobs.batch import BatchJobs
from coldbrew.jobs.service import AsyncInvocations
from coldbrew.jobs.sources import EventSources
from coldbrew.platform import Platform
from coldbrew.settings import Settings


def endpoints() -> list[Endpoint]:
    """Every endpoint of every protocol, in routing order. To add one, add an ``Endpoint`` to
    its protocol's ``endpoints()`` (docs/ARCHITECTURE.md, "Adding an endpoint")."""
    return [
        *native.endpoints(),
        Endpoint("/openapi.json", openapi.openapi_json, "GET", OPEN),
        *apigateway.endpoints(),
        *lambda_api.endpoints(),
        *oip.endpoints(),
        *websocket.endpoints(),
        *stream.endpoints(),
        apigateway.catch_all(),  # last: it takes every path
    ]


def table() -> EndpointTable:
    return EndpointTable(endpoints())


def routes() -> list[BaseRoute]:
    """The Starlette routes of the table (for tools that read them, as ``openapi`` does)."""
    return table().routes


def create_app(
    settings: Settings, platform: Platform | None = None, freeze_startup: bool = False
) -> Starlette:
    """The gateway's ASGI app. ``freeze_startup`` (for a server process of its own, not for
    apps built inside a test process) moves what start-up built out of the collector's reach."""
    platform = platform or Platform.from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await platform.start()
        await app.state.events.start()
        await app.state.batch.start()  # batch jobs: claims, runs, resumes (jobs/batch.py)
        await app.state.sources.start()  # [[event_source]] tables (jobs/sources/)
        await websocket.start_ownership(app)  # @connections across gateways (with Redis)
        if freeze_startup:
            # Modules, the app, engines and caches live as long as the server: frozen, they
            # are not walked by every full collection (measured at 64 connections: GC time
            # per run 1.4 s -> 0.35 s, and no more ~100 ms pauses in the p99).
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await websocket.stop_ownership(app)
            await app.state.sources.stop()
            await app.state.batch.stop()
            await app.state.events.stop()
            await platform.stop()

    endpoint_table = table()
    app = Starlette(
        routes=endpoint_table.routes,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        # Security first: nothing, not even the fast path, runs before a request is let in.
        middleware=[
            Middleware(SecurityMiddleware, table=endpoint_table),
            Middleware(InvokeFastPath),
        ],
        lifespan=lifespan,
    )
    app.state.platform = platform
    app.state.events = AsyncInvocations.from_platform(platform)  # durable async (jobs/)
    app.state.batch = BatchJobs.from_platform(platform)
    app.state.sources = EventSources.from_app(platform, app.state.events, app.state.batch)
    return app
