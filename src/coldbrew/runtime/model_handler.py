"""The built-in handler of bare model deploys (``coldbrew.runtime.model_handler:handler``).

The runtime has already loaded the model and put it on ``context.model`` (a ``LoadedModel``).
Events look like KServe v1 / SageMaker: ``{"instances": [[...], ...]}`` (``"inputs"`` is an
alias). Bad input is the caller's mistake, not the function's, so it comes back as a Lambda
proxy response with status 400 and a ``VALIDATION_ERROR`` body instead of an exception that the
runtime would count as a function error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np

from coldbrew import errors
from coldbrew.runtime.loaders import LoadedModel

__all__ = ["batch_handler", "handler", "predict_rows", "rows_to_array"]

_INPUT_KEYS = ("instances", "inputs")


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Lambda signature. Returns ``{"predictions": [...], ...}`` or a 400 proxy response."""
    model: LoadedModel = context.model
    try:
        return predict_rows(model, _rows_from_event(event))
    except errors.ValidationError as exc:
        return validation_response(exc.message)


def predict_rows(model: LoadedModel, rows: Any) -> dict[str, list[Any]]:
    """Validate ``rows`` (a list of equal-length numeric lists, or a 2-D numeric array) and
    predict them in one call.

    Kept apart from ``handler`` so a batcher can concatenate the rows of many callers, predict
    once, and split the result. Raises ``errors.ValidationError`` for bad rows."""
    matrix = rows_to_array(rows)
    expected = getattr(model, "n_features", None)
    if expected is not None and matrix.shape[1] != expected:
        raise errors.ValidationError(
            f"the model expects {expected} features per row, got {matrix.shape[1]}"
        )
    return model.predict(matrix)


def rows_to_array(rows: Any) -> np.ndarray:
    """A (n_rows, n_features) float64 array, or ``errors.ValidationError`` saying what is wrong.

    Checks element types in Python rather than trusting ``np.asarray``: numpy would happily
    turn ``"1.5"`` or ``true`` into numbers, or ragged rows into an object array."""
    if isinstance(rows, np.ndarray):
        return _check_array(rows)
    if not isinstance(rows, list) or not rows:
        raise errors.ValidationError("'instances' must be a non-empty list of rows")
    if not isinstance(rows[0], list):
        if _is_number(rows[0]):
            raise errors.ValidationError(
                "'instances' must be a list of rows (a list of lists of numbers); "
                'wrap a single row in another list: {"instances": [[...]]}'
            )
        raise errors.ValidationError(f"row 0 must be a list of numbers, got {_json_type(rows[0])}")
    width = len(rows[0])
    if width == 0:
        raise errors.ValidationError("row 0 is empty")
    for i, row in enumerate(rows):
        _check_row(i, row, width)
    return np.asarray(rows, dtype=np.float64)


def validation_response(message: str) -> dict[str, Any]:
    """A Lambda proxy response the gateway serves as HTTP 400."""
    return {
        "statusCode": 400,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"error": {"code": errors.ValidationError.code, "message": message}}),
    }


def _rows_from_event(event: Any) -> Any:
    if not isinstance(event, dict):
        raise errors.ValidationError(
            f'the event must be a JSON object like {{"instances": [[...]]}}, '
            f"got {_json_type(event)}"
        )
    for key in _INPUT_KEYS:
        if key in event:
            return event[key]
    raise errors.ValidationError(
        "missing 'instances' (or 'inputs'): send {\"instances\": [[feature, ...], ...]}"
    )


def _check_row(index: int, row: Any, width: int) -> None:
    if not isinstance(row, list):
        raise errors.ValidationError(
            f"row {index} must be a list of numbers, got {_json_type(row)}"
        )
    if len(row) != width:
        raise errors.ValidationError(
            f"rows must all have the same length: row {index} has {len(row)} values, "
            f"row 0 has {width}"
        )
    for column, value in enumerate(row):
        # The type check first: JSON gives floats and ints, and isinstance(value, Real) goes
        # through the ABC machinery, the slowest thing on this path.
        if type(value) not in _PLAIN_NUMBERS and not _is_number(value):
            raise errors.ValidationError(
                f"row {index}, column {column}: expected a number, got {_json_type(value)} "
                f"{json.dumps(value, default=str)[:40]}"
            )


def _check_array(array: np.ndarray) -> np.ndarray:
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise errors.ValidationError(
            f"instances must be a non-empty 2-D array, got shape {list(array.shape)}"
        )
    if not (np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_):
        raise errors.ValidationError(f"instances must be numeric, got dtype {array.dtype}")
    return array


_PLAIN_NUMBERS = frozenset({float, int})  # not bool: type(True) is bool


def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python, but `true` in a feature row is a mistake.
    return isinstance(value, Real) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__


def batch_handler(events: list[Any], contexts: list[Any]) -> list[Any]:
    """Many callers' rows, one model call: the built-in handler's batch form.

    Each caller's rows are checked on their own, so bad input fails only its sender (with the
    same 400 the single-event handler gives); the good rows are stacked, predicted at once and
    split back in order."""
    model: LoadedModel = contexts[0].model
    results: list[Any] = [None] * len(events)
    matrices: list[tuple[int, np.ndarray]] = []
    for index, event in enumerate(events):
        try:
            matrices.append((index, _checked_matrix(model, _rows_from_event(event))))
        except errors.ValidationError as exc:
            results[index] = validation_response(exc.message)
    widths = {matrix.shape[1] for _, matrix in matrices}
    if len(widths) == 1:
        try:
            _predict_stacked(model, matrices, results)
            return results
        except Exception:
            pass  # one caller's rows broke the whole batch: find out whose, one by one
    for index, matrix in matrices:
        try:
            results[index] = model.predict(matrix)
        except Exception as exc:
            results[index] = exc
    return results


def _checked_matrix(model: LoadedModel, rows: Any) -> np.ndarray:
    matrix = rows_to_array(rows)
    expected = getattr(model, "n_features", None)
    if expected is not None and matrix.shape[1] != expected:
        raise errors.ValidationError(
            f"the model expects {expected} features per row, got {matrix.shape[1]}"
        )
    return matrix


def _predict_stacked(
    model: LoadedModel, matrices: list[tuple[int, np.ndarray]], results: list[Any]
) -> None:
    output = model.predict(np.vstack([matrix for _, matrix in matrices]))
    start = 0
    for index, matrix in matrices:
        end = start + matrix.shape[0]
        results[index] = {
            key: (values if key == "classes" else values[start:end])
            for key, values in output.items()
        }
        start = end
