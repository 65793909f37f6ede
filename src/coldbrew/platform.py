"""The composition root: builds every component from settings and starts/stops them in order."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from coldbrew.backends.local import LocalBackend
from coldbrew.deploy.service import DeployService
from coldbrew.observe.hub import Observability
from coldbrew.registry import Registry
from coldbrew.scaling.pool import TemplatePolicy
from coldbrew.scaling.scheduler import Scheduler
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

    @classmethod
    def from_settings(cls, settings: Settings) -> Platform:
        for folder in (settings.home, settings.bundles_dir, settings.run_dir, settings.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        registry = Registry(settings.registry_url())
        store = LocalArtifactStore(settings.artifacts_dir)
        backend = LocalBackend(settings)
        scheduler = Scheduler(
            registry,
            store,
            backend,
            settings.bundles_dir,
            settings.reap_interval_s,
            TemplatePolicy(
                settings.version_templates,
                settings.version_template_idle_s,
                settings.policy_minute_s,
            ),
        )
        deployer = DeployService(registry, store, backend, scheduler)
        observe = Observability(settings, lambda: scheduler.pools.values())
        scheduler.observers.append(observe.observe)
        scheduler.batch_observers.append(observe.metrics.observe_batch)
        return cls(settings, registry, store, backend, scheduler, deployer, observe)

    async def start(self) -> None:
        await asyncio.to_thread(self.registry.migrate)
        await self.backend.start()
        await self.scheduler.start()
        if self.observe:
            await self.observe.start()
        for function in await asyncio.to_thread(self.registry.list_functions):
            await self.scheduler.warm(function.name)

    async def stop(self) -> None:
        await self.scheduler.stop()
        if self.observe:
            await self.observe.stop()
        await self.backend.stop()
        self.registry.close()
