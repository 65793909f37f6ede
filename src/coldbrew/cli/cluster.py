"""``coldbrew serve --workers N`` (the supervisor's side) and ``coldbrew nodes``."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from rich.table import Table

from coldbrew.cli import render
from coldbrew.cli.common import JsonOption, UrlOption, connect, fail, out
from coldbrew.settings import Settings

log = logging.getLogger("coldbrew.supervisor")
NO_REDIS = (
    "--workers {n} needs COLDBREW_REDIS_URL (e.g. redis://127.0.0.1:6379/0): the workers share "
    "rate limits, quotas, max_instances and WebSocket connections through it. Start Redis, or "
    "run one worker (docs/CLUSTER.md)."
)


def serve_workers(settings: Settings, listener: socket.socket, workers: int) -> int:
    """Run ``workers`` gateway processes on ``listener`` until Ctrl-C; the exit code."""
    from coldbrew.cluster.supervisor import Supervisor
    from coldbrew.gateway.server import configure_logging
    from coldbrew.registry import Registry

    if not settings.redis_url:
        listener.close()
        raise fail(NO_REDIS.format(n=workers), 2)
    configure_logging(settings.log_level, settings.log_format)
    registry = Registry(settings.registry_url())
    try:
        registry.migrate()  # once, here: N workers migrating one SQLite file at once would race
    finally:
        registry.close()
    _bootstrap_key(settings)  # once too, so that the workers can start together
    environment = {
        "COLDBREW_HOME": str(settings.home),
        "COLDBREW_HOST": settings.host,
        "COLDBREW_PORT": str(settings.port),
        "COLDBREW_WORKERS": str(workers),
    }
    supervisor = Supervisor(
        workers,
        listener,
        settings.run_dir / "workers",
        {**os.environ, **environment},
        tls=settings.tls_cert is not None,
    )
    return supervisor.run()


def _bootstrap_key(settings: Settings) -> None:
    from coldbrew.security.service import Security

    security = Security.from_settings(settings)
    try:
        key = security.bootstrap_admin_key()
    finally:
        security.store.close()
    if key:
        log.warning("auth is on and no API key existed: bootstrap admin key (shown once): %s", key)


def nodes(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List the nodes of this coldbrew and their gateways (pid, uptime, instances, templates)."""
    with connect(url) as client:
        answer: dict[str, Any] = client.request_json("GET", "/v1/nodes")
    if as_json:
        render.print_json(out(), answer)
        return
    table = Table("node", "gateway", "worker", "pid", "uptime", "instances", "templates")
    for node in answer["nodes"]:
        for gateway in node["gateways"]:
            worker = gateway.get("worker")
            table.add_row(
                node["node"],
                gateway["id"] + (" (this)" if gateway["id"] == answer.get("gateway") else ""),
                "-" if worker is None else str(worker),
                str(gateway["pid"]),
                f"{gateway['uptime_s']:.0f} s",
                str(gateway["instances"]),
                str(gateway["templates"]),
            )
    out().print(table)
    if answer.get("ray"):  # COLDBREW_BACKEND=ray: the Ray nodes and their agents
        out().print(_ray_table(answer["ray"]))


def _ray_table(ray_nodes: list[dict[str, Any]]) -> Table:
    table = Table("ray node", "address", "alive", "resources", "agent", "instances", "templates")
    for node in ray_nodes:
        agent = node.get("agent") or {}
        resources = {
            k: v for k, v in node["resources"].items() if not k.startswith(("node:", "object_"))
        }
        shown = ", ".join(
            f"{k}={v / 2**30:.1f}G" if k == "memory" else f"{k}={v:g}" for k, v in resources.items()
        )
        table.add_row(
            node["node_id"][:8] + (" (gateway)" if node.get("gateway_here") else ""),
            node["address"],
            "yes" if node["alive"] else "no",
            shown,
            str(agent.get("agent_pid", "-")),
            str(len(agent.get("instances", []))),
            str(len(agent.get("templates", {}))),
        )
    return table
