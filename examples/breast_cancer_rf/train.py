"""Train the breast-cancer example: a random forest saved with joblib.

Deployed as a bare model file, so coldbrew's built-in model handler serves it:
``{"instances": [[30 numbers], ...]}`` → predictions (0 = malignant, 1 = benign) and
probabilities. The data is scikit-learn's bundled copy of the Wisconsin dataset (no download).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier

NAME = "breast-cancer"
DESCRIPTION = (
    "RandomForestClassifier (100 trees) on the Wisconsin breast-cancer dataset, 30 features; "
    "class 0 = malignant, 1 = benign"
)


def build(out_dir: Path) -> Path:
    """Train the forest and write ``<out_dir>/model.joblib``; returns that path."""
    data = load_breast_cancer()
    model = RandomForestClassifier(n_estimators=100, random_state=0)
    model.fit(data.data, data.target)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.joblib"
    joblib.dump(model, path)
    return path


def sample_event() -> dict[str, Any]:
    """The first row of the dataset (a malignant tumour), as the built-in handler takes it."""
    return {"instances": [load_breast_cancer().data[0].tolist()]}


if __name__ == "__main__":
    print(build(Path(__file__).resolve().parent))
