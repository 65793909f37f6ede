"""JWT bearer tokens, verified with PyJWT.

Which algorithm a token may use follows from the key material configured, never from the
token: HS256 only with ``COLDBREW_JWT_SECRET``; RS256/ES256 only with a public key of the
matching type from ``COLDBREW_JWT_JWKS_FILE``. So ``alg=none`` is refused, and so is the
classic HS/RS confusion (an HS256 token "signed" with the RSA public key): an HS256 token is
only ever checked against the HMAC secret. ``exp`` is required; ``iss``/``aud`` are checked when
configured. Claims are type-checked (NumericDates are numbers, the role a name or a list of
names, the scopes a list of strings or one comma-separated string), so a malformed token is a
401, never a longer-lived one or a 500. Claims map to a role and function scopes (claim names
are settings).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from coldbrew.security.errors import Unauthorized
from coldbrew.security.principal import ROLES, Principal, parse_functions

ASYMMETRIC = {"RS256": "RSA", "ES256": "EC"}


@dataclass(frozen=True)
class JwtConfig:
    secret: str | None = None
    jwks_file: Path | None = None
    issuer: str | None = None
    audience: str | None = None
    role_claim: str = "role"
    functions_claim: str = "functions"
    leeway_s: float = 30.0

    @property
    def enabled(self) -> bool:
        return bool(self.secret or self.jwks_file)


class JwtVerifier:
    def __init__(self, config: JwtConfig) -> None:
        self.config = config
        self._jwks: jwt.PyJWKSet | None = None
        if config.jwks_file:
            self._jwks = jwt.PyJWKSet.from_dict(json.loads(Path(config.jwks_file).read_text()))

    def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        alg = header.get("alg")
        if alg == "HS256" and self.config.secret:
            return self.config.secret, alg
        if alg in ASYMMETRIC and self._jwks is not None:
            kid = header.get("kid")
            for key in self._jwks.keys:
                if (kid is None or key.key_id == kid) and key.key_type == ASYMMETRIC[alg]:
                    return key.key, alg
            raise Unauthorized("the token's signing key is not in the JWKS")
        raise Unauthorized(f"tokens signed with {alg!r} are not accepted")

    def verify(self, token: str) -> Principal:
        if not self.config.enabled:
            raise Unauthorized("bearer tokens are not configured on this gateway")
        try:
            header = jwt.get_unverified_header(token)
            key, alg = self._key_for(header)
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self.config.issuer,
                audience=self.config.audience,
                leeway=self.config.leeway_s,
                options={
                    "require": ["exp"],
                    "verify_aud": self.config.audience is not None,
                    "verify_iss": self.config.issuer is not None,
                    # Checked below once their types are known to be numbers: PyJWT reads
                    # them with int(), so "exp": true would only say "expired".
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        check_claim_types(claims, self.config)
        check_times(claims, self.config.leeway_s)
        return principal_from_claims(claims, self.config)


NUMERIC_DATES = ("exp", "nbf", "iat")
"""RFC 7519 NumericDate claims. PyJWT converts them with ``int()``, which also takes the string
``"9999999999"``; a token that says so is malformed, not long-lived."""


def check_claim_types(claims: Any, config: JwtConfig) -> None:
    """Refuse (401) a token whose claims have the wrong JSON types, whatever PyJWT tolerated."""
    if not isinstance(claims, dict):
        raise Unauthorized("invalid token: its payload is not a JSON object")
    for name in NUMERIC_DATES:
        if name in claims and not _is_number(claims[name]):
            raise Unauthorized(
                f"invalid token: the '{name}' claim must be a number of seconds since the "
                f"epoch, not {_json_type(claims[name])}"
            )
    if "sub" in claims and not isinstance(claims["sub"], str):
        raise Unauthorized(
            f"invalid token: the 'sub' claim must be a string, not {_json_type(claims['sub'])}"
        )
    role = claims.get(config.role_claim)
    if not (isinstance(role, str) or _is_list_of_strings(role)):
        raise Unauthorized(
            f"invalid token: the '{config.role_claim}' claim must be a role name "
            f"({', '.join(ROLES)}), not {_json_type(role)}"
        )
    raw = claims.get(config.functions_claim)
    if raw is not None and not (isinstance(raw, str) or _is_list_of_strings(raw)):
        raise Unauthorized(
            f"invalid token: the '{config.functions_claim}' claim must be a list of function "
            f"names or globs, or one comma-separated string, not {_json_type(raw)}"
        )


def check_times(claims: dict[str, Any], leeway_s: float, now: float | None = None) -> None:
    """PyJWT's rules for well-typed NumericDates: expired at ``exp``; not valid before ``nbf``
    or ``iat``; each with ``leeway_s`` of clock skew."""
    now = time.time() if now is None else now
    if claims["exp"] <= now - leeway_s:
        raise Unauthorized("invalid token: Signature has expired")
    for name in ("nbf", "iat"):
        if name in claims and claims[name] > now + leeway_s:
            raise Unauthorized(f"invalid token: The token is not yet valid ({name})")


def principal_from_claims(claims: dict[str, Any], config: JwtConfig) -> Principal:
    check_claim_types(claims, config)
    role = claims.get(config.role_claim)
    if isinstance(role, list):  # e.g. Keycloak-style role lists: take the most powerful
        role = next((r for r in ROLES if r in role), None)
    if role not in ROLES:
        raise Unauthorized(f"the token's '{config.role_claim}' claim names no coldbrew role")
    raw = claims.get(config.functions_claim)
    subject = (claims.get("sub") or "unknown")[:100]
    return Principal(id=subject, kind="jwt", role=str(role), functions=parse_functions(raw))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_list_of_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _json_type(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", list: "a list", dict: "an object"}
    if value is None:
        return "missing (or null)"
    if isinstance(value, list) and not _is_list_of_strings(value):
        return "a list with non-string items"
    if isinstance(value, float) and not _is_number(value):
        return "a non-finite number"
    return names.get(type(value), "a number" if _is_number(value) else type(value).__name__)
