"""Water potability, as an AWS Lambda Python handler.

This file uses only numpy and xgboost (no coldbrew imports) so the same bundle runs unchanged
on AWS Lambda and on coldbrew. The model is loaded once per process at import time, the Lambda
way; coldbrew does that in a version template, so forked instances start with it ready.

Event: ``{"readings": [{"ph": 7.1, "hardness": 204.9, ...}, ...]}`` or one reading on its own
``{"ph": 7.1, ...}``; an API Gateway proxy event with that JSON in ``body`` works too.
Response: a proxy response whose body is ``{"results": [{"potable": bool, "probability": p}]}``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

FEATURES = (
    "ph",
    "hardness",
    "solids",
    "chloramines",
    "sulfate",
    "conductivity",
    "organic_carbon",
    "trihalomethanes",
    "turbidity",
)
MODEL_PATH = Path(__file__).resolve().with_name("model.json")

# One thread: the platform runs more instances for more throughput, and an OpenMP pool
# started here would not survive the fork that creates instances from a template.
BOOSTER = xgb.Booster(params={"nthread": 1}, model_file=str(MODEL_PATH))
BOOSTER.set_param({"nthread": 1})


class BadRequest(ValueError):
    """The event is malformed; reported as 400 rather than as a failure of the function."""


def handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        matrix = readings_to_matrix(_readings(event))
    except BadRequest as exc:
        return _response(400, {"error": {"code": "VALIDATION_ERROR", "message": str(exc)}})
    try:
        probabilities = BOOSTER.inplace_predict(matrix, validate_features=False)
    except Exception as exc:
        message = f"inference failed: {type(exc).__name__}: {exc}"
        return _response(500, {"error": {"code": "INFERENCE_ERROR", "message": message}})
    results = [
        {"potable": bool(p >= 0.5), "probability": round(float(p), 6)} for p in probabilities
    ]
    return _response(200, {"results": results})


def readings_to_matrix(readings: list[Any]) -> np.ndarray:
    """An (n, 9) float matrix in the model's feature order, or BadRequest naming what is wrong."""
    rows = []
    for index, reading in enumerate(readings):
        where = f" in reading {index}" if len(readings) > 1 else ""
        if not isinstance(reading, dict):
            raise BadRequest(f"each reading must be an object of measurements{where}")
        missing = [name for name in FEATURES if name not in reading]
        if missing:
            raise BadRequest(f"missing field(s): {', '.join(missing)}{where}")
        bad = [name for name in FEATURES if not _is_number(reading[name])]
        if bad:
            raise BadRequest(f"non-numeric field(s): {', '.join(bad)}{where}")
        rows.append([float(reading[name]) for name in FEATURES])
    return np.asarray(rows, dtype=np.float32)


def _readings(event: Any) -> list[Any]:
    if isinstance(event, dict) and isinstance(event.get("body"), str):
        try:
            event = json.loads(event["body"])
        except json.JSONDecodeError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(event, dict):
        raise BadRequest('send {"readings": [{"ph": ..., ...}]} or a single reading object')
    if "readings" in event:
        readings = event["readings"]
        if not isinstance(readings, list) or not readings:
            raise BadRequest("'readings' must be a non-empty list of reading objects")
        return readings
    return [event]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }
