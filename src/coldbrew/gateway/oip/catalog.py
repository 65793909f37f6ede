"""Which functions are v2 models, and what their tensors look like.

A function is a v2 model when its config uses the built-in model handler. Its signature (input
width, output names, datatypes and shapes) lives only in the model, which only instances load:
the gateway never unpickles user models (that is arbitrary code, and memory it should not hold).
So the catalog learns a version's signature the way a client would, by asking it: one
invocation with a single all-zero row. The handler names the expected width when the row is
too narrow ("the model expects N features per row"), and a second probe of that width shows the
outputs. Versions are immutable, so each signature is probed once per content hash; the probe
is a real (metered) invocation with a request id starting ``oip-metadata-``, and it warms an
instance the way loading a model does on KServe.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette

from coldbrew import errors
from coldbrew.gateway.oip.model import INPUT_NAME, event_for, outputs_from_result
from coldbrew.gateway.proxy import looks_like_proxy
from coldbrew.gateway.targets import split_qualifier
from coldbrew.platform import Platform
from coldbrew.runtime.config import BUILTIN_MODEL_HANDLER
from coldbrew.scaling.pool import VersionInfo

_EXPECTS = re.compile(r"expects (\d+) features")


@dataclass(frozen=True)
class Signature:
    n_features: int | None
    outputs: list[dict[str, Any]] = field(default_factory=list)

    def inputs(self) -> list[dict[str, Any]]:
        return [{"name": INPUT_NAME, "datatype": "FP64", "shape": [-1, self.n_features or -1]}]


UNKNOWN = Signature(None, [{"name": "predictions", "datatype": "FP64", "shape": [-1]}])
"""What metadata says when a probe cannot tell (e.g. an ONNX model with a dynamic width)."""


class ModelCatalog:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._signatures: dict[str, asyncio.Task[Signature]] = {}

    async def resolve(
        self, name: str, version: str | None = None
    ) -> tuple[VersionInfo, str, str | None]:
        """The version a v2 path names (``/v2/models/{name}[/versions/{v}]``; ``v`` may be a
        number or an alias), the bare function name and the qualifier. Not a model function:
        NotFound, since for v2 clients it is no model at all."""
        function, qualifier = split_qualifier(name)
        if version is not None:
            qualifier = version
        info = await self.platform.scheduler.resolve(function, qualifier)
        if info.config.handler != BUILTIN_MODEL_HANDLER:
            raise errors.NotFound(
                f"function '{function}' is not a model function (its handler is "
                f"{info.config.handler}); invoke it at /v1/functions/{function}/invoke"
            )
        return info, function, qualifier

    async def versions(self, function: str) -> list[str]:
        records = await asyncio.to_thread(self.platform.registry.list_versions, function)
        return [str(r.number) for r in records]

    async def signature(self, version: VersionInfo) -> Signature:
        task = self._signatures.get(version.content_sha256)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.ensure_future(self._probe(version))
            self._signatures[version.content_sha256] = task
        return await asyncio.shield(task)

    async def _probe(self, version: VersionInfo) -> Signature:
        result, message = await self._predict_zeros(version, 1)
        width: int | None = 1
        if result is None:
            match = _EXPECTS.search(message or "")
            if match is None:
                return UNKNOWN
            width = int(match.group(1))
            result, _ = await self._predict_zeros(version, width)
            if result is None:
                return Signature(width, UNKNOWN.outputs)
        try:
            tensors = outputs_from_result(result)
        except ValueError:
            return Signature(width, UNKNOWN.outputs)
        outputs = []
        for tensor in tensors:
            shape = tensor.shape if tensor.name == "classes" else [-1, *tensor.shape[1:]]
            outputs.append({"name": tensor.name, "datatype": tensor.datatype, "shape": shape})
        return Signature(width, outputs)

    async def _predict_zeros(self, version: VersionInfo, width: int) -> tuple[Any, str | None]:
        """(the handler's answer, None), or (None, the error message it gave)."""
        outcome = await self.platform.scheduler.invoke(
            version,
            event_for(np.zeros((1, width))),
            f"oip-metadata-{uuid.uuid4()}",
        )
        if outcome.error is not None:
            return None, outcome.error.message
        body = orjson.loads(outcome.body)
        if looks_like_proxy(outcome.body) and isinstance(body, dict):
            return None, str(body.get("body", ""))
        return body, None


def catalog_for(app: Starlette) -> ModelCatalog:
    """The app's catalog, made on first use (the gateway has no other per-protocol state)."""
    catalog: ModelCatalog | None = getattr(app.state, "oip_catalog", None)
    if catalog is None:
        catalog = app.state.oip_catalog = ModelCatalog(app.state.platform)
    return catalog
