"""The local backend, checking a stored bundle against its manifest before anything starts
from it (``security.artifacts.VerifiedBundles``): what runs is exactly what was deployed."""

from __future__ import annotations

import asyncio

from coldbrew.backends.base import InstanceSpec, SpawnedInstance
from coldbrew.backends.local import LocalBackend
from coldbrew.security.artifacts import VerifiedBundles
from coldbrew.settings import Settings


class VerifyingBackend(LocalBackend):
    def __init__(self, settings: Settings, bundles: VerifiedBundles) -> None:
        super().__init__(settings)
        self.bundles = bundles

    async def spawn(self, spec: InstanceSpec) -> SpawnedInstance:
        await asyncio.to_thread(self.bundles.verify, spec.bundle_dir)
        return await super().spawn(spec)

    async def start_version_template(self, key: str, spec: InstanceSpec) -> float:
        await asyncio.to_thread(self.bundles.verify, spec.bundle_dir)
        return await super().start_version_template(key, spec)
