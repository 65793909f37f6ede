"""OCR engines side by side on the licence-plate example's generated plates (CPU ms per plate).

The engines run in one process, interleaved plate by plate, so each sees the same load; CPU time
(``time.thread_time``) of one ONNX thread, first call (model load) excluded. Needs both packages,
which cannot share an environment normally (rapidocr-onnxruntime requires GUI OpenCV), so in a
throwaway venv (docs/examples/license-plates.md):

    python -m venv /tmp/ocrvenv && . /tmp/ocrvenv/bin/activate
    pip install "rapidocr==3.10.*" onnxruntime
    pip install --no-deps "rapidocr-onnxruntime==1.4.4"
    python bench/ocr_plates.py --plates 40
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "license_plates"))
import plates
from handler import PLATE, fix

Engine = Callable[[np.ndarray], list[tuple[str, float]]]


def rapidocr3(side: int) -> Engine:
    from rapidocr import RapidOCR

    engine = RapidOCR(
        params={
            "Global.log_level": "warning",
            "Global.use_cls": False,
            "Det.limit_side_len": side,
            "Det.limit_type": "max",
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )

    def run(image: np.ndarray) -> list[tuple[str, float]]:
        out = engine(image)
        return list(zip(out.txts or (), out.scores or (), strict=True))

    return run


def rapidocr_onnxruntime(side: int) -> Engine:
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(
        det_limit_side_len=side,
        det_limit_type="max",
        intra_op_num_threads=1,
        inter_op_num_threads=1,
    )

    def run(image: np.ndarray) -> list[tuple[str, float]]:
        found, _ = engine(image, use_cls=False)
        return [(text, float(score)) for _box, text, score in found or []]

    return run


def best_plate(found: list[tuple[str, float]]) -> str | None:
    best, score = None, 0.0
    for text, confidence in found:
        text = fix(re.sub(r"[^A-Z0-9]", "", text.upper()))
        if PLATE.match(text) and confidence > score:
            best, score = text, confidence
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plates", type=int, default=40)
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    texts = [plates.random_plate(rng) for _ in range(args.plates)]
    render_rng = np.random.default_rng(7)
    images = [np.asarray(plates.render(t, render_rng)) for t in texts]
    engines = {
        "rapidocr 3.10, PP-OCRv6 small, side 320": rapidocr3(320),
        "rapidocr 3.10, PP-OCRv6 small, side 640": rapidocr3(640),
        "rapidocr-onnxruntime 1.4.4, PP-OCRv4, side 640": rapidocr_onnxruntime(640),
        "rapidocr-onnxruntime 1.4.4, PP-OCRv4, side 320": rapidocr_onnxruntime(320),
    }
    cpu: dict[str, list[float]] = {name: [] for name in engines}
    exact = dict.fromkeys(engines, 0)
    for run in engines.values():
        run(images[0])  # loads the models
    for text, image in zip(texts, images, strict=True):
        for name, run in engines.items():
            started = time.thread_time()
            found = run(image)
            cpu[name].append((time.thread_time() - started) * 1000)
            exact[name] += best_plate(found) == text
    print("| engine | exact | CPU p50 | CPU p95 |\n|---|---:|---:|---:|")
    for name, values in cpu.items():
        values.sort()
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
        median = statistics.median(values)
        print(f"| {name} | {exact[name]} / {len(texts)} | {median:.0f} | {p95:.0f} |")


if __name__ == "__main__":
    main()
