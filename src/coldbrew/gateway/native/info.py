"""``GET /healthz`` (the probe) and ``GET /v1/info``: what this coldbrew is and how it holds
user code.

Says, for operators and for the test suite, whether functions are isolated from each other and
from the platform (and why not, when they are not), which backend runs instances and how their
memory is enforced. Nothing secret: any authenticated caller may read it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from coldbrew import __version__
from coldbrew.gateway.errors import json_response
from coldbrew.platform import Platform


async def health(request: Request) -> Response:
    return json_response(200, {"status": "ok", "version": __version__})


async def info(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    return json_response(200, {"version": __version__, **platform.backend.info()})
