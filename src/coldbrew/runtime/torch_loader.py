"""PyTorch models for the built-in model handler: TorchScript (``.pt``) and ``torch.export``
programs (``.pt2``), run on the CPU.

What a model's output means is read from a ``coldbrew.json`` extra file saved with it, e.g.
``torch.jit.save(m, "model.pt", _extra_files={"coldbrew.json": '{"outputs": "logits"}'})``:

- ``outputs``: ``"probabilities"`` (rows of class probabilities, or one probability of class 1
  per row), ``"logits"`` (the same before softmax / sigmoid) or ``"values"`` (anything else:
  regression targets, scores, embeddings). Without it, a model whose last layer is a softmax
  (or a sigmoid with one output) gives probabilities, and every other model gives values.
- ``classes``: labels of the probability columns (default ``0 .. k-1``).
- ``n_features``: input width, checked before the model runs (default: read from a first
  ``nn.Linear`` layer, or from the exported program's input shape).

Threads: a template loads and warms the model with one intra-op and one inter-op thread, so a
fork never inherits a thread pool; each instance then takes ``threads`` (``coldbrew.toml``) in
``enter_instance``. Inter-op threads (``torch.jit.fork``) stay at one: torch allows setting them
only once per process, before any inter-op work.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from coldbrew.runtime.loaders import Passthrough

__all__ = ["TorchModel", "load_torch_export", "load_torchscript"]

METADATA_FILE = "coldbrew.json"
OUTPUT_KINDS = ("probabilities", "logits", "values")


def _plain(values: np.ndarray) -> list[Any]:
    return values.tolist()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class TorchModel(Passthrough):
    """A callable torch module (scripted, or an exported program's ``.module()``)."""

    _raw_attribute = "module"

    def __init__(
        self,
        module: Any,
        fmt: str,
        *,
        outputs: str,
        classes: list[Any] | None,
        n_features: int | None,
        dtype: Any,
        static_batch: int | None,
        threads: int,
    ) -> None:
        self.module = module
        self.format = fmt
        self.outputs = outputs
        self.classes = classes
        self.n_features = n_features
        self.threads = threads
        self._dtype = dtype
        self._static_batch = static_batch

    def enter_instance(self) -> None:
        """Called once in each instance before it serves: only now may torch start threads."""
        import torch

        if self.threads != torch.get_num_threads():
            torch.set_num_threads(self.threads)

    def _forward(self, instances: np.ndarray) -> np.ndarray:
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(instances)).to(self._dtype)
        with torch.inference_mode():
            if self._static_batch is None:
                return self._to_numpy(self.module(batch))
            return self._forward_fixed(batch)

    def _forward_fixed(self, batch: Any) -> np.ndarray:
        """An exported program without a dynamic batch dimension takes exactly its example's
        row count: feed it chunks of that size, the last one padded with zeros."""
        import torch

        size = self._static_batch or 1
        rows = batch.shape[0]
        padded = -rows % size
        if padded:
            batch = torch.cat([batch, batch.new_zeros((padded, *batch.shape[1:]))])
        parts = [self._to_numpy(self.module(chunk)) for chunk in torch.split(batch, size)]
        return np.concatenate(parts)[:rows]

    @staticmethod
    def _to_numpy(output: Any) -> np.ndarray:
        if not hasattr(output, "detach"):
            raise TypeError(
                f"the model returned a {type(output).__name__}; the built-in handler needs one "
                "tensor of shape (rows, outputs): deploy a bundle with your own handler instead"
            )
        return output.detach().to("cpu").numpy().astype(np.float64, copy=False)

    def predict(self, instances: np.ndarray) -> dict[str, list[Any]]:
        values = self._forward(instances)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values.ravel()
        kind = self.outputs
        if kind == "auto-sigmoid":  # a last sigmoid means a probability only with one column
            kind = "probabilities" if values.ndim == 1 else "values"
        if kind == "values" or values.ndim > 2:
            return {"predictions": _plain(values)}
        if kind == "logits":
            values = _sigmoid(values) if values.ndim == 1 else _softmax(values)
        # One column: P(class 1) per row.
        probabilities = np.column_stack([1.0 - values, values]) if values.ndim == 1 else values
        classes = self.classes or list(range(probabilities.shape[1]))
        labels = np.asarray(classes, dtype=object).take(probabilities.argmax(axis=1))
        return {
            "predictions": [c.item() if isinstance(c, np.generic) else c for c in labels],
            "probabilities": _plain(probabilities),
            "classes": list(classes),
        }


def _metadata(raw: bytes | str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{METADATA_FILE} saved with the model is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{METADATA_FILE} saved with the model must hold a JSON object")
    outputs = meta.get("outputs")
    if outputs is not None and outputs not in OUTPUT_KINDS:
        raise ValueError(f"{METADATA_FILE}: outputs must be one of {', '.join(OUTPUT_KINDS)}")
    return meta


def _hold_threads() -> None:
    """One thread each until ``enter_instance``: nothing for a fork to lose."""
    import torch

    torch.set_num_threads(1)
    # Settable once per process: a handler or another model may have done it already.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def _leaves(module: Any) -> list[Any]:
    return [m for _, m in module.named_modules() if not list(m.children())]


def _script_shape(module: Any) -> tuple[str, int | None, Any]:
    """(default output kind, input width, parameter dtype) read off a scripted module."""
    import torch

    leaves = _leaves(module)
    names = [getattr(leaf, "original_name", type(leaf).__name__) for leaf in leaves]
    last = names[-1] if names else ""
    kind = {"Softmax": "probabilities", "Sigmoid": "auto-sigmoid"}.get(last, "values")
    n_features = None
    if names and names[0] == "Linear":
        n_features = int(leaves[0].weight.shape[1])
    dtypes = [p.dtype for p in module.parameters() if p.is_floating_point()]
    return kind, n_features, dtypes[0] if dtypes else torch.float32


def load_torchscript(path: Path, fmt: str, threads: int = 1) -> TorchModel:
    import torch

    _hold_threads()
    files = {METADATA_FILE: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    module.eval()
    meta = _metadata(files[METADATA_FILE])
    kind, n_features, dtype = _script_shape(module)
    return TorchModel(
        module,
        fmt,
        outputs=meta.get("outputs", kind),
        classes=meta.get("classes"),
        n_features=meta.get("n_features", n_features),
        dtype=dtype,
        static_batch=None,
        threads=threads,
    )


def _export_shape(program: Any) -> tuple[str, int | None, int | None, Any]:
    """(default output kind, input width, static batch size or None, input dtype)."""
    import torch

    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise ValueError(
            f"the exported program takes {len(user_inputs)} inputs; coldbrew's model handler "
            "feeds one 2-D tensor, so export with a single input or deploy a bundle"
        )
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs)
    value = node.meta.get("val")
    shape = list(getattr(value, "shape", []))
    dtype = getattr(value, "dtype", torch.float32)
    n_features = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
    static_batch = shape[0] if shape and isinstance(shape[0], int) else None
    calls = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    last = calls[-1] if calls else ""
    kind = "values"
    if "softmax" in last:
        kind = "probabilities"
    elif "sigmoid" in last:
        kind = "auto-sigmoid"
    return kind, n_features, static_batch, dtype


def load_torch_export(path: Path, fmt: str, threads: int = 1) -> TorchModel:
    import torch

    _hold_threads()
    files = {METADATA_FILE: ""}
    program = torch.export.load(str(path), extra_files=files)
    meta = _metadata(files[METADATA_FILE])
    kind, n_features, static_batch, dtype = _export_shape(program)
    return TorchModel(
        program.module(),
        fmt,
        outputs=meta.get("outputs", kind),
        classes=meta.get("classes"),
        n_features=meta.get("n_features", n_features),
        dtype=dtype,
        static_batch=static_batch,
        threads=threads,
    )
