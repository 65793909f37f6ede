"""How an ensemble's answers become one: pure functions over ``(weight, result)`` pairs, tested
by tables (``delivery/ensemble.py`` runs the members).

A member's result is what its handler returned: the built-in model handler's
``{"predictions": [...], "probabilities": [[...]], "classes": [...]}``, or any JSON value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

Weighted = Sequence[tuple[float, Any]]


class CombineError(ValueError):
    """The members' answers cannot be combined (different shapes, no numbers...)."""


def _rows(result: Any, key: str = "predictions") -> tuple[list[Any], bool]:
    """A member's answer as per-row values, and whether it was a ``{"predictions": [...]}``."""
    if isinstance(result, dict) and key in result:
        value = result[key]
        return (value, True) if isinstance(value, list) else ([value], True)
    return (result, False) if isinstance(result, list) else ([result], False)


def _aligned(results: Weighted, key: str = "predictions") -> tuple[list[list[Any]], bool]:
    rows = [_rows(r, key) for _, r in results]
    lengths = {len(r) for r, _ in rows}
    if len(lengths) != 1:
        raise CombineError(f"members answered different numbers of rows: {sorted(lengths)}")
    return [r for r, _ in rows], rows[0][1]


def _shape(values: list[Any], wrapped: bool, single: bool) -> Any:
    if wrapped:
        return {"predictions": values}
    return values[0] if single else values


def vote(results: Weighted) -> Any:
    """The label with the most (weighted) votes, row by row; a tie goes to the member listed
    first."""
    rows, wrapped = _aligned(results)
    out = []
    for i in range(len(rows[0])):
        tally: dict[bytes, float] = {}
        labels: dict[bytes, Any] = {}
        for (weight, _), member_rows in zip(results, rows, strict=True):
            label = member_rows[i]
            key = orjson.dumps(label, option=orjson.OPT_SORT_KEYS)
            tally[key] = tally.get(key, 0.0) + weight
            labels.setdefault(key, label)
        best = max(tally.values())
        out.append(labels[next(k for k, v in tally.items() if v == best)])
    return _shape(out, wrapped, not isinstance(_first(results), list) and not wrapped)


def mean(results: Weighted) -> Any:
    """The (weighted) mean of numeric predictions, element by element."""
    rows, wrapped = _aligned(results)
    weights = [w for w, _ in results]
    try:
        stacked = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise CombineError("mean needs numeric predictions of one shape") from None
    averaged = np.average(stacked, axis=0, weights=weights).tolist()
    return _shape(averaged, wrapped, not isinstance(_first(results), list) and not wrapped)


def mean_proba(results: Weighted) -> dict[str, Any]:
    """The (weighted) mean of class probabilities; the label is the likeliest class (named by
    the first member's ``classes`` when it has them)."""
    probabilities = []
    for _, result in results:
        if not isinstance(result, dict) or "probabilities" not in result:
            raise CombineError("mean_proba needs members that answer with 'probabilities'")
        probabilities.append(result["probabilities"])
    try:
        stacked = np.asarray(probabilities, dtype=np.float64)
    except (TypeError, ValueError):
        raise CombineError("members' probabilities differ in shape") from None
    if stacked.ndim != 3:
        raise CombineError("probabilities are one list of class probabilities per row")
    averaged = np.average(stacked, axis=0, weights=[w for w, _ in results])
    best = averaged.argmax(axis=1).tolist()
    classes = next((r["classes"] for _, r in results if r.get("classes")), None)
    if classes is not None and len(classes) != averaged.shape[1]:
        raise CombineError("members' classes do not match their probabilities")
    answer: dict[str, Any] = {
        "predictions": [classes[i] for i in best] if classes is not None else best,
        "probabilities": averaged.tolist(),
    }
    if classes is not None:
        answer["classes"] = classes
    return answer


def _first(results: Weighted) -> Any:
    return results[0][1]


METHODS = {"vote": vote, "mean": mean, "mean_proba": mean_proba}


def combine(method: str, results: Weighted) -> Any:
    if not results:
        raise CombineError("no member answered")
    return METHODS[method](results)
