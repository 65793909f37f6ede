"""Train the water-quality example: an XGBoost classifier of drinking-water potability.

The data is SYNTHETIC, generated here with a fixed seed (no download), shaped like the public
"water potability" tables: nine measurements per water sample. The label follows a documented
rule built on WHO-like guideline values, plus noise so the model has something to learn:

* health-based limits, all required: 6.5 <= ph <= 8.5, trihalomethanes <= 80 ug/L,
  turbidity <= 5 NTU;
* aesthetic / operational limits, at most ONE may be exceeded: chloramines <= 4 mg/L,
  sulfate <= 250 mg/L, conductivity <= 400 uS/cm;
* hardness, solids and organic_carbon do not enter the rule (distractor features);
* 5% of labels are flipped at random (measurement and lab noise).

About a quarter of the samples come out potable. The model is saved as a native XGBoost Booster
(``model.json``) that ``handler.py`` loads with xgboost alone, as it would on AWS Lambda.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

NAME = "water-quality"
DESCRIPTION = (
    "Lambda-style bundle: XGBoost potability classifier on a synthetic water-quality table; "
    "send {'readings': [{'ph': ..., ...}]} and get potable yes/no with a probability"
)
FEATURES = (
    "ph",
    "hardness",
    "solids",
    "chloramines",
    "sulfate",
    "conductivity",
    "organic_carbon",
    "trihalomethanes",
    "turbidity",
)
# (mean, standard deviation, lower clip) of each feature, in FEATURES order.
_DISTRIBUTIONS = (
    (7.1, 1.0, 0.0),  # ph
    (196.0, 33.0, 40.0),  # hardness, mg/L
    (22000.0, 8700.0, 300.0),  # solids, ppm
    (3.5, 1.2, 0.3),  # chloramines, mg/L
    (250.0, 60.0, 100.0),  # sulfate, mg/L
    (426.0, 80.0, 180.0),  # conductivity, uS/cm
    (14.0, 3.3, 2.0),  # organic_carbon, mg/L
    (66.0, 16.0, 1.0),  # trihalomethanes, ug/L
    (4.0, 0.8, 1.0),  # turbidity, NTU
)
NOISE = 0.05


def make_dataset(n: int = 4000, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """``(features, labels)``: an (n, 9) float array in FEATURES order and 0/1 labels."""
    rng = np.random.default_rng(seed)
    columns = [np.clip(rng.normal(mean, std, n), low, None) for mean, std, low in _DISTRIBUTIONS]
    x = np.column_stack(columns)
    col = {name: x[:, i] for i, name in enumerate(FEATURES)}
    x[:, 0] = np.clip(col["ph"], 0.0, 14.0)
    health_ok = (
        (col["ph"] >= 6.5)
        & (col["ph"] <= 8.5)
        & (col["trihalomethanes"] <= 80.0)
        & (col["turbidity"] <= 5.0)
    )
    aesthetic_exceeded = (
        (col["chloramines"] > 4.0).astype(int)
        + (col["sulfate"] > 250.0).astype(int)
        + (col["conductivity"] > 400.0).astype(int)
    )
    label = health_ok & (aesthetic_exceeded <= 1)
    flip = rng.random(n) < NOISE
    return np.round(x, 4), (label ^ flip).astype(np.int64)


def build(out_dir: Path, seed: int = 7, filename: str = "model.json") -> Path:
    """Train the classifier and write ``<out_dir>/<filename>``; returns that path. Another
    ``seed`` draws another table: a retrained model, for trying model updates."""
    x, y = make_dataset(seed=seed)
    dtrain = xgb.DMatrix(x, label=y, feature_names=list(FEATURES))
    params = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "max_depth": 4,
        "eta": 0.15,
        "nthread": 1,
        "seed": 0,
    }
    booster = xgb.train(params, dtrain, num_boost_round=150)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    booster.save_model(path)
    return path


def sample_event() -> dict[str, Any]:
    """The first sample of the synthetic table, as the handler takes it."""
    x, _ = make_dataset()
    return {"readings": [dict(zip(FEATURES, x[0].tolist(), strict=True))]}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Train the water-quality model (no download).")
    parser.add_argument("--seed", type=int, default=7, help="another seed: a retrained model")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "model.json")
    args = parser.parse_args()
    print(build(args.out.parent, args.seed, args.out.name))
