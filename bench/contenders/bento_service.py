"""BentoML serving the forest: ``Plain`` (no batching) and ``Batched`` (adaptive batching).

``bentoml serve bento_service:Plain --port P`` from this folder; the model path comes from
``BENCH_MODEL`` and the worker count from ``BENCH_WORKERS``. Both take the same body,
``{"instances": [[...30 floats...]]}``, at ``POST /predict``.
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
import joblib
import numpy as np

WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))


@bentoml.service(workers=WORKERS)
class Plain:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])

    @bentoml.api
    def predict(self, instances: list[list[float]]) -> dict[str, Any]:
        probabilities = self.model.predict_proba(np.asarray(instances, dtype=np.float64))
        return {
            "predictions": self.model.classes_[probabilities.argmax(axis=1)].tolist(),
            "probabilities": probabilities.tolist(),
            "classes": self.model.classes_.tolist(),
        }


@bentoml.service(workers=WORKERS)
class Batched:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=64, max_latency_ms=1000)
    def predict(self, instances: np.ndarray) -> np.ndarray:
        # BentoML concatenates the callers' rows along dim 0 and splits the output back.
        probabilities = self.model.predict_proba(instances)
        return self.model.classes_[probabilities.argmax(axis=1)]
