"""``GET /v1/nodes``: the machines of this coldbrew and the gateways on each.

Without Redis it is this gateway alone; with ``COLDBREW_REDIS_URL`` every gateway that shares
the registry writes a heartbeat (cluster/members.py) and they all appear, grouped by node, with
pid, uptime, instances and templates. A Ray backend adds its node agents here.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from coldbrew.cluster.members import by_node
from coldbrew.gateway.errors import json_response
from coldbrew.platform import Platform


async def list_nodes(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    assert platform.cluster is not None  # built by Platform.__post_init__
    gateways = await platform.cluster.members.gateways()
    body = {
        "gateway": platform.cluster.identity.id,
        "shared": platform.cluster.redis is not None,
        "nodes": by_node(gateways),
    }
    describe_ray = getattr(platform.backend, "describe_nodes", None)
    if describe_ray is not None:  # COLDBREW_BACKEND=ray: each Ray node and its agent
        body["ray"] = await describe_ray()
    return json_response(200, body)
