"""Accuracy in production: feedback joined to the prediction log (docs/DATA.md).

    POST /v1/functions/{name}/feedback {"request_id": ..., "label": ...}
      -> the logged prediction of that request (registry/predictions.py)
      -> scored: classification (predicted == label) or regression (|predicted - label|)
      -> the feedback table (per version and day: accuracy, MAE, confusion matrix)
      -> calibration (reliability table, ECE, Brier) when the logged output has class
         probabilities (observe/calibration.py), input drift (observe/drift_watch.py)
      -> /metrics counters and the gauges of a sliding window, which the alert rules read

Scoring is pure (:func:`score`); the window lives in memory (a restarted gateway starts it
empty, the table keeps everything). The feedback table keeps no probabilities: the report
joins feedback to the prediction log again for calibration.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import OrderedDict, defaultdict
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from coldbrew.observe.calibration import Point, point, probabilities_of, reliability
from coldbrew.observe.drift_watch import MAX_INPUTS as MAX_DRIFT_INPUTS
from coldbrew.observe.drift_watch import DriftWatch
from coldbrew.observe.metrics import LabelLimiter
from coldbrew.observe.reference import Reference
from coldbrew.observe.rules import Evaluation
from coldbrew.registry.feedback import FeedbackStore
from coldbrew.registry.predictions import PredictionStore

MAX_ITEMS = 10_000
_MISSING = object()
__all__ = ["MAX_DRIFT_INPUTS", "MAX_ITEMS", "Quality", "QualityMetrics", "Scored"]


class Scored(NamedTuple):
    """One feedback in the sliding window (the first three fields are positional for older
    readers: time, correct, abs error)."""

    at: float
    correct: bool | None
    abs_error: float | None
    confidence: float | None = None
    """The probability of the predicted class, when the output had probabilities."""
    brier: float | None = None


def _path(path: str) -> list[str | int]:
    tokens: list[str | int] = []
    for part in path.lstrip("$").replace("]", "").replace("[", ".").split("."):
        if part:
            tokens.append(int(part) if part.isdigit() else part)
    return tokens


def predicted_value(output: Any, path: str | None) -> Any:
    """The prediction inside a handler's output: at ``path``, else the output itself when it
    is a scalar, else ``predictions[0]`` / ``prediction`` (the built-in model handler's)."""
    if path:
        value = output
        for token in _path(path):
            in_list = isinstance(token, int) and isinstance(value, list) and token < len(value)
            in_dict = isinstance(token, str) and isinstance(value, dict) and token in value
            if not (in_list or in_dict):
                return _MISSING
            value = value[token]  # type: ignore[index]
        return value
    if not isinstance(output, dict | list):
        return output
    if isinstance(output, dict):
        found = output.get("predictions", output.get("prediction", _MISSING))
        if isinstance(found, list):
            return found[0] if len(found) == 1 else _MISSING
        return found
    return output[0] if len(output) == 1 else _MISSING


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def task_of(task: str, label: Any, predicted: Any) -> str:
    if task != "auto":
        return task
    if isinstance(label, float) or isinstance(predicted, float):
        return "regression"
    return "classification"


def score(task: str, label: Any, predicted: Any) -> tuple[bool | None, float | None]:
    """(correct, abs_error): one of them, by the task."""
    if task_of(task, label, predicted) == "regression":
        a, b = _number(label), _number(predicted)
        if a is None or b is None:
            raise ValueError("regression feedback needs numbers for both label and prediction")
        return None, abs(a - b)
    a, b = _number(label), _number(predicted)
    if a is not None and b is not None:
        return a == b, None  # 1 and 1.0 are one class
    return label == predicted, None


class QualityMetrics:
    def __init__(self, registry: CollectorRegistry, limit: LabelLimiter) -> None:
        self.limit = limit
        self.feedback = Counter(
            "coldbrew_quality_feedback",
            "Feedback received by outcome: correct, wrong (classification) or scored (regression)",
            ["function", "version", "result"],
            registry=registry,
        )
        self.accuracy = Gauge(
            "coldbrew_quality_accuracy",
            "Share of correct predictions among feedback in the quality window",
            ["function", "version"],
            registry=registry,
        )
        self.psi = Gauge(
            "coldbrew_quality_psi",
            "Input drift: population stability index of a feature vs the reference set "
            "(set when the quality report is computed)",
            ["function", "version", "feature"],
            registry=registry,
        )
        self.mae = Gauge(
            "coldbrew_quality_mae",
            "Mean absolute error among feedback in the quality window",
            ["function", "version"],
            registry=registry,
        )
        self.ece = Gauge(
            "coldbrew_quality_ece",
            "Expected calibration error of the predicted class's probability, among feedback "
            "in the quality window",
            ["function", "version"],
            registry=registry,
        )
        self.brier = Gauge(
            "coldbrew_quality_brier",
            "Brier score of the class probabilities among feedback in the quality window",
            ["function", "version"],
            registry=registry,
        )


class Quality:
    def __init__(
        self,
        feedback: FeedbackStore,
        predictions: PredictionStore,
        metrics: QualityMetrics,
        window_s: float = 3600.0,
        min_accuracy: float | None = None,
        max_mae: float | None = None,
        min_feedback: int = 20,
        max_ece: float | None = None,
        drift: DriftWatch | None = None,
    ) -> None:
        self.store = feedback
        self.predictions = predictions
        self.metrics = metrics
        self.window_s = window_s
        self.min_accuracy = min_accuracy
        self.max_mae = max_mae
        self.min_feedback = min_feedback
        self.max_ece = max_ece
        self.drift = drift or DriftWatch(predictions, metrics.psi, metrics.limit, window_s)
        self._recent: dict[tuple[str, int], OrderedDict[str, Scored]]
        self._recent = defaultdict(OrderedDict)
        """Per (function, version): request id -> :class:`Scored`, oldest first; a request's
        new feedback replaces its old one here as in the table."""
        self._lock = threading.Lock()

    # --- feedback ------------------------------------------------------------------------------
    def submit(
        self, function: str, items: list[dict[str, Any]], configs: dict[int, dict[str, Any]]
    ) -> dict[str, Any]:
        """Score and store feedback (a worker thread calls this). ``configs``: version -> its
        config, for ``[quality]``."""
        found = self.predictions.by_request_ids(function, [i["request_id"] for i in items])
        now = datetime.now(UTC)
        rows, unmatched, invalid = [], [], []
        points: list[Point | None] = []
        for item in items:
            logged = found.get(item["request_id"])
            if logged is None or logged["output"] is None:
                unmatched.append(item["request_id"])
                continue
            quality = configs.get(logged["version"], {}).get("quality") or {}
            output = orjson.loads(logged["output"])
            predicted = predicted_value(output, quality.get("prediction"))
            try:
                if predicted is _MISSING:
                    raise ValueError("no prediction found in the logged output")
                correct, error = score(quality.get("task", "auto"), item["label"], predicted)
            except ValueError as exc:
                invalid.append({"request_id": item["request_id"], "reason": str(exc)})
                continue
            calibrated = _point(output, quality, predicted, item["label"], correct)
            rows.append(
                {
                    "request_id": item["request_id"],
                    "version": logged["version"],
                    "predicted_at": logged["at"],
                    "received_at": now,
                    "label": orjson.dumps(item["label"]).decode(),
                    "predicted": orjson.dumps(predicted).decode(),
                    "correct": correct,
                    "abs_error": error,
                }
            )
            points.append(calibrated)
        self.store.put(function, rows)
        self._note(function, rows, points)
        return {"accepted": len(rows), "unmatched": unmatched, "invalid": invalid}

    def _note(self, function: str, rows: list[dict[str, Any]], points: list[Point | None]) -> None:
        now = time.time()
        label = self.metrics.limit.function(function)
        with self._lock:
            for row, calibrated in zip(rows, points, strict=True):
                version = row["version"]
                result = {True: "correct", False: "wrong", None: "scored"}[row["correct"]]
                self.metrics.feedback.labels(label, str(version), result).inc()
                recent = self._recent[(function, version)]
                recent.pop(row["request_id"], None)
                recent[row["request_id"]] = Scored(
                    now,
                    row["correct"],
                    row["abs_error"],
                    calibrated.confidence if calibrated else None,
                    calibrated.brier if calibrated else None,
                )
            self._refresh(now)

    def _refresh(self, now: float) -> None:
        """Trim the window and set the gauges (under the lock)."""
        for (function, version), recent in self._recent.items():
            while recent and next(iter(recent.values()))[0] < now - self.window_s:
                recent.popitem(last=False)
            accuracy, mae, _ = _summary(recent.values())
            label = self.metrics.limit.function(function)
            if accuracy is not None:
                self.metrics.accuracy.labels(label, str(version)).set(accuracy)
            if mae is not None:
                self.metrics.mae.labels(label, str(version)).set(mae)
            calibration = reliability(_points(recent.values()))
            if calibration is not None:
                self.metrics.ece.labels(label, str(version)).set(calibration["ece"])
                self.metrics.brier.labels(label, str(version)).set(calibration["brier"])

    # --- alerts --------------------------------------------------------------------------------
    def evaluations(self, now: float | None = None) -> list[Evaluation]:
        """The ``accuracy``, ``mae`` and ``ece`` rules, per ``function:version``, for the alert
        loop (the ``psi`` rule is the drift watch's)."""
        now = time.time() if now is None else now
        with self._lock:
            self._refresh(now)
            windows = {key: list(recent.values()) for key, recent in self._recent.items()}
        out = []
        for (function, version), recent in sorted(windows.items()):
            out += quality_rules(
                f"{function}:{version}",
                recent,
                self.min_accuracy,
                self.max_mae,
                self.min_feedback,
                self.window_s,
                self.max_ece,
            )
        return out

    # --- reports -------------------------------------------------------------------------------
    def report(
        self,
        function: str,
        since: datetime | None = None,
        references: dict[int, Reference] | None = None,
        configs: dict[int, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Per version: totals, per day (of the prediction), the confusion matrix, calibration
        (when the logged outputs have probabilities) and input drift (PSI per feature) against
        the version's reference (``references``; by default the drift watch's loader)."""
        by_version: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in self.store.rows(function, since):
            by_version[row["version"]].append(row)
        if references is None:
            loader = self.drift.references
            references = loader(function) if loader else {}
        measured = self.drift.measure(function, since, references)
        calibration = self._calibration(function, by_version, configs or {})
        versions = []
        for version in sorted(set(by_version) | set(references)):
            rows = by_version.get(version, [])
            days: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in rows:
                days[row["predicted_at"].date().isoformat()].append(row)
            entry = {
                "version": version,
                **_totals(rows),
                "days": [{"day": d, **_totals(r)} for d, r in sorted(days.items())],
                "confusion": _confusion(rows),
                "calibration": calibration.get(version),
            }
            if version in references:
                entry["drift"] = measured[version].drift if version in measured else {}
                entry["drift_reference"] = references[version].describe()
            versions.append(entry)
        # The PSI alert bound (None when the rule is off): what the dashboard colours against.
        return {"function": function, "versions": versions, "max_psi": self.drift.max_psi}

    def _calibration(
        self,
        function: str,
        by_version: dict[int, list[dict[str, Any]]],
        configs: dict[int, dict[str, Any]],
    ) -> dict[int, dict[str, Any] | None]:
        """Classification feedback joined to the prediction log's outputs once more."""
        ids = [
            r["request_id"]
            for rows in by_version.values()
            for r in rows
            if r["correct"] is not None
        ]
        logged = self.predictions.by_request_ids(function, ids) if ids else {}
        out = {}
        for version, rows in by_version.items():
            quality = configs.get(version, {}).get("quality") or {}
            points = []
            for row in rows:
                entry = logged.get(row["request_id"])
                if row["correct"] is None or entry is None or entry["output"] is None:
                    continue
                with contextlib.suppress(orjson.JSONDecodeError):
                    output = orjson.loads(entry["output"])
                    predicted, label = orjson.loads(row["predicted"]), orjson.loads(row["label"])
                    calibrated = _point(output, quality, predicted, label, row["correct"])
                    if calibrated is not None:
                        points.append(calibrated)
            out[version] = reliability(points)
        return out


def _point(
    output: Any, quality: dict[str, Any], predicted: Any, label: Any, correct: bool | None
) -> Point | None:
    """The calibration point of one classification feedback, if the output has probabilities."""
    if correct is None:
        return None
    probabilities = probabilities_of(output, quality.get("probabilities"))
    return None if probabilities is None else point(probabilities, predicted, label)


def _points(recent: Any) -> list[Point]:
    return [
        Point(s.confidence, bool(s.correct), s.brier)
        for s in recent
        if s.confidence is not None and s.brier is not None
    ]


def _summary(
    recent: Any,
) -> tuple[float | None, float | None, int]:
    """(accuracy, MAE, feedback count) of window entries (:class:`Scored`, or the plain
    ``(time, correct, abs_error)`` tuples they extend)."""
    recent = list(recent)
    correct = [r[1] for r in recent if r[1] is not None]
    errors = [r[2] for r in recent if r[2] is not None]
    accuracy = sum(correct) / len(correct) if correct else None
    mae = sum(errors) / len(errors) if errors else None
    return accuracy, mae, len(correct) + len(errors)


def quality_rules(
    target: str,
    recent: list[Any],
    min_accuracy: float | None,
    max_mae: float | None,
    min_feedback: int,
    window_s: float,
    max_ece: float | None = None,
) -> list[Evaluation]:
    """Pure: accuracy below a bound / MAE above one / ECE above one, over the window, with
    enough feedback (for ECE: enough feedback that came with probabilities)."""
    accuracy, mae, n = _summary(recent)
    minutes = window_s / 60
    out = []
    if min_accuracy is not None:
        firing = accuracy is not None and n >= min_feedback and accuracy < min_accuracy
        out.append(
            Evaluation(
                "accuracy",
                target,
                firing,
                accuracy,
                min_accuracy,
                f"{target}: accuracy {accuracy or 0:.1%} over {n} feedback in {minutes:g} min "
                f"(bound {min_accuracy:.1%})",
            )
        )
    if max_mae is not None:
        firing = mae is not None and n >= min_feedback and mae > max_mae
        out.append(
            Evaluation(
                "mae",
                target,
                firing,
                mae,
                max_mae,
                f"{target}: mean absolute error {mae or 0:.4g} over {n} feedback in "
                f"{minutes:g} min (bound {max_mae:.4g})",
            )
        )
    if max_ece is not None:
        calibration = reliability(_points(Scored(*r) for r in recent))
        ece = calibration["ece"] if calibration else None
        count = calibration["n"] if calibration else 0
        firing = ece is not None and count >= min_feedback and ece > max_ece
        out.append(
            Evaluation(
                "ece",
                target,
                firing,
                ece,
                max_ece,
                f"{target}: expected calibration error {ece or 0:.3f} over {count} feedback "
                f"with probabilities in {minutes:g} min (bound {max_ece:.3f})",
            )
        )
    return out


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    correct = [r["correct"] for r in rows if r["correct"] is not None]
    errors = [r["abs_error"] for r in rows if r["abs_error"] is not None]
    return {
        "n": len(rows),
        "accuracy": sum(correct) / len(correct) if correct else None,
        "mae": sum(errors) / len(errors) if errors else None,
    }


def _confusion(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``matrix[i][j]``: feedback whose truth is ``labels[i]`` and prediction ``labels[j]``."""
    pairs = [(r["label"], r["predicted"]) for r in rows if r["correct"] is not None]
    if not pairs:
        return None
    labels = sorted({p for pair in pairs for p in pair})
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for truth, predicted in pairs:
        matrix[index[truth]][index[predicted]] += 1
    return {"labels": [orjson.loads(label) for label in labels], "matrix": matrix}
