"""``coldbrew keys create|ls|revoke|rotate`` and ``coldbrew audit``.

Keys are managed over the API by an admin (``COLDBREW_API_KEY``). The first admin key can be
made offline with ``coldbrew keys create --role admin --local``, which writes to the registry
named by ``COLDBREW_DATABASE_URL``/``COLDBREW_HOME`` directly (and audits it as ``local``).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from coldbrew.cli.common import JsonOption, UrlOption, connect, fail
from coldbrew.settings import Settings

keys_app = typer.Typer(no_args_is_help=True, help="Create, list, revoke and rotate API keys.")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(text: str | None) -> float | None:
    """``10/s``, ``600/m``, ``1000/h`` -> requests per second."""
    if not text:
        return None
    found = _RATE.match(text)
    if not found:
        raise typer.BadParameter("rate must look like 10/s, 600/m or 1000/h")
    return float(found.group(1)) / _PER[found.group(2)]


def create_local_key(settings: Settings, spec_json: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Create a key straight in the registry (no server needed), migrating it first."""
    from coldbrew.registry import Registry
    from coldbrew.registry.security import SecurityStore
    from coldbrew.security import audit
    from coldbrew.security.keyring import Keyring, KeySpec

    registry = Registry(settings.registry_url())
    try:
        registry.migrate()
    finally:
        registry.close()
    store = SecurityStore(settings.registry_url())
    try:
        row, token = Keyring(store).create(KeySpec.from_json(spec_json))
        event = audit.event("local", "key.create", f"key:{row['id']}", {"role": row["role"]})
        store.add_audit([event])
    finally:
        store.close()
    return row, token


@keys_app.command("create")
def create(
    role: Annotated[str, typer.Option(help="admin, deployer, invoker or viewer.")],
    functions: Annotated[str, typer.Option(help="Comma-separated globs, e.g. 'digits,wqi'.")] = "*",
    name: Annotated[str, typer.Option(help="A label for people.")] = "",
    rate: Annotated[str | None, typer.Option(help="Rate limit, e.g. 10/s.")] = None,
    burst: Annotated[int | None, typer.Option(help="Bucket size of --rate.")] = None,
    daily: Annotated[int | None, typer.Option(help="Invocations per UTC day.")] = None,
    monthly: Annotated[int | None, typer.Option(help="Invocations per UTC month.")] = None,
    ip: Annotated[list[str] | None, typer.Option(help="Allowed CIDR (repeatable).")] = None,
    local: Annotated[bool, typer.Option(help="Write to the registry directly.")] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key; its secret is printed once and cannot be shown again."""
    from coldbrew import errors

    spec = {
        "role": role,
        "functions": functions,
        "name": name,
        "rate_per_s": parse_rate(rate),
        "burst": burst,
        "daily_quota": daily,
        "monthly_quota": monthly,
        "ip_allowlist": ip or [],
    }
    if local:
        try:
            row, token = create_local_key(Settings(), spec)
        except errors.ColdbrewError as exc:
            raise fail(f"error: {exc.message}") from None
        answer = {**row, "key": token}
    else:
        with connect(url) as client:
            answer = client.request_json("POST", "/v1/keys", json=spec)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    Console().print(
        f"created key {answer['id']} ({answer['role']}, functions {','.join(answer['functions'])})"
        f"\n{answer['key']}\nStore it now: it is not shown again.",
        markup=False,
    )


@keys_app.command("ls")
def list_keys(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List keys (never their secrets)."""

    with connect(url) as client:
        keys = client.request_json("GET", "/v1/keys")["keys"]
    if as_json:
        typer.echo(json.dumps(keys, indent=2))
        return
    table = Table("id", "name", "role", "functions", "limits", "created", "last used", "revoked")
    for k in keys:
        limits = ", ".join(
            f"{label} {k[field]}"
            for label, field in (
                ("rate/s", "rate_per_s"),
                ("burst", "burst"),
                ("daily", "daily_quota"),
                ("monthly", "monthly_quota"),
            )
            if k.get(field) is not None
        )
        table.add_row(
            k["id"],
            k["name"],
            k["role"],
            ",".join(k["functions"]),
            limits or "-",
            str(k["created_at"])[:19],
            str(k.get("last_used_at") or "-")[:19],
            str(k.get("revoked_at") or "-")[:19],
        )
    Console().print(table)


@keys_app.command("revoke")
def revoke(key_id: str, url: UrlOption = None) -> None:
    """Revoke a key: it stops working within a second on every gateway."""

    with connect(url) as client:
        client.request_json("DELETE", f"/v1/keys/{key_id}")
    typer.echo(f"revoked key {key_id}")


@keys_app.command("rotate")
def rotate(key_id: str, url: UrlOption = None) -> None:
    """A new secret for the key (same id, role, scopes and limits); the old one stops working."""

    with connect(url) as client:
        answer = client.request_json("POST", f"/v1/keys/{key_id}/rotate")
    typer.echo(f"rotated key {key_id}\n{answer['key']}\nStore it now: it is not shown again.")


def audit(
    since: Annotated[str, typer.Option(help="24h, 30m, 7d or ISO 8601.")] = "24h",
    actor: Annotated[str | None, typer.Option(help="e.g. key:0123456789ab")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. function.deploy, key.create")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Administrative actions: who, when, what, from where, and how it ended."""

    params = {k: v for k, v in {"since": since, "actor": actor, "action": action}.items() if v}
    with connect(url) as client:
        events = client.request_json("GET", "/v1/audit", params=params)["events"]
    if as_json:
        typer.echo(json.dumps(events, indent=2))
        return
    table = Table("when", "actor", "action", "target", "from", "outcome")
    for e in events:
        table.add_row(
            e["at"][:19], e["actor"], e["action"], e["target"], e["source_ip"] or "-", e["outcome"]
        )
    Console().print(table)
