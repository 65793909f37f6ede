"""Calibration of a classifier's probabilities: does "80 % sure" come true 80 % of the time?
Pure functions, no I/O (docs/DATA.md).

Each scored feedback of a prediction that came with class probabilities gives a
:class:`Point`: the probability the model gave the class it predicted (its *confidence*),
whether that prediction was right, and the item's Brier term. Over many points:

- the **reliability table**: points binned by confidence into ``BINS`` equal-width bins
  (0-0.1, ..., 0.9-1.0); per bin, the mean confidence against the observed share correct;
- **ECE** (expected calibration error): sum over bins of (bin size / n) * |accuracy - confidence|
  (top-label ECE, the usual definition, Guo et al. 2017);
- the **Brier score**: the mean over points of sum_k (p_k - y_k)^2, with y the one-hot truth,
  halved for two classes so a binary model's score equals scikit-learn's
  ``brier_score_loss`` (0 is perfect, 0.25 is a coin toss).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, NamedTuple

BINS = 10
SUM_TOLERANCE = 0.01
"""Probabilities must add up to 1 within this; anything else (logits, scores) is no
probability, so the point is skipped rather than mis-scored."""


class Point(NamedTuple):
    confidence: float
    correct: bool
    brier: float


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _key(label: Any) -> Any:
    """Labels compare as :func:`quality.score` does: 1 and 1.0 are one class."""
    number = _number(label)
    return number if number is not None else label


def _at(output: Any, path: str) -> Any:
    value = output
    for part in path.lstrip("$").replace("]", "").replace("[", ".").split("."):
        if not part:
            continue
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value


def probabilities_of(output: Any, path: str | None) -> dict[Any, float] | None:
    """Class -> probability found in a handler's output, or None when it has none usable.

    At ``path`` (default ``$.probabilities``, the built-in model handler's): a mapping class ->
    probability; a list of probabilities (one row of one instance, or ``[[...]]`` for one
    instance), labelled by the output's ``classes`` or else 0..k-1; or one number, the
    probability of class 1 (a binary model)."""
    found = _at(output, path or "$.probabilities")
    if isinstance(found, list) and len(found) == 1 and isinstance(found[0], list):
        found = found[0]  # the built-in handler's rows, one instance
    single = _number(found)
    if single is not None:
        mapping: dict[Any, Any] = {1.0: single, 0.0: 1.0 - single}
    elif isinstance(found, dict):
        mapping = {_key(k): v for k, v in found.items()}
    elif isinstance(found, list) and found:
        classes = output.get("classes") if isinstance(output, dict) else None
        if isinstance(classes, list) and classes and isinstance(classes[0], list):
            classes = classes[0]
        if not isinstance(classes, list) or len(classes) != len(found):
            classes = list(range(len(found)))
        mapping = {_key(c): p for c, p in zip(classes, found, strict=True)}
    else:
        return None
    probabilities = {k: _number(v) for k, v in mapping.items()}
    if any(p is None or p < -1e-9 or p > 1 + 1e-9 for p in probabilities.values()):
        return None
    if abs(sum(probabilities.values()) - 1.0) > SUM_TOLERANCE:  # type: ignore[arg-type]
        return None
    return probabilities  # type: ignore[return-value]


def point(probabilities: dict[Any, float], predicted: Any, label: Any) -> Point:
    """One feedback's calibration point. The confidence is the probability of the predicted
    class (the largest one if the prediction is not among the classes)."""
    predicted_key, truth = _key(predicted), _key(label)
    confidence = probabilities.get(predicted_key, max(probabilities.values()))
    brier = sum((p - (k == truth)) ** 2 for k, p in probabilities.items())
    if truth not in probabilities:
        brier += 1.0  # the true class had probability 0
    if len(probabilities) == 2:
        brier /= 2
    return Point(min(max(confidence, 0.0), 1.0), predicted_key == truth, brier)


def reliability(points: Iterable[Point], bins: int = BINS) -> dict[str, Any] | None:
    """The reliability table (non-empty bins), ECE and Brier score; None without points."""
    grouped: list[list[Point]] = [[] for _ in range(bins)]
    n = 0
    brier = 0.0
    for p in points:
        grouped[min(int(p.confidence * bins), bins - 1)].append(p)
        brier += p.brier
        n += 1
    if not n:
        return None
    table, ece = [], 0.0
    for index, members in enumerate(grouped):
        if not members:
            continue
        confidence = sum(p.confidence for p in members) / len(members)
        accuracy = sum(p.correct for p in members) / len(members)
        ece += len(members) / n * abs(accuracy - confidence)
        table.append(
            {
                "low": index / bins,
                "high": (index + 1) / bins,
                "n": len(members),
                "confidence": round(confidence, 6),
                "accuracy": round(accuracy, 6),
            }
        )
    return {"n": n, "ece": round(ece, 6), "brier": round(brier / n, 6), "bins": table}
