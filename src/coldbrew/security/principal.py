"""Who is calling: a role, a set of function scopes, and the limits of the credential.

Roles, from most to least powerful::

    admin      everything, every function; keys and the audit log
    deployer   deploy, delete, aliases and routes of its functions; invoke and read them
    invoker    invoke its functions and read their descriptions
    viewer     read its functions (descriptions, logs); global dashboards when scoped to '*'

Scopes are fnmatch globs over function names (``digits``, ``team-a-*``, ``*``). An admin is
always global.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Literal

Permission = Literal["read", "invoke", "deploy", "admin"]
ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset({"read", "invoke", "deploy", "admin"}),
    "deployer": frozenset({"read", "invoke", "deploy"}),
    "invoker": frozenset({"read", "invoke"}),
    "viewer": frozenset({"read"}),
}


@dataclass(frozen=True)
class KeyLimits:
    rate_per_s: float | None = None
    burst: int | None = None
    daily_quota: int | None = None
    monthly_quota: int | None = None

    def any(self) -> bool:
        # Three attribute tests, no generator: asked once per invocation.
        return (
            self.rate_per_s is not None
            or self.daily_quota is not None
            or self.monthly_quota is not None
        )


@dataclass(frozen=True)
class Principal:
    id: str | None
    """Key id or JWT subject; None for anonymous (auth off)."""
    kind: Literal["key", "jwt", "anonymous", "local"]
    role: str
    functions: tuple[str, ...] = ()
    ip_allowlist: tuple[str, ...] = ()
    limits: KeyLimits = field(default_factory=KeyLimits)

    def can(self, permission: str) -> bool:
        return permission in ROLES.get(self.role, frozenset())

    def sees(self, function: str) -> bool:
        if self.role == "admin":
            return True
        return any(fnmatch.fnmatchcase(function, pattern) for pattern in self.functions)

    @property
    def is_global(self) -> bool:
        return self.role == "admin" or "*" in self.functions

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"{self.kind}:{self.id}" if self.id else self.kind

    @property
    def caller(self) -> str | None:
        """How the meter names this caller (the ``caller`` column)."""
        return f"{self.kind}:{self.id}"[:64] if self.id else None


ANONYMOUS = Principal(id=None, kind="anonymous", role="admin", functions=("*",))
"""The caller when auth is off (loopback): everything is allowed, as before auth existed."""


def parse_functions(value: str | list[str] | None) -> tuple[str, ...]:
    """``'digits,wqi'`` or ``['digits', 'wqi']`` -> ``('digits', 'wqi')``."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return tuple(item.strip() for item in items if item.strip())
