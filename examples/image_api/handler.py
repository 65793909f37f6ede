"""An image classification API, as an AWS Lambda Python handler (numpy and Pillow only).

Event: ``{"image": "<base64 PNG/JPEG/...>"}``, or an API Gateway proxy event whose body is that
JSON or the raw image bytes (``isBase64Encoded``). Any size and mode: the image is converted to
grayscale and resized to 64x64 with Pillow, as the model was trained.
Response: a proxy response whose body is ``{"label": 3, "probability": 0.98, "top3": [...]}``;
400 ``VALIDATION_ERROR`` for a missing or undecodable image, 500 ``INFERENCE_ERROR`` otherwise.

The model (``model.npz``, ~100 MB, built by train.py) is loaded once per process at import, the
Lambda way; coldbrew loads it in a version template, so forked instances share its pages.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

SIDE = 64
MAX_PIXELS = 20_000_000  # a decompression bomb is a 400, not an out-of-memory instance
MODEL_PATH = Path(__file__).resolve().with_name("model.npz")
if not MODEL_PATH.is_file():
    raise FileNotFoundError(
        f"{MODEL_PATH.name} is not in the bundle: run `python examples/image_api/train.py` first"
    )
with np.load(MODEL_PATH) as _model:
    W, B, C, CLASSES = _model["W"], _model["b"], _model["C"], _model["classes"]
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class BadRequest(ValueError):
    """The event is malformed; reported as 400 rather than as a failure of the function."""


def handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        pixels = preprocess(_image_bytes(event))
    except BadRequest as exc:
        return _response(400, {"error": {"code": "VALIDATION_ERROR", "message": str(exc)}})
    try:
        probabilities = predict(pixels)
    except Exception as exc:
        message = f"inference failed: {type(exc).__name__}: {exc}"
        return _response(500, {"error": {"code": "INFERENCE_ERROR", "message": message}})
    order = np.argsort(probabilities)[::-1]
    top3 = [
        {"label": int(CLASSES[i]), "probability": round(float(probabilities[i]), 4)}
        for i in order[:3]
    ]
    return _response(
        200, {"label": top3[0]["label"], "probability": top3[0]["probability"], "top3": top3}
    )


def preprocess(data: bytes) -> np.ndarray:
    """Decoded, grayscale, 64x64, scaled to [0, 1]: a (4096,) float32 vector."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("L").resize((SIDE, SIDE), Image.BILINEAR)
    except UnidentifiedImageError:
        raise BadRequest("not a readable image: send a PNG, JPEG, GIF, BMP or WebP") from None
    except (Image.DecompressionBombError, OSError) as exc:
        raise BadRequest(f"not a readable image: {exc}") from None
    return np.asarray(image, dtype=np.float32).ravel() / np.float32(255)


def predict(pixels: np.ndarray) -> np.ndarray:
    """One random-feature layer (ReLU) and a linear head trained on it; softmax of the scores."""
    hidden = np.maximum(pixels @ W + B, 0)
    scores = hidden @ C
    scores = np.exp((scores - scores.max()) * 4)  # the head is a ridge fit to +-1 targets
    return scores / scores.sum()


def _image_bytes(event: Any) -> bytes:
    if isinstance(event, dict) and isinstance(event.get("body"), str):
        body = event["body"]
        if event.get("isBase64Encoded"):
            raw = _b64(body)
            if not raw.lstrip().startswith(b"{"):
                return raw  # the raw image, as API Gateway passes a binary body
            body = raw.decode("utf-8", "replace")
        try:
            event = json.loads(body)
        except json.JSONDecodeError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(event, dict) or not isinstance(event.get("image"), str):
        raise BadRequest('send {"image": "<base64-encoded PNG or JPEG>"}')
    return _b64(event["image"])


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"image is not valid base64: {exc}") from None


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(body),
    }
