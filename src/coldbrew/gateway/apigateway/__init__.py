"""API Gateway proxy integration: functions mounted on HTTP routes receive REST API (payload
1.0) or HTTP API (payload 2.0) events, and their proxy responses become HTTP responses.

``events`` builds the events, ``responses`` reads the handler's answer, ``routing`` finds the
route of a request, ``handler`` serves the catch-all, ``admin`` is ``/v1/routes``.
``endpoints()`` is ``/v1/routes``; ``catch_all()`` must be the table's last entry."""

from __future__ import annotations

from coldbrew.gateway.apigateway import admin, handler
from coldbrew.gateway.policy import CatchAllRule, Endpoint, anyone


def endpoints() -> list[Endpoint]:
    # Any caller with the permission: the handlers check the function named in the body.
    return [
        Endpoint("/v1/routes", admin.list_routes, "GET", anyone("read")),
        Endpoint("/v1/routes", admin.add_route, "POST", anyone("deploy", "route.add")),
        Endpoint(
            "/v1/routes/{route_id}", admin.delete_route, "DELETE", anyone("deploy", "route.delete")
        ),
    ]


def catch_all() -> Endpoint:
    """API Gateway routes take whatever no endpoint before this one did (else NOT_FOUND)."""
    return Endpoint("/{path:path}", handler.serve, " ".join(handler.METHODS), CatchAllRule())


__all__ = ["catch_all", "endpoints"]
