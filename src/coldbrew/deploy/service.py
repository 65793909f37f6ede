"""Publishing a version: static checks, a trial load in a real instance, then store + registry.

Nothing that serves traffic changes until the trial load has passed: a bundle whose model does
not load, whose handler does not import, or whose validation sample fails is refused, and the
`latest` alias stays where it was.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coldbrew import errors
from coldbrew.backends.base import Backend, InstanceSpec
from coldbrew.deploy.layers import LayerBuilder, read_requirements
from coldbrew.deploy.model_update import check_handler_kept, model_update
from coldbrew.registry import Registry, names
from coldbrew.registry.routes import declare_routes, parse_declared_route
from coldbrew.runtime.config import (
    BUILTIN_MODEL_HANDLER,
    FunctionConfig,
    config_for_model_file,
    load_config,
)
from coldbrew.scaling.instance import Instance
from coldbrew.scaling.scheduler import Scheduler
from coldbrew.security.artifacts import check_model_trust
from coldbrew.store import ArtifactStore, content_hash, store_folder

log = logging.getLogger("coldbrew.deploy")
TRIAL_LOAD_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class DeployResult:
    function: str
    version: int
    content_sha256: str
    created: bool
    init_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "version": self.version,
            "content_sha256": self.content_sha256,
            "created": self.created,
            "aliases": {"latest": self.version},
            "init_ms": self.init_ms,
        }


def check_bundle(bundle: Path, config: FunctionConfig) -> None:
    """Fail fast, with a plain message, on what needs no process to see."""
    for spec in config.routes:
        parse_declared_route(spec)  # a bad route must not leave a version without its routes
    if config.model is not None:
        config.resolved_model_format()
        if not (bundle / config.model).is_file():
            raise errors.DeployError(f"model file '{config.model}' is not in the bundle")
    for data in (config.quality.reference, config.validation and config.validation.sample):
        if data and not (bundle / data).is_file():  # drift would be measured against nothing
            raise errors.DeployError(f"data file '{data}' is not in the bundle")
    if config.handler == BUILTIN_MODEL_HANDLER:
        if config.model is None:
            raise errors.DeployError("the built-in model handler needs `model = '<file>'`")
        return
    module = config.handler.partition(":")[0]
    relative = Path(*module.split("."))
    in_bundle = (bundle / relative).with_suffix(".py").is_file() or (
        bundle / relative / "__init__.py"
    ).is_file()
    if not in_bundle and importlib.util.find_spec(module.split(".")[0]) is None:
        raise errors.DeployError(
            f"handler module '{module}' is not in the bundle (looked for {relative}.py)"
        )


class DeployService:
    def __init__(
        self,
        registry: Registry,
        store: ArtifactStore,
        backend: Backend,
        scheduler: Scheduler,
        allow_pickle: bool = True,
        layers: LayerBuilder | None = None,
    ) -> None:
        self.layers = layers
        """Installs requirements (deploy/layers.py); None: bundles with some are refused."""
        self.allow_pickle = allow_pickle
        """Whether pickle-based models deploy without being marked trusted (docs/SECURITY.md)."""
        self.registry = registry
        self.store = store
        self.backend = backend
        self.scheduler = scheduler

    async def deploy(
        self,
        name: str,
        bundle: Path,
        model_file: str | None = None,
        description: str = "",
        trusted: bool = False,
        *,
        model_only: bool = False,
        replace_handler: bool = False,
        base: str | None = None,
    ) -> DeployResult:
        """``model_only``: keep ``base``'s (default ``latest``'s) code and config, with
        ``model_file`` as its new model (deploy/model_update.py)."""
        names.check_function_name(name)  # before a trial instance is forked for it
        if model_only:
            if not model_file:
                raise errors.ValidationError("a model-only deploy needs a model file")
            bundle, config = await asyncio.to_thread(
                model_update, self.registry, self.store, name, bundle, model_file, trusted, base
            )
        elif model_file:
            if not replace_handler:
                await asyncio.to_thread(check_handler_kept, self.registry, name, model_file)
            config = config_for_model_file(model_file)
        else:
            config = load_config(bundle)
        if trusted:
            config = config.model_copy(update={"trust_pickle": True})
        check_bundle(bundle, config)
        if config.model is not None:
            trust = bool(config.trust_pickle) or self.allow_pickle
            fmt = config.resolved_model_format()
            await asyncio.to_thread(check_model_trust, bundle / config.model, fmt, trust)
        config = await self.prepare_dependencies(bundle, config)
        init_ms = await self.trial_load(name, bundle, config)
        config_json = config.to_json_dict()
        manifest = await asyncio.to_thread(store_folder, self.store, bundle)
        digest = content_hash(manifest, config_json)
        record, created = await asyncio.to_thread(
            self.registry.create_version,
            name,
            content_sha256=digest,
            config=config_json,
            manifest=manifest,
            description=description or config.description,
        )
        await asyncio.to_thread(declare_routes, self.registry, name, config.routes)
        self.scheduler.forget(name)
        await self.scheduler.warm(name)
        log.info("deployed %s version %s (new: %s)", name, record.number, created)
        return DeployResult(name, record.number, digest, created, init_ms)

    async def prepare_dependencies(self, bundle: Path, config: FunctionConfig) -> FunctionConfig:
        """Install (or find) the layer of the bundle's requirements; conflicts are refused."""
        if self.layers is None:
            if read_requirements(bundle, config):
                raise errors.DeployError("this server does not install bundle requirements")
            layer = None
        else:
            layer = await asyncio.to_thread(self.layers.prepare, bundle, config)
        return config.model_copy(
            update={
                "dependency_layer": layer.path if layer else None,
                "own_runtime_template": bool(layer and layer.own_template),
            }
        )

    async def trial_load(self, name: str, bundle: Path, config: FunctionConfig) -> float | None:
        """Load the bundle in a throwaway instance, running the validation sample if any."""
        instance_id = "trial-" + uuid.uuid4().hex[:12]
        instance = Instance(instance_id, f"{name}:trial", 1, self.backend, lambda _: None)
        spawned = await self.backend.spawn(
            InstanceSpec(
                instance_id=instance_id,
                function_name=name,
                version="trial",
                bundle_dir=str(bundle),
                config=config.to_json_dict(),
                memory_mb=config.memory_mb,
                environment=dict(config.environment),
                run_validation=True,
            )
        )
        instance.attach(spawned)
        try:
            await asyncio.wait_for(asyncio.shield(instance.ready), TRIAL_LOAD_TIMEOUT_S)
        except TimeoutError:
            raise errors.DeployError(
                f"the bundle did not finish loading within {TRIAL_LOAD_TIMEOUT_S:g} s"
            ) from None
        except errors.DeployError:
            raise
        except errors.ColdbrewError as exc:
            raise errors.DeployError(
                f"the bundle failed to load: {exc.message}", cause=exc.code
            ) from None
        finally:
            instance.stop()
            await instance.wait_closed()
        return instance.init_ms
