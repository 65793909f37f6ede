"""Geo-aware photo classification, as an AWS Lambda Python handler.

Event: ``{"image": "<base64 JPEG>"}`` with EXIF GPS tags. ``cell_of`` (the ``key_fn`` of the
``region`` feature in coldbrew.toml) reads the GPS tags with Pillow and names the photo's
1-degree grid cell; coldbrew looks the cell's region up in SQL, through a Redis cache shared by
every instance, before the handler runs (``context.features["region"]``). The handler combines
the region's rainfall and elevation with the photo's colours. A photo without GPS gets the
feature's declared default region.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from PIL import Image, UnidentifiedImageError

MODEL = joblib.load(Path(__file__).resolve().with_name("model.joblib"))
GPS_IFD = 0x8825


class BadRequest(ValueError):
    pass


def _image(event: Any) -> Image.Image:
    if not isinstance(event, dict) or not isinstance(event.get("image"), str):
        raise BadRequest('send {"image": "<base64 JPEG with EXIF GPS>"}')
    try:
        return Image.open(io.BytesIO(base64.b64decode(event["image"], validate=True)))
    except (binascii.Error, ValueError, UnidentifiedImageError) as exc:
        raise BadRequest(f"not a readable image: {type(exc).__name__}") from None


def _degrees(dms: Any, ref: str) -> float:
    d, m, s = (float(v) for v in dms)
    value = d + m / 60 + s / 3600
    return -value if ref in ("S", "W") else value


def gps(image: Image.Image) -> tuple[float, float] | None:
    tags = image.getexif().get_ifd(GPS_IFD)
    try:
        return _degrees(tags[2], tags[1]), _degrees(tags[4], tags[3])
    except (KeyError, TypeError, ValueError):
        return None


def cell_of(event: Any) -> str | None:
    """The feature key: ``N59E010``; None (the default region) without GPS or image."""
    try:
        where = gps(_image(event))
    except BadRequest:
        return None  # the handler answers 400 itself
    if where is None:
        return None
    lat, lon = where
    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    return f"{ns}{abs(math.floor(lat)):02d}{ew}{abs(math.floor(lon)):03d}"


def handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        image = _image(event)
    except BadRequest as exc:
        return _response(400, {"error": {"code": "VALIDATION_ERROR", "message": str(exc)}})
    region = context.features["region"]
    rgb = np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32) / 255
    row = [*rgb.reshape(-1, 3).mean(axis=0).tolist(), float(rgb.mean(axis=2).std())]
    row += [float(region["rainfall"]) / 1000, float(region["elevation"]) / 1000]
    probabilities = MODEL.predict_proba(np.array([row]))[0]
    best = int(np.argmax(probabilities))
    return _response(
        200,
        {
            "label": str(MODEL.classes_[best]),
            "probability": round(float(probabilities[best]), 4),
            "cell": cell_of(event),
            "region": region["region"],
        },
    )


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }
