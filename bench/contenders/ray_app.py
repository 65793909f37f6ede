"""Ray Serve serving the forest, with or without ``@serve.batch``, on one loopback port.

``python ray_app.py --port P [--batch] [--replicas N]`` for throughput, or
``--scale-to-zero`` for the cold-start benchmark (autoscaling with ``min_replicas=0``). Runs
until SIGTERM/SIGINT, then shuts Ray down so no raylet or worker outlives it.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from typing import Any

import joblib
import numpy as np
import ray
from ray import serve
from starlette.requests import Request


def _answer(model: Any, rows: np.ndarray) -> list[dict[str, Any]]:
    probabilities = model.predict_proba(rows)
    classes = model.classes_[probabilities.argmax(axis=1)].tolist()
    return [
        {"predictions": [c], "probabilities": [p], "classes": model.classes_.tolist()}
        for c, p in zip(classes, probabilities.tolist(), strict=True)
    ]


@serve.deployment
class Plain:
    def __init__(self, path: str) -> None:
        self.model = joblib.load(path)

    async def __call__(self, request: Request) -> dict[str, Any]:
        rows = np.asarray((await request.json())["instances"], dtype=np.float64)
        probabilities = self.model.predict_proba(rows)
        return {
            "predictions": self.model.classes_[probabilities.argmax(axis=1)].tolist(),
            "probabilities": probabilities.tolist(),
            "classes": self.model.classes_.tolist(),
        }


@serve.deployment
class Batched:
    def __init__(self, path: str) -> None:
        self.model = joblib.load(path)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def predict(self, rows: list[list[float]]) -> list[dict[str, Any]]:
        return _answer(self.model, np.asarray(rows, dtype=np.float64))

    async def __call__(self, request: Request) -> dict[str, Any]:
        instances = (await request.json())["instances"]
        return await self.predict(instances[0])  # the benchmark sends one row per request


def _write_replicas(path: str, deployment: str) -> None:
    """How many replicas run, for a benchmark outside this Ray cluster to wait on."""
    try:
        states = serve.status().applications["forest"].deployments[deployment].replica_states
        running = sum(states.values())
    except Exception:  # not deployed yet, or shutting down
        return
    with open(path + ".tmp", "w") as out:
        out.write(str(running))
    os.replace(path + ".tmp", path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default=os.environ.get("BENCH_MODEL"))
    parser.add_argument("--batch", action="store_true")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--scale-to-zero", action="store_true")
    parser.add_argument("--downscale-delay-s", type=float, default=2.0)
    parser.add_argument(
        "--status-file", default=None, help="kept up to date with the number of running replicas"
    )
    args = parser.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        deployment = Batched if args.batch else Plain
        if args.scale_to_zero:
            deployment = deployment.options(
                autoscaling_config={
                    "min_replicas": 0,
                    "initial_replicas": 0,
                    "max_replicas": 1,
                    "upscale_delay_s": 0,
                    "downscale_delay_s": args.downscale_delay_s,
                    "downscale_to_zero_delay_s": args.downscale_delay_s,
                }
            )
        else:
            deployment = deployment.options(num_replicas=args.replicas)
        serve.run(deployment.bind(args.model), name="forest", route_prefix="/predict")
        print("READY", flush=True)
        while not stop.wait(0.2):
            if args.status_file:
                _write_replicas(args.status_file, deployment.name)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
