"""Water potability, as an AWS Lambda Python handler.

This file uses only numpy and xgboost (no coldbrew imports) so the same bundle runs unchanged
on AWS Lambda and on coldbrew. The model is loaded once per process at import time, the Lambda
way; coldbrew does that in a version template, so forked instances start with it ready.

Event: ``{"readings": [{"ph": 7.1, "hardness": 204.9, ...}, ...]}`` or one reading on its own
``{"ph": 7.1, ...}``; an API Gateway proxy event with that JSON in ``body`` works too.
Response: a proxy response whose body is ``{"results": [{"potable": bool, "probability": p}],
"model": "<where the model came from>"}``.

Where the model comes from, as the seed's Lambda did it:

- a model file in the bundle (``model.json``, or the one ``coldbrew deploy NAME --model
  new.json`` put there) is loaded at import;
- otherwise ``MODEL_S3_URI=s3://bucket/key`` names it in S3 (or any S3-compatible store: boto3
  reads ``AWS_ENDPOINT_URL_S3``): it is downloaded once to ``/tmp`` (a file per URI and ETag,
  reused by every later instance on the machine) and kept in memory by the instance. boto3 is
  imported only then, so the bundled-model case needs numpy and xgboost alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
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
HERE = Path(__file__).resolve().parent


def _bundled_model() -> Path | None:
    """``model.json``, else the one XGBoost model file a ``deploy --model`` left in the bundle."""
    if (HERE / "model.json").is_file():
        return HERE / "model.json"
    found = sorted(p for p in HERE.iterdir() if p.suffix in (".json", ".ubj") and p.is_file())
    return found[0] if len(found) == 1 else None


def _load(path: Path) -> xgb.Booster:
    # One thread: the platform runs more instances for more throughput, and an OpenMP pool
    # started here would not survive the fork that creates instances from a template.
    booster = xgb.Booster(params={"nthread": 1}, model_file=str(path))
    booster.set_param({"nthread": 1})
    return booster


MODEL_PATH = _bundled_model()
BOOSTER: xgb.Booster | None = _load(MODEL_PATH) if MODEL_PATH is not None else None
MODEL_SOURCE = f"bundle:{MODEL_PATH.name}" if MODEL_PATH is not None else None
if BOOSTER is None and not os.environ.get("MODEL_S3_URI"):
    raise FileNotFoundError(
        "no model: put model.json in the bundle (python examples/water_quality/train.py) "
        "or set MODEL_S3_URI=s3://bucket/key"
    )


def model() -> xgb.Booster:
    """The booster: the bundle's, else MODEL_S3_URI's, fetched once (cached in /tmp, kept in
    memory by this instance)."""
    global BOOSTER, MODEL_SOURCE
    if BOOSTER is not None:
        return BOOSTER
    import boto3  # only for a model in S3 (the s3 extra, or dependencies = ["boto3"])

    uri = os.environ["MODEL_S3_URI"]
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")  # AWS_ENDPOINT_URL_S3 points it at an S3-compatible store
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    name = hashlib.sha256(f"{uri}@{etag}".encode()).hexdigest()[:24]
    cached = Path(tempfile.gettempdir()) / f"water-quality-{name}.json"
    if not cached.is_file():
        partial = cached.with_suffix(f".{os.getpid()}.part")
        s3.download_file(bucket, key, str(partial))
        os.replace(partial, cached)  # atomic: a concurrent instance never reads half a file
    BOOSTER, MODEL_SOURCE = _load(cached), f"{uri}@{etag}"
    return BOOSTER


class BadRequest(ValueError):
    """The event is malformed; reported as 400 rather than as a failure of the function."""


def handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        matrix = readings_to_matrix(_readings(event))
    except BadRequest as exc:
        return _response(400, {"error": {"code": "VALIDATION_ERROR", "message": str(exc)}})
    try:
        probabilities = model().inplace_predict(matrix, validate_features=False)
    except Exception as exc:
        message = f"inference failed: {type(exc).__name__}: {exc}"
        return _response(500, {"error": {"code": "INFERENCE_ERROR", "message": message}})
    results = [
        {"potable": bool(p >= 0.5), "probability": round(float(p), 6)} for p in probabilities
    ]
    return _response(200, {"results": results, "model": MODEL_SOURCE})


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
