"""The client's address and per-key IP allowlists.

The address is the TCP peer from the ASGI scope. ``X-Forwarded-For`` is believed only when the
peer is one of ``COLDBREW_TRUSTED_PROXIES``; then the rightmost address not itself a trusted
proxy is the client (the leftmost entries are whatever the client chose to send).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=1024)
def network(cidr: str) -> Network:
    return ipaddress.ip_network(cidr.strip(), strict=False)


def in_any(address: str | None, cidrs: Iterable[str]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == network(c).version and ip in network(c) for c in cidrs)


def client_ip(scope: dict[str, Any], trusted_proxies: list[str]) -> str | None:
    peer = (scope.get("client") or (None, None))[0]
    if not trusted_proxies or not in_any(peer, trusted_proxies):
        return peer
    forwarded = b""
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            forwarded = value
    hops = [h.strip() for h in forwarded.decode("latin-1").split(",") if h.strip()]
    for hop in reversed(hops):
        if not in_any(hop, trusted_proxies):
            return hop if _valid(hop) else peer
    return peer


def _valid(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_cidrs(cidrs: Iterable[str]) -> list[str]:
    """Validate CIDRs given on the command line or API; returns them normalised."""
    return [str(network(c)) for c in cidrs if c.strip()]
