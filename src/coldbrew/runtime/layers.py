"""The instance side of dependency layers (built at deploy by ``coldbrew.deploy.layers``).

The layer goes on ``sys.path`` before the model loads (a pickled model may name its classes)
and before the handler imports, right after the bundle folder, as Lambda puts ``/opt/python``
after ``/var/task``. A package in the layer that this process has already imported from
elsewhere would be silently ignored (``import`` returns what ``sys.modules`` holds), so that is
a load error naming the module, not a version that quietly runs the runtime's copy instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SKIPPED_SUFFIXES = (".dist-info", ".data", ".egg-info", ".pth", ".json", ".txt")


class LayerError(Exception):
    """The layer is missing or cannot take effect in this process."""


def top_level_names(layer: Path) -> set[str]:
    """Importable top-level names a layer folder provides (packages, modules, extensions)."""
    names = set()
    for entry in os.listdir(layer):
        if entry.startswith((".", "_")) or entry.endswith(SKIPPED_SUFFIXES) or entry == "bin":
            continue
        names.add(entry.split(".")[0])
    return names


def shadowed(layer: Path) -> list[str]:
    """Modules the layer provides that are already imported from somewhere else."""
    found = []
    for name in sorted(top_level_names(layer)):
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) if module is not None else None
        if origin and not Path(origin).resolve().is_relative_to(layer.resolve()):
            found.append(f"{name} (already imported from {Path(origin).parent})")
    return found


def enter_layer(layer: str | None) -> None:
    """Put ``layer`` on ``sys.path`` for this process; raises LayerError when it cannot work."""
    if not layer:
        return
    path = Path(layer)
    if not path.is_dir():
        raise LayerError(f"the dependency layer {path.name[:12]} is missing; deploy again")
    problems = shadowed(path)
    if problems:
        raise LayerError(
            "the dependency layer cannot take effect: the runtime has already imported "
            + ", ".join(problems)
        )
    if layer not in sys.path:
        sys.path.insert(0, layer)
