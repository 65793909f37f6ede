"""Train the digits example: scaler + logistic regression, exported to ONNX with skl2onnx.

Deployed as a bare ``model.onnx``: onnxruntime runs it with one thread per instance. The
probabilities are exported as a plain tensor (``zipmap=False``), which is cheaper to serve than
a list of per-row dicts. Data: scikit-learn's bundled 8x8 digits (64 features, values 0-16).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

NAME = "digits"
DESCRIPTION = (
    "StandardScaler + LogisticRegression on the 8x8 digits dataset (64 pixel features, 0-16), "
    "exported to ONNX; predicts the digit 0-9"
)


def build(out_dir: Path) -> Path:
    """Train the pipeline and write ``<out_dir>/model.onnx``; returns that path."""
    data = load_digits()
    features = data.data.astype("float32")
    classifier = LogisticRegression(max_iter=2000)
    pipeline = make_pipeline(StandardScaler(), classifier)
    pipeline.fit(features, data.target)
    onnx_model = to_onnx(
        pipeline,
        features[:1],
        options={id(classifier): {"zipmap": False}},
        target_opset=17,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    return path


def sample_event() -> dict[str, Any]:
    """The first image of the dataset (a zero), as the built-in handler takes it."""
    return {"instances": [load_digits().data[0].tolist()]}


if __name__ == "__main__":
    print(build(Path(__file__).resolve().parent))
