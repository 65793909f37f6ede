"""The composition root: builds every component from settings and starts/stops them in order."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from coldbrew.backends.local import LocalBackend
from coldbrew.backends.verifying import VerifyingBackend
from coldbrew.cache import LocalCache
from coldbrew.cache.redis import RedisCache
from coldbrew.cluster.wiring import Cluster
from coldbrew.dataplane import DataPlane
from coldbrew.dataplane.prediction_cache import PredictionCache
from coldbrew.delivery.controller import RolloutController
from coldbrew.delivery.ensemble import Composites
from coldbrew.delivery.shadow import ShadowMirror
from coldbrew.deploy.layers import LayerBuilder
from coldbrew.deploy.service import DeployService
from coldbrew.errors import ColdbrewError
from coldbrew.observe.hub import Observability
from coldbrew.observe.reference import References
from coldbrew.registry import Registry
from coldbrew.registry.rollouts import RolloutStore
from coldbrew.registry.shadows import ShadowStore
from coldbrew.scaling.pool import TemplatePolicy
from coldbrew.scaling.scheduler import Scheduler
from coldbrew.security.artifacts import VerifiedBundles, artifact_cipher
from coldbrew.security.home import harden as harden_home
from coldbrew.security.secrets import Secrets
from coldbrew.security.service import Security
from coldbrew.settings import Settings
from coldbrew.store import LocalArtifactStore
from coldbrew.store.gc import GarbageCollector
from coldbrew.store.s3 import S3ArtifactStore

log = logging.getLogger("coldbrew")


def artifact_store(settings: Settings) -> LocalArtifactStore | S3ArtifactStore:
    """The local folder, or the bucket of ``COLDBREW_ARTIFACTS_URL`` (docs/CLUSTER.md)."""
    cipher = artifact_cipher(settings)
    if settings.artifacts_url:
        return S3ArtifactStore.from_url(settings.artifacts_url, cipher, settings.s3_endpoint_url)
    return LocalArtifactStore(settings.artifacts_dir, cipher=cipher)


def make_backend(settings: Settings, bundles: VerifiedBundles) -> LocalBackend:
    """Processes on this machine, or on a Ray cluster's nodes (``COLDBREW_BACKEND=ray``,
    docs/CLUSTER.md): Ray is imported only then."""
    if settings.backend == "ray":
        from coldbrew.backends.ray import RayBackend

        return RayBackend(settings, bundles)  # type: ignore[return-value]
    return VerifyingBackend(settings, bundles)


@dataclass
class Platform:
    settings: Settings
    registry: Registry
    store: LocalArtifactStore | S3ArtifactStore
    backend: LocalBackend
    scheduler: Scheduler
    deployer: DeployService
    observe: Observability | None = None
    """Metrics, meter, alerts and access log (docs/OBSERVABILITY.md)."""
    security: Security | None = None
    """Keys, tokens, limits, audit (docs/SECURITY.md)."""
    dataplane: DataPlane | None = None
    """The one path of every invocation (``coldbrew.dataplane``); built from the above."""
    bootstrap_key: str | None = None
    """An admin key created at start-up because auth is on and no key existed; shown once."""
    collector: GarbageCollector | None = None
    """Removes the blobs and bundles no version references (store/gc.py); built from the
    above when not given."""
    secrets: Secrets | None = None
    """Encrypted named values injected into instances' environments (docs/DATA.md)."""

    rollouts: RolloutController | None = None
    """Moves aliases through rollouts and rolls them back (docs/DELIVERY.md); built from the
    above when not given."""

    shadows: ShadowMirror | None = None
    """Copies a share of an alias's traffic to a candidate version (docs/DELIVERY.md)."""

    cluster: Cluster | None = None
    """This gateway among others (docs/CLUSTER.md): shared instance slots and membership
    through Redis when ``COLDBREW_REDIS_URL`` is set; in-process otherwise."""

    def describe_gateway(self) -> dict[str, object]:
        """What this gateway holds now, for ``GET /v1/nodes``."""
        pools = list(self.scheduler.pools.values())
        runtime = 1 + len(getattr(self.backend, "own_templates", {}))
        versions = len(getattr(self.backend, "version_templates", {}))
        return {
            "instances": sum(len(pool.instances) for pool in pools),
            "templates": runtime + versions,
            "runtime_templates": runtime,
            "version_templates": versions,
            "functions": sorted({pool.function_name for pool in pools if pool.instances}),
        }

    def __post_init__(self) -> None:
        if self.cluster is None:
            self.cluster = Cluster.from_settings(self.settings, self.describe_gateway)
        if self.cluster.leases is not None:
            self.scheduler.leases = self.cluster.leases
        if self.dataplane is not None and self.dataplane.composite is None:
            self.dataplane.composite = Composites(self.dataplane)  # ensembles and routers
        if self.shadows is None and self.dataplane is not None:
            self.shadows = ShadowMirror(
                self.dataplane,
                self.observe.metrics.registry if self.observe else None,
                self.settings.shadow_max_concurrency,
                store=ShadowStore(self.settings.registry_url()),  # shared by every gateway
            )
        if self.rollouts is None and self.observe is not None:
            self.rollouts = RolloutController(
                RolloutStore(self.settings.registry_url()),
                self.registry,
                self.scheduler,
                self.observe.window,
                self.security.audit if self.security else None,
                self.observe.alerts,
                self.settings.rollout_interval_s,
            )
        if self.collector is None:
            pools = self.scheduler.pools
            self.collector = GarbageCollector(
                self.settings.artifacts_dir,
                self.settings.bundles_dir,
                self.settings.run_dir,
                self.registry.referenced_artifacts,
                lambda: {pool.version.content_sha256 for pool in pools.values()},
                self.settings.gc_grace_s,
                self.settings.gc_interval_s,
                self.store if isinstance(self.store, S3ArtifactStore) else None,
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Platform:
        for folder in (settings.home, settings.bundles_dir, settings.run_dir, settings.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        harden_home(settings)  # modes and isolation (docs/SECURITY.md); may refuse to start
        registry = Registry(settings.registry_url())
        store = artifact_store(settings)
        bundles = VerifiedBundles(store)
        backend = make_backend(settings, bundles)
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
        layers = LayerBuilder.from_settings(settings)
        deployer = DeployService(
            registry, store, backend, scheduler, settings.pickle_allowed(), layers=layers
        )
        observe = Observability(settings, lambda: scheduler.pools.values())
        references = References(store.read_bytes)  # what input drift is measured against
        observe.drift.references = lambda name: references.of_versions(registry.list_versions(name))
        scheduler.observers.append(observe.observe)
        scheduler.batch_observers.append(observe.metrics.observe_batch)
        scheduler.feature_observers.append(observe.features.record)  # stream sessions' lookups
        security = Security.from_settings(settings)
        dataplane = DataPlane(scheduler, security.limiter)
        dataplane.recorders.append(observe.predictions.offer)  # the prediction log
        dataplane.prediction_cache = PredictionCache(
            LocalCache(settings.prediction_cache_max_entries),
            RedisCache(settings.redis_url) if settings.redis_url else None,
            observe.metrics.registry,
        )
        secrets = Secrets.from_settings(settings)
        backend.secret_environment = secrets.environment
        return cls(
            settings,
            registry,
            store,
            backend,
            scheduler,
            deployer,
            observe,
            security,
            dataplane,
            secrets=secrets,
        )

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
        if self.cluster:
            await self.cluster.start()
        if self.collector:
            await self.collector.start()
        if self.observe:
            await self.observe.start()
        if self.rollouts:
            await self.rollouts.start()
        if self.shadows:
            await self.shadows.start()  # the registry's shadows, re-read every few seconds
        for function in await asyncio.to_thread(self.registry.list_functions):
            try:
                await self.scheduler.warm(function.name)
            except ColdbrewError as exc:  # e.g. ARTIFACT_TAMPERED: serve the others anyway
                log.error("could not warm %s: %s %s", function.name, exc.code, exc.message)

    async def stop(self) -> None:
        if self.collector:
            await self.collector.stop()
        if self.rollouts:
            await self.rollouts.stop()
        if self.shadows:
            await self.shadows.stop()  # drains the copies in flight
        await self.scheduler.stop()
        if self.observe:
            await self.observe.stop()
        await self.backend.stop()
        if self.cluster:
            await self.cluster.stop()
        if self.security:
            await self.security.stop()
        if self.secrets:
            self.secrets.close()
        self.registry.close()
