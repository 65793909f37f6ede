"""Checks a version's validation sample output against what its config expects."""

from __future__ import annotations

import math
from typing import Any

from coldbrew.runtime.config import ValidationSample


def _close(expected: Any, actual: Any, tolerance: float) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return math.isclose(expected, actual, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(
            _close(expected[k], actual[k], tolerance) for k in expected
        )
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(
            _close(e, a, tolerance) for e, a in zip(expected, actual, strict=True)
        )
    return bool(expected == actual)


def value_at(document: Any, path: str) -> Any:
    """Follow a dotted path such as ``predictions.0`` or ``body.results.0.probability``."""
    current = document
    for part in path.split("."):
        if isinstance(current, list) and part.lstrip("-").isdigit():
            current = current[int(part)]
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            raise KeyError(part)
    return current


def check_validation_sample(sample: ValidationSample, output: Any) -> str | None:
    """None when the output is acceptable, else a sentence saying what differed."""
    if sample.range is not None:
        path = sample.path or ""
        try:
            value = value_at(output, path) if path else output
        except (KeyError, IndexError):
            return f"output has no value at '{path}'"
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"value at '{path}' is {value!r}, not a number"
        low, high = sample.range
        if not low <= value <= high:
            return f"value at '{path or '(output)'}' is {value}, outside [{low}, {high}]"
    if sample.expected is not None:
        actual = output
        if sample.path and sample.range is None:
            try:
                actual = value_at(output, sample.path)
            except (KeyError, IndexError):
                return f"output has no value at '{sample.path}'"
        if not _close(sample.expected, actual, sample.tolerance):
            return f"expected {sample.expected!r}, got {actual!r}"
    return None
