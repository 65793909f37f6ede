"""A camera: read a video file or an RTSP URL with OpenCV, send each frame as a JPEG into a
stream session, print what comes back.

    python examples/license_plates/client.py VIDEO_OR_RTSP_URL [--url ws://127.0.0.1:8080]
        [--fps 5] [--wait]        # --wait: one frame at a time, each after the last answer

The default --url is the server coldbrew's CLI uses (COLDBREW_URL), as a WebSocket URL.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import cv2  # opencv-python-headless
from websockets.sync.client import connect


def frames(source: str) -> Iterator[bytes]:
    capture = cv2.VideoCapture(source)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if ok:
                yield jpeg.tobytes()
    finally:
        capture.release()


def run(
    source: str,
    url: str,
    name: str = "plates",
    wait: bool = True,
    fps: float = 5.0,
    extra: list[bytes] | None = None,
) -> list[dict[str, Any]]:
    """Every message of the session (``wait``: each frame after the previous frame's answer)."""
    out: list[dict[str, Any]] = []
    with connect(f"{url}/stream/{name}", open_timeout=60, max_size=None) as ws:
        if not wait:  # a live camera: send at its own pace, print answers as they come
            reader = threading.Thread(target=lambda: out.extend(json.loads(m) for m in ws))
            reader.start()
            for data in [*frames(source), *(extra or [])]:
                ws.send(data)
                time.sleep(1 / fps)
            time.sleep(2)  # the last frame's answer
            ws.close()
            reader.join()
            return out
        for data in [*frames(source), *(extra or [])]:
            sent = time.perf_counter()
            ws.send(data)
            while True:
                message = json.loads(ws.recv(timeout=60))
                message["latency_ms"] = (time.perf_counter() - sent) * 1000
                out.append(message)
                if message["type"] in ("plate", "frame_error"):
                    break
                if message["type"] == "end":
                    return out
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    # The server coldbrew's CLI talks to (COLDBREW_URL), as a WebSocket URL.
    server = os.environ.get("COLDBREW_URL", "http://127.0.0.1:8080")
    parser.add_argument("--url", default=re.sub(r"^http", "ws", server))
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--wait", action="store_true")
    args = parser.parse_args()
    for message in run(args.source, args.url, wait=args.wait, fps=args.fps):
        print(json.dumps(message))
