"""The plain baseline: the forest in-process behind FastAPI, served by uvicorn.

Run by ``bench/throughput.py`` as ``uvicorn fastapi_app:app --workers N``; the model path comes
from ``BENCH_MODEL``. The handler is a plain ``def`` (FastAPI runs it in its thread pool), which
is how such services are usually written.
"""

from __future__ import annotations

import os
from typing import Any

import joblib
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
model = joblib.load(os.environ["BENCH_MODEL"])


class Body(BaseModel):
    instances: list[list[float]]


@app.post("/predict")
def predict(body: Body) -> dict[str, Any]:
    probabilities = model.predict_proba(body.instances)
    return {
        "predictions": model.classes_[probabilities.argmax(axis=1)].tolist(),
        "probabilities": probabilities.tolist(),
        "classes": model.classes_.tolist(),
    }
