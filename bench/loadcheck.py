"""Correctness under load: does every caller of a batched model get the answer to its own row?

Deploys a model to a fresh ``coldbrew serve`` (batching ``auto``, 2 instances), then sends
``--requests`` one-row invocations from ``--connections`` concurrent clients, each row different,
and compares every answer with the prediction the model's own library makes in this process for
that row. A batched result that went back to the wrong caller, a lost answer or an error fails
the run. This is a check, not a benchmark: it prints the mismatches and how many calls shared a
batch, and exits 1 on any mismatch.

    python bench/loadcheck.py                                    # the breast-cancer forest
    python bench/loadcheck.py --model my_model.joblib --trust    # any scikit-learn estimator
    python bench/loadcheck.py --model my_model.onnx              # any ONNX model with one input

Rows for a model of your own are random (seeded) values of the width the model expects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchModel, Coldbrew, managed, train_forest, write_bundle


class Reference:
    """The model as its own library predicts it: the answers every response must match."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.suffix == ".onnx":
            import onnxruntime

            self.session = onnxruntime.InferenceSession(str(path))
            shape = self.session.get_inputs()[0].shape
            self.width = int(shape[1])
        else:
            import joblib

            self.estimator = joblib.load(path)
            self.width = int(self.estimator.n_features_in_)

    def predictions(self, rows: np.ndarray) -> list[Any]:
        if self.path.suffix == ".onnx":
            name = self.session.get_inputs()[0].name
            outputs = self.session.run(None, {name: rows.astype(np.float32)})
            return np.asarray(outputs[0]).reshape(len(rows), -1)[:, 0].tolist()
        return np.asarray(self.estimator.predict(rows)).tolist()


def make_rows(width: int, count: int, seed: int, breast_cancer: bool) -> np.ndarray:
    """Real rows (cycled) for the default model, random ones of the right width for yours."""
    if breast_cancer:
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer().data
        return np.asarray([data[i % len(data)] for i in range(count)], dtype=np.float64)
    return np.random.default_rng(seed).normal(0.0, 3.0, size=(count, width))


def same(got: Any, want: Any) -> bool:
    """Labels exactly; numbers to 1e-6 relative (an ONNX regressor here may sum its trees in
    another order than the single-threaded instance)."""
    if isinstance(want, float) and isinstance(got, (int, float)):
        return math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)
    return bool(got == want)


async def drive(
    url: str, rows: np.ndarray, expected: list[Any], connections: int
) -> tuple[list[str], Counter[int]]:
    """Send every row once, ``connections`` at a time; the mismatches and the batch sizes."""
    mismatches: list[str] = []
    batch_sizes: Counter[int] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(rows)):
        queue.put_nowait(index)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            body = json.dumps({"instances": [rows[index].tolist()]})
            response = await client.post(
                url, content=body, headers={"content-type": "application/json"}
            )
            if response.status_code != 200:
                mismatches.append(f"row {index}: HTTP {response.status_code} {response.text[:200]}")
                continue
            batch_sizes[int(response.headers.get("x-coldbrew-batch-size", "1"))] += 1
            got = response.json().get("predictions")
            if not (isinstance(got, list) and len(got) == 1 and same(got[0], expected[index])):
                mismatches.append(f"row {index}: expected {expected[index]!r}, got {got!r}")

    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(connections)))
    return mismatches, batch_sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a joblib/pickle estimator or an ONNX model")
    parser.add_argument("--trust", action="store_true", help="the model is a pickle you made")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cb-loadcheck-") as tmp, managed(Path(tmp)) as procs:
        work = Path(tmp)
        model_path = args.model.resolve() if args.model else train_forest(work / "model").path
        trusted = args.trust or args.model is None
        reference = Reference(model_path)
        rows = make_rows(reference.width, args.requests, args.seed, args.model is None)
        expected = reference.predictions(rows)
        server = Coldbrew(procs, work / "home")
        config = 'max_instances = 2\n[batching]\nmode = "auto"\n'
        if trusted:
            config = "trust_pickle = true\n" + config
        model = BenchModel("loadcheck", model_path, rows[0].tolist(), expected[0])
        bundle = write_bundle(work / "bundle", model, config)
        server.deploy("loadcheck", bundle)
        url = f"{server.url}/v1/functions/loadcheck/invoke"
        mismatches, sizes = asyncio.run(drive(url, rows, expected, args.connections))
    answered = sum(sizes.values())
    batched = sum(count for size, count in sizes.items() if size > 1)
    print(
        f"{args.requests} one-row invocations over {args.connections} connections: "
        f"{answered} answered, {batched} of them in batches of 2 or more "
        f"(largest batch {max(sizes) if sizes else 0}), {len(mismatches)} wrong or failed"
    )
    for line in mismatches[:20]:
        print("  " + line)
    sys.exit(1 if mismatches or answered != args.requests else 0)


if __name__ == "__main__":
    main()
