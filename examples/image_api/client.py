"""Send held-out digits to the image API as PNG uploads, from 8 concurrent HTTP clients, and
print the latency percentiles and the accuracy.

    python examples/image_api/client.py [--url http://127.0.0.1:8080] [--requests 400]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import held_out, png_b64, upsample


def run(url: str, requests: int, concurrency: int = 8, name: str = "image-api") -> dict[str, Any]:
    images, labels = held_out()
    bodies = [json.dumps({"image": png_b64(upsample(img, 256))}) for img in images]
    endpoint = f"{url}/v1/functions/{name}/invoke"

    def worker(k: int) -> list[tuple[float, bool, int]]:
        out = []
        with httpx.Client(timeout=30) as client:  # one connection per client, kept alive
            for i in range(k, requests, concurrency):
                j = i % len(bodies)
                t0 = time.perf_counter()
                response = client.post(
                    endpoint, content=bodies[j], headers={"content-type": "application/json"}
                )
                ms = (time.perf_counter() - t0) * 1000
                ok = response.status_code == 200 and response.json()["label"] == labels[j]
                out.append((ms, ok, response.status_code))
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for part in pool.map(worker, range(concurrency)) for r in part]
    wall = time.perf_counter() - started
    latencies = sorted(ms for ms, _, _ in results)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))]

    return {
        "requests": len(results),
        "concurrency": concurrency,
        "errors": sum(1 for _, _, status in results if status != 200),
        "accuracy": sum(ok for _, ok, _ in results) / len(results),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": latencies[-1],
        "throughput_per_s": len(results) / wall,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(run(args.url, args.requests, args.concurrency), indent=2))
