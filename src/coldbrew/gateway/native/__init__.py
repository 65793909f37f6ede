"""coldbrew's own REST API (``/healthz``, ``/v1/...``): functions, the invocation fast path,
async events, schedules and batch jobs, delivery (rollouts, shadows), data (predictions, feedback,
quality), observability, keys, secrets, nodes and garbage collection.

``endpoints()`` is this protocol's part of the gateway's route table (``gateway/policy.py``).
"""

from __future__ import annotations

from coldbrew.gateway.native import (
    async_api,
    collect,
    data,
    delivery,
    functions,
    info,
    invoke,
    jobs,
    keys,
    nodes,
    observe,
    secrets,
)
from coldbrew.gateway.policy import GLOBAL_READ, OPEN, Endpoint, admin, anyone, function


def endpoints() -> list[Endpoint]:
    fn = "/v1/functions/{name}"
    return [
        Endpoint("/healthz", info.health, "GET", OPEN),
        Endpoint("/v1/functions", functions.list_functions, "GET", anyone("read")),
        Endpoint("/v1/functions", functions.deploy, "POST", anyone("deploy", "function.deploy")),
        Endpoint("/v1/info", info.info, "GET", anyone("read")),
        Endpoint("/v1/nodes", nodes.list_nodes, "GET", GLOBAL_READ),
        Endpoint(fn, functions.get_function, "GET", function("read")),
        Endpoint(fn, functions.delete_function, "DELETE", function("deploy", "function.delete")),
        Endpoint(
            f"{fn}/restart",
            functions.restart_function,
            "POST",
            function("deploy", "function.restart"),
        ),
        Endpoint(f"{fn}/versions", functions.list_versions, "GET", function("read")),
        Endpoint(f"{fn}/aliases", functions.list_aliases, "GET", function("read")),
        Endpoint(
            f"{fn}/aliases/{{alias}}", functions.put_alias, "PUT", function("deploy", "alias.set")
        ),
        Endpoint(
            f"{fn}/aliases/{{alias}}",
            functions.delete_alias,
            "DELETE",
            function("deploy", "alias.delete"),
        ),
        Endpoint(f"{fn}/invoke", invoke.invoke, "POST", function("invoke")),
        Endpoint("/v1/gc", collect.collect_garbage, "POST", admin("store.gc")),
        *keys.endpoints(),
        *secrets.endpoints(),
        *data.endpoints(),
        *async_api.endpoints(),
        *jobs.endpoints(),
        *delivery.endpoints(),
        *observe.endpoints(),
    ]


__all__ = ["endpoints"]
