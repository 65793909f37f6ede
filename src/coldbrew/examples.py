"""The bundled examples, built on demand (``coldbrew quickstart`` deploys them).

Models are not shipped: each example folder has a ``train.py`` exposing ``NAME``,
``DESCRIPTION``, ``build(out_dir) -> Path`` and ``sample_event() -> dict``, trained from
scikit-learn's bundled datasets or seeded synthetic data, so building needs no network. A folder
with a ``coldbrew.toml`` is a bundle (deploy the folder); otherwise the built model file is
deployed on its own and served by the built-in model handler.

Building trains models in the calling process (XGBoost and BLAS may start thread pools), so call
it from the CLI, never from a template process that forks afterwards.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import coldbrew

__all__ = ["Example", "build_examples", "examples_root", "list_example_dirs"]

_GENERATED = (
    "model.joblib",
    "model.onnx",
    "model.json",
    "model.ubj",
    "model.npz",
    "__pycache__",
    "*.pyc",
)
EXTRA = ("image_api",)
"""Examples only ``coldbrew quickstart --all`` builds: larger (image_api's model is ~100 MB),
each with its own page in docs/examples/."""
NEEDS_SERVICES = ("geo_photos",)
"""Examples that need a database and a cache set up first (docs/examples/geo-photos.md): never
built by the quickstart."""


@dataclass(frozen=True)
class Example:
    """One built example, ready to deploy."""

    name: str
    path: Path
    """The model file for bare models, the bundle folder for bundles."""
    sample_event: dict[str, Any]
    """A real row of the training data, so its prediction means something."""
    description: str


def examples_root() -> Path:
    """The installed copy (wheel: ``coldbrew/_examples``), else the repo's ``examples/``."""
    installed = Path(coldbrew.__file__).resolve().parent / "_examples"
    if installed.is_dir():
        return installed
    return Path(coldbrew.__file__).resolve().parents[2] / "examples"


def list_example_dirs(root: Path | None = None, include_extra: bool = False) -> list[Path]:
    """Example folders (those with a ``train.py``), in a stable order; the EXTRA ones too
    with ``include_extra``."""
    root = root or examples_root()
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir()
        and (p / "train.py").is_file()
        and p.name not in NEEDS_SERVICES
        and (include_extra or p.name not in EXTRA)
    )


def build_examples(dest: Path, include_extra: bool = False) -> list[Example]:
    """Copy every example into ``dest/<folder>``, train its model there, and describe it.

    Models already present in the source folder (from running a train.py by hand) are not
    copied: every build retrains, so ``dest`` never holds a stale model."""
    dest.mkdir(parents=True, exist_ok=True)
    built = []
    for source in list_example_dirs(include_extra=include_extra):
        target = dest / source.name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(*_GENERATED))
        built.append(_build_one(target))
    return built


def _build_one(folder: Path) -> Example:
    train = _import_file(folder / "train.py", f"coldbrew_example_{folder.name}_train")
    model_path = Path(train.build(folder))
    is_bundle = (folder / "coldbrew.toml").is_file()
    return Example(
        name=train.NAME,
        path=folder if is_bundle else model_path,
        sample_event=train.sample_event(),
        description=train.DESCRIPTION,
    )


def _import_file(path: Path, module_name: str) -> ModuleType:
    """Import a script by path without putting its folder on sys.path (examples may share
    module names such as ``train``)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
