"""How v2 tensors map onto the built-in model handler, and its answer back onto tensors.

The handler takes ``{"instances": rows}`` and answers ``{"predictions": [...],
"probabilities": [[...]], "classes": [...]}``. So:

- inputs: one tensor of shape ``[rows, features]`` (or ``[features]`` for a single row), or
  several tensors of shape ``[rows]`` / ``[rows, k]`` that are joined column-wise in request
  order (one tensor per feature, as pandas-style clients send). Any numeric datatype; BOOL counts
  as 0/1; BYTES is refused.
- outputs: ``predictions`` (``[rows]``, INT64 for integer labels, FP64 for numbers, BYTES for
  string labels, BOOL for booleans), ``probabilities`` (FP64 ``[rows, classes]``) and
  ``classes`` (``[classes]``), named after the handler's own keys so the v1 and v2 answers read
  the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from coldbrew.gateway.oip.tensors import Tensor, TensorError

OUTPUT_NAMES = ("predictions", "probabilities", "classes")
INPUT_NAME = "input-0"


def rows_from_inputs(inputs: list[Tensor]) -> np.ndarray:
    """A float64 ``(rows, features)`` matrix from the request's input tensors."""
    columns = [_as_matrix(t, single=len(inputs) == 1) for t in inputs]
    heights = {c.shape[0] for c in columns}
    if len(heights) > 1:
        raise TensorError(
            "inputs joined column-wise must have the same number of rows, got "
            + ", ".join(f"{t.name}: {c.shape[0]}" for t, c in zip(inputs, columns, strict=True))
        )
    return columns[0] if len(columns) == 1 else np.hstack(columns)


def _as_matrix(tensor: Tensor, *, single: bool) -> np.ndarray:
    if tensor.datatype == "BYTES":
        raise TensorError(f"input '{tensor.name}': model functions take numeric tensors, not BYTES")
    data = tensor.data.astype(np.float64)
    if data.ndim == 1:
        # Alone, a vector is one row of features; beside others, it is one feature column.
        return data.reshape(1, -1) if single else data.reshape(-1, 1)
    if data.ndim == 2:
        return data
    raise TensorError(
        f"input '{tensor.name}' has shape {tensor.shape}; model functions take "
        "[rows, features] (or [features] for one row)"
    )


def event_for(matrix: np.ndarray) -> bytes:
    """The built-in handler's event, serialised once (NaN becomes null and is refused there)."""
    return orjson.dumps({"instances": matrix}, option=orjson.OPT_SERIALIZE_NUMPY)


def outputs_from_result(result: Any) -> list[Tensor]:
    """The output tensors of the handler's answer, in ``OUTPUT_NAMES`` order."""
    if not isinstance(result, dict) or "predictions" not in result:
        raise ValueError("the model handler's answer has no 'predictions'")
    tensors = [Tensor("predictions", "", _labels(result["predictions"]))]
    if result.get("probabilities") is not None:
        probabilities = np.asarray(result["probabilities"], dtype=np.float64)
        tensors.append(Tensor("probabilities", "FP64", probabilities))
    if result.get("classes") is not None:
        tensors.append(Tensor("classes", "", _labels(result["classes"])))
    for tensor in tensors:
        if not tensor.datatype:
            tensor.datatype = _datatype(tensor.data)
    return tensors


def _labels(values: Any) -> np.ndarray:
    try:
        array = np.asarray(values)
    except ValueError:  # ragged
        array = np.empty(0, dtype=np.object_)
    if array.dtype.kind == "U":
        encoded = np.empty(array.shape, dtype=np.object_)
        encoded.ravel()[:] = [v.encode() for v in array.ravel().tolist()]
        return encoded
    if array.dtype.kind == "O" and isinstance(values, list):
        # Mixed or ragged labels: each one as its JSON text, so nothing is lost.
        texts = np.empty(len(values), dtype=np.object_)
        texts[:] = [orjson.dumps(v) for v in values]
        return texts
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind == "f":
        return array.astype(np.float64)
    return array


def _datatype(array: np.ndarray) -> str:
    return {"b": "BOOL", "i": "INT64", "f": "FP64"}.get(array.dtype.kind, "BYTES")


def select_outputs(tensors: list[Tensor], wanted: list[str] | None) -> list[Tensor]:
    """The outputs the request asked for, in its order; an unknown name is a 400."""
    if wanted is None:
        return tensors
    by_name = {t.name: t for t in tensors}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise TensorError(
            f"unknown output {missing[0]!r}; this model has {', '.join(by_name) or 'none'}"
        )
    return [by_name[name] for name in wanted]
