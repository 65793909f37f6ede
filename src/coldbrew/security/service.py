"""Security as one component of the platform: key store, keyring, JWT verifier, limiter,
audit log. Built from settings by ``Platform.from_settings``; the gateway's middleware uses it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from coldbrew.registry.security import SecurityStore
from coldbrew.security.audit import AuditLog
from coldbrew.security.keyring import Keyring, KeySpec
from coldbrew.security.limiter import Limiter, limit_state
from coldbrew.security.tokens import JwtConfig, JwtVerifier
from coldbrew.settings import Settings


@dataclass
class Security:
    enabled: bool
    store: SecurityStore
    keyring: Keyring
    audit: AuditLog
    jwt: JwtVerifier
    limiter: Limiter
    trusted_proxies: list[str]
    max_request_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Security:
        store = SecurityStore(settings.registry_url())
        jwt_config = JwtConfig(
            secret=settings.jwt_secret,
            jwks_file=settings.jwt_jwks_file,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            role_claim=settings.jwt_role_claim,
            functions_claim=settings.jwt_functions_claim,
        )
        return cls(
            enabled=settings.auth_enabled(),
            store=store,
            keyring=Keyring(store),
            audit=AuditLog(store),
            jwt=JwtVerifier(jwt_config),
            limiter=Limiter(limit_state(settings.redis_url)),
            trusted_proxies=list(settings.trusted_proxies),
            max_request_s=settings.max_request_s,
        )

    def bootstrap_admin_key(self) -> str | None:
        """With auth on and no usable key yet, create an admin key and return it (once)."""
        if not self.enabled or self.store.count_active_keys() > 0:
            return None
        _, token = self.keyring.create(KeySpec(role="admin", name="bootstrap"))
        return token

    async def stop(self) -> None:
        await self.audit.flush()
        await self.limiter.state.close()
        await asyncio.to_thread(self.store.close)
