"""Example 1, licence plates from a live stream, end to end: a generated video of synthetic
US-style plates (Pillow: varied fonts and sizes, noise, blur, small rotations; OpenCV writes the
mp4 and the client reads it back as a camera), sent frame by frame into one stream session; the
instance reads each plate with the PP-OCR ONNX models the rapidocr wheel ships (no download) and
pushes alerts for the stolen ones within the session, each with the vehicle's row from the
stolen-vehicle table, a ``[[features]]`` lookup the handler runs for the plate it
read. A bad frame fails that frame only.

Needs rapidocr and opencv-python-headless (the ``examples`` extra, in the ``test`` extra too):
skips without them, fails under COLDBREW_REQUIRE_SERVICES=1. A few plates keep it quick; the
figures in docs/examples/license-plates.md come from a longer run of this same test:
``COLDBREW_PLATES=200 python -m pytest tests/examples/test_license_plates.py -q -s``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from support import Server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "license_plates"
PLATES = int(os.environ.get("COLDBREW_PLATES", "10"))


def _require(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is not None:
        return
    reason = f"{package} is not installed (pip install -e '.[examples]')"
    if os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (COLDBREW_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def _stolen(texts: list[str]) -> list[str]:
    return texts[1::4]  # one car in four (3 of the default 10)


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(EXAMPLE))
    try:
        spec = importlib.util.spec_from_file_location(f"plates_{name}_under_test", EXAMPLE / name)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(EXAMPLE))


@pytest.fixture(scope="module")
def camera(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, list[str], Path, Path]]:
    _require("rapidocr", "rapidocr")
    _require("cv2", "opencv-python-headless")
    plates = _load("plates.py")
    rng = np.random.default_rng(2026)
    texts = [plates.random_plate(rng) for _ in range(PLATES)]
    tmp = tmp_path_factory.mktemp("plates")
    bundle = tmp / "license_plates"
    shutil.copytree(EXAMPLE, bundle, ignore=shutil.ignore_patterns("stolen.db", "__pycache__"))
    plates.make_stolen_db(bundle / "stolen.db", _stolen(texts))
    video = plates.make_video(tmp / "camera.mp4", texts, seed=7)
    server = Server(tmp / "home")
    server.start()
    try:
        answer = server.deploy_folder("plates", bundle)
        assert answer.status_code == 201, answer.text
        yield server, texts, video, bundle
    finally:
        server.stop()


@pytest.mark.timeout(120 + 3 * PLATES)  # a server start and a cold start, then the plates
def test_plates_read_and_stolen_cars_alerted_within_the_session(
    camera: tuple[Server, list[str], Path, Path],
) -> None:
    server, texts, video, bundle = camera
    client = _load("client.py")
    ws_url = server.url.replace("http://", "ws://")
    messages = client.run(str(video), ws_url, "plates", wait=True, extra=[b"not an image"])
    reads = [m for m in messages if m["type"] == "plate"]
    alerts = [m for m in messages if m["type"] == "alert"]
    errors = [m for m in messages if m["type"] == "frame_error"]
    assert not [m for m in messages if m["type"] == "lookup_error"], messages
    assert len(reads) == PLATES, messages[-3:]
    exact = sum(m["plate"] == t for m, t in zip(reads, texts, strict=True)) / PLATES
    handler_ms = sorted(m["ms"] for m in reads[1:])  # the first includes loading the OCR
    cpu_ms = sorted(m["cpu_ms"] for m in reads[1:])
    e2e_ms = sorted(m["latency_ms"] for m in reads[1:])

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q / 100 * len(values)))]

    print(
        f"\nplates: {PLATES}, exact {exact:.3f}; per plate in the handler"
        f" p50 {pct(handler_ms, 50):.0f} ms p95 {pct(handler_ms, 95):.0f} ms"
        f" (CPU p50 {pct(cpu_ms, 50):.0f} ms p95 {pct(cpu_ms, 95):.0f} ms);"
        f" client to answer p50 {pct(e2e_ms, 50):.0f} ms"
        f" p95 {pct(e2e_ms, 95):.0f} ms; first frame {reads[0]['latency_ms']:.0f} ms"
    )
    assert exact >= 0.9
    assert sorted(a["plate"] for a in alerts) == sorted(_stolen(texts))
    # Each alert carries the vehicle's row, looked up through the declared [[features]] table
    # (context.features.lookup in the handler): the table is in the deployed bundle only.
    with sqlite3.connect(f"file:{bundle / 'stolen.db'}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        table = {r["plate"]: {**r} for r in db.execute("select * from stolen")}
    for alert in alerts:
        row = table[alert["plate"]]
        assert alert["vehicle"] == {k: row[k] for k in ("make", "model", "colour", "reported")}
    assert len(errors) == 1 and errors[0]["frame"] == PLATES  # the bad frame, and only it
    assert pct(e2e_ms, 95) < 3000  # the seed accepted 3-5 s a plate
