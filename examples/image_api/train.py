"""Train the image-api example: a handwritten-digit classifier of about 100 MB, offline.

Data: scikit-learn's bundled digits (1,797 8x8 grayscale images, no download), upsampled with
Pillow to 64x64, the size the handler resizes every uploaded image to. Four of every five
images train the model; the fifth (``held_out()``) are for measuring it.

Model, and why it is ~100 MB honestly: one dense random-feature layer of 4,096 x 6,144 float32
weights (seeded Gaussian, ReLU; 100.7 MB) and a linear head fitted on it by ridge regression
(in its dual form, so the fit is one 1,437 x 1,437 solve). Every prediction multiplies by the
whole matrix, so an instance pays what any dense 100 MB model costs at inference: reading
100 MB of weights per image (tens of ms on one core). The weights are random rather than
learned, which is what keeps training to seconds on a laptop; the size, the load time and the
per-request compute are those of a real 100 MB model. Held-out accuracy is about 98%.

``python examples/image_api/train.py`` writes ``model.npz`` next to this file.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

NAME = "image-api"
DESCRIPTION = (
    "Lambda-style bundle: a ~100 MB digit classifier behind a Pillow-preprocessing handler; "
    "send {'image': '<base64 PNG>'} and get the digit with its probability"
)
SIDE = 64
HIDDEN = 6144
SEED = 18
RIDGE = 1e-4  # relative to the mean of the kernel's diagonal


def upsample(image8: np.ndarray, side: int = SIDE) -> Image.Image:
    """One 8x8 digits image (values 0..16) as a ``side`` x ``side`` grayscale Pillow image."""
    pixels = (np.asarray(image8) * (255 / 16)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="L").resize((side, side), Image.BILINEAR)


def features(image: Image.Image) -> np.ndarray:
    """What the handler computes from any image: grayscale, 64x64, [0, 1] (kept identical)."""
    small = image.convert("L").resize((SIDE, SIDE), Image.BILINEAR)
    return np.asarray(small, dtype=np.float32).ravel() / np.float32(255)


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    train = np.arange(len(digits.target)) % 5 != 0
    return digits.images, digits.target, train


def held_out() -> tuple[list[np.ndarray], list[int]]:
    """The 8x8 images (and labels) the model was not fitted on."""
    images, labels, train = split()
    return list(images[~train]), [int(t) for t in labels[~train]]


def png_b64(image: Image.Image, mode: str = "RGB") -> str:
    """An image as a client would send it: a base64 PNG (RGB, as a photo would be)."""
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def build(out_dir: Path) -> Path:
    images, labels, train = split()
    x = np.stack([features(upsample(img)) for img in images[train]])
    rng = np.random.default_rng(SEED)
    w = rng.standard_normal((SIDE * SIDE, HIDDEN), dtype=np.float32)
    w *= np.float32(2 / np.sqrt(SIDE * SIDE))
    b = rng.uniform(-1, 1, HIDDEN).astype(np.float32)
    hidden = np.maximum(x @ w + b, 0)
    kernel = hidden @ hidden.T
    targets = np.eye(10, dtype=np.float32)[labels[train]] * 2 - 1
    ridge = RIDGE * float(np.trace(kernel)) / len(kernel)
    alpha = np.linalg.solve(kernel + ridge * np.eye(len(kernel), dtype=np.float32), targets)
    head = (hidden.T @ alpha).astype(np.float32)
    path = Path(out_dir) / "model.npz"
    np.savez(path, W=w, b=b, C=head, classes=np.arange(10))
    return path


def sample_event() -> dict[str, Any]:
    images, _ = held_out()
    return {"image": png_b64(upsample(images[0], 32))}  # small: quickstart prints it


if __name__ == "__main__":
    print(build(Path(__file__).resolve().parent))
