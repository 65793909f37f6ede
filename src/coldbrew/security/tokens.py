"""JWT bearer tokens, verified with PyJWT.

Which algorithm a token may use follows from the key material configured, never from the
token: HS256 only with ``COLDBREW_JWT_SECRET``; RS256/ES256 only with a public key of the
matching type from ``COLDBREW_JWT_JWKS_FILE``. So ``alg=none`` is refused, and so is the
classic HS/RS confusion (an HS256 token "signed" with the RSA public key): an HS256 token is
only ever checked against the HMAC secret. ``exp`` is required; ``iss``/``aud`` are checked when
configured. Claims map to a role and function scopes (claim names are settings).
"""

from __future__ import annotations

import json
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
                },
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        return principal_from_claims(claims, self.config)


def principal_from_claims(claims: dict[str, Any], config: JwtConfig) -> Principal:
    role = claims.get(config.role_claim)
    if isinstance(role, list):  # e.g. Keycloak-style role lists: take the most powerful
        role = next((r for r in ROLES if r in role), None)
    if role not in ROLES:
        raise Unauthorized(f"the token's '{config.role_claim}' claim names no coldbrew role")
    raw = claims.get(config.functions_claim)
    if raw is not None and not isinstance(raw, (str, list)):
        raise Unauthorized(f"the token's '{config.functions_claim}' claim must be a list")
    subject = str(claims.get("sub") or "unknown")[:100]
    return Principal(id=subject, kind="jwt", role=str(role), functions=parse_functions(raw))
