"""Licence-plate recognition over a stream session, one session per camera.

``stream(frames, context)`` gets the camera's frames (binary WebSocket frames, each a JPEG or
PNG), finds and reads plate text with the PP-OCR ONNX models that ``rapidocr`` (3.10) ships in
its package (no download), looks each plate up in the stolen-vehicle table through the data
layer (``context.features.lookup("stolen", plate)``: the ``[[features]]`` table of coldbrew.toml,
SQLite ``stolen.db`` in the bundle, cached in the instance) and yields, per frame,
``{"type": "plate", ...}`` and for a stolen vehicle ``{"type": "alert", "plate": ...,
"vehicle": {...}}``. A frame that cannot be decoded yields
``{"type": "frame_error", ...}`` and the session goes on (``BAD_FRAME=fail`` ends it instead).
With ``stream_max_pending = 1`` in coldbrew.toml a camera faster than the OCR gets its newest
frame read, never a growing backlog.

``handler(event, context)`` reads one image (``{"image": "<base64>"}``) the same way.
"""

from __future__ import annotations

import base64
import io
import os
import re
import time
from typing import Any

import numpy as np
from PIL import Image

PLATE = re.compile(r"^[A-Z0-9]{5,8}$")
FORMATS = ("DLLLDDD", "LLLDDDD")  # 7ABC123 (California), ABC1234
AS_DIGIT = str.maketrans("OIZSB", "01258")
AS_LETTER = str.maketrans("01258", "OIZSB")


def fix(text: str) -> str:
    """OCR's usual confusions (O/0, I/1...) undone where the plate format says which it is:
    the format needing the fewest changes (at most 2) wins; none needed, the text stays."""
    if len(text) != 7:
        return text
    best, changes = text, 3
    for layout in FORMATS:
        fixed = "".join(
            c.translate(AS_DIGIT if kind == "D" else AS_LETTER)
            for c, kind in zip(text, layout, strict=True)
        )
        fits = all(c.isdigit() == (kind == "D") for c, kind in zip(fixed, layout, strict=True))
        n = sum(a != b for a, b in zip(fixed, text, strict=True))
        if fits and n < changes:
            best, changes = fixed, n
    return best


_engine: Any = None


def engine() -> Any:
    """The OCR, made on first use in each instance (its ONNX sessions are not shared across a
    fork); one thread: more instances, not more threads, for more cameras."""
    global _engine
    if _engine is None:
        from rapidocr import RapidOCR

        _engine = RapidOCR(
            params={
                "Global.log_level": "warning",
                "Global.use_cls": False,  # plates are upright: no 180-degree classifier
                # Detection is most of the time: a frame's long side at 320 px is 4x fewer
                # pixels than 640 and still reads 44-64 px plate text (120 of 120 plates).
                "Det.limit_side_len": 320,
                "Det.limit_type": "max",
                "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
        )
    return _engine


def stolen(plate: str | None, context: Any) -> dict[str, Any] | None:
    """The vehicle's row if the plate is in the stolen-vehicle table, else None: the
    ``[[features]]`` lookup ``stolen`` of coldbrew.toml, run for the plate just read (the data
    layer's cache, single flight and timeout; docs/DATA.md)."""
    return context.features.lookup("stolen", plate) if plate else None


def read_plate(data: bytes) -> tuple[str | None, float, float, float]:
    """``(plate text or None, confidence, milliseconds, CPU milliseconds)`` of one image: on a
    busy machine the wall time includes waiting for a core, the CPU time does not."""
    started, cpu = time.perf_counter(), time.thread_time()
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    found = engine()(pixels)
    best, score = None, 0.0
    for text, confidence in zip(found.txts or (), found.scores or (), strict=True):
        text = fix(re.sub(r"[^A-Z0-9]", "", text.upper()))
        if PLATE.match(text) and float(confidence) > score:
            best, score = text, float(confidence)
    return best, score, (time.perf_counter() - started) * 1000, (time.thread_time() - cpu) * 1000


def stream(frames: Any, context: Any) -> Any:
    for n, frame in enumerate(frames):
        data = frame if isinstance(frame, bytes) else base64.b64decode(frame)
        try:
            plate, confidence, ms, cpu_ms = read_plate(data)
        except Exception as exc:  # one bad frame fails that frame, not the session
            if os.environ.get("BAD_FRAME") == "fail":
                raise
            yield {"type": "frame_error", "frame": n, "error": f"{type(exc).__name__}: {exc}"}
            continue
        yield {
            "type": "plate",
            "frame": n,
            "plate": plate,
            "confidence": confidence,
            "ms": ms,
            "cpu_ms": cpu_ms,
        }
        try:
            vehicle = stolen(plate, context)
        except Exception as exc:  # the table did not answer in time: this frame, not the session
            yield {"type": "lookup_error", "frame": n, "plate": plate, "error": str(exc)}
            continue
        if vehicle:
            yield {"type": "alert", "frame": n, "plate": plate, "vehicle": vehicle}


def handler(event: Any, context: Any) -> dict[str, Any]:
    plate, confidence, ms, cpu_ms = read_plate(base64.b64decode(event["image"]))
    return {
        "plate": plate,
        "confidence": confidence,
        "ms": ms,
        "cpu_ms": cpu_ms,
        "stolen": stolen(plate, context),
    }
