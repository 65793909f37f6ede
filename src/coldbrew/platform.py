"""The composition root: builds every component from settings and starts/stops them in order."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from coldbrew.backends.local import LocalBackend
from coldbrew.deploy.service import DeployService
from coldbrew.errors import ColdbrewError
from coldbrew.observe.hub import Observability
from coldbrew.registry import Registry
from coldbrew.scaling.pool import TemplatePolicy
from coldbrew.scaling.scheduler import Scheduler
from coldbrew.security.artifacts import VerifiedBundles, VerifyingBackend, artifact_cipher
from coldbrew.security.principal import CALLER
from coldbrew.security.service import Security
from coldbrew.settings import Settings
from coldbrew.store import LocalArtifactStore

log = logging.getLogger("coldbrew")


@dataclass
class Platform:
    settings: Settings
    registry: Registry
    store: LocalArtifactStore
    backend: LocalBackend
    scheduler: Scheduler
    deployer: DeployService
    observe: Observability | None = None
    """Metrics, meter, alerts and access log (docs/OBSERVABILITY.md)."""
    security: Security | None = None
    """Keys, tokens, limits, audit (docs/SECURITY.md)."""
    bootstrap_key: str | None = None
    """An admin key created at start-up because auth is on and no key existed; shown once."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Platform:
        for folder in (settings.home, settings.bundles_dir, settings.run_dir, settings.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        registry = Registry(settings.registry_url())
        store = LocalArtifactStore(settings.artifacts_dir, cipher=artifact_cipher(settings))
        bundles = VerifiedBundles(store)
        backend = VerifyingBackend(settings, bundles)
        scheduler = Scheduler(
            registry,
            bundles,
            backend,
            settings.bundles_dir,
            settings.reap_interval_s,
            TemplatePolicy(
                settings.version_templates,
                settings.version_template_idle_s,
                settings.policy_minute_s,
            ),
        )
        deployer = DeployService(registry, store, backend, scheduler, settings.pickle_allowed())
        observe = Observability(settings, lambda: scheduler.pools.values())
        _meter_callers(observe)
        scheduler.observers.append(observe.observe)
        scheduler.batch_observers.append(observe.metrics.observe_batch)
        security = Security.from_settings(settings)
        return cls(settings, registry, store, backend, scheduler, deployer, observe, security)

    async def start(self) -> None:
        await asyncio.to_thread(self.registry.migrate)
        if self.security:
            self.bootstrap_key = await asyncio.to_thread(self.security.bootstrap_admin_key)
            if self.bootstrap_key:
                log.warning(
                    "auth is on and no API key existed: bootstrap admin key (shown once): %s",
                    self.bootstrap_key,
                )
        await self.backend.start()
        await self.scheduler.start()
        if self.observe:
            await self.observe.start()
        for function in await asyncio.to_thread(self.registry.list_functions):
            try:
                await self.scheduler.warm(function.name)
            except ColdbrewError as exc:  # e.g. ARTIFACT_TAMPERED: serve the others anyway
                log.error("could not warm %s: %s %s", function.name, exc.code, exc.message)

    async def stop(self) -> None:
        await self.scheduler.stop()
        if self.observe:
            await self.observe.stop()
        await self.backend.stop()
        if self.security:
            await self.security.stop()
        self.registry.close()


def _meter_callers(observe: Observability) -> None:
    """Fill the meter's ``caller`` column from the gateway's per-request caller.

    The scheduler's ``Outcome`` has no caller field yet, so the usage record gets it from the
    context variable the security middleware sets around each request (the meter runs in the
    request's task). TODO: carry it on ``Outcome`` once the scheduler takes a ``caller``."""
    add = observe.writer.add

    def add_with_caller(usage: Any) -> None:
        caller = CALLER.get()
        add(usage._replace(caller=caller) if caller else usage)

    observe.writer.add = add_with_caller  # type: ignore[method-assign]
