"""Loading a trace of per-minute invocation counts (Azure Functions 2019 layout).

``*_inv.csv`` holds ``HashFunction,HashApp,HashOwner,minute_1..minute_N``; ``*_mem.csv`` holds
the allocated memory per app (``HashApp,...,AverageAllocatedMb``). Memory is optional: apps
missing from it (or a trace folder without it) get ``default_memory_mb`` so a synthetic trace of
counts alone can be replayed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_MEMORY_MB = 256.0


@dataclass(frozen=True)
class FunctionTrace:
    """One function's invocations per minute, and the memory an instance of it holds."""

    name: str
    app: str
    memory_mb: float
    counts: np.ndarray


@dataclass(frozen=True)
class Trace:
    functions: list[FunctionTrace]
    minutes: int
    source: str

    @property
    def invocations(self) -> int:
        return int(sum(int(f.counts.sum()) for f in self.functions))


def _single(trace_dir: Path, pattern: str) -> Path | None:
    found = sorted(trace_dir.glob(pattern))
    if len(found) > 1:
        raise ValueError(f"several {pattern} files in {trace_dir}: {[p.name for p in found]}")
    return found[0] if found else None


def load_memory(path: Path | None) -> dict[str, float]:
    """Average allocated MB per app, or an empty mapping when there is no memory file."""
    if path is None:
        return {}
    with path.open(newline="") as f:
        return {row["HashApp"]: float(row["AverageAllocatedMb"]) for row in csv.DictReader(f)}


def load_trace(trace_dir: Path, default_memory_mb: float = DEFAULT_MEMORY_MB) -> Trace:
    """Read the invocation counts (and memory, if present) found in ``trace_dir``."""
    inv = _single(trace_dir, "*inv*.csv")
    if inv is None:
        raise FileNotFoundError(f"no *inv*.csv (invocations per minute) in {trace_dir}")
    memory = load_memory(_single(trace_dir, "*mem*.csv"))
    functions: list[FunctionTrace] = []
    with inv.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        minute_cols = [i for i, h in enumerate(header) if h.startswith("minute_")]
        for row in reader:
            counts = np.array([int(float(row[i] or 0)) for i in minute_cols], dtype=np.int64)
            app = row[1]
            functions.append(FunctionTrace(row[0], app, memory.get(app, default_memory_mb), counts))
    return Trace(functions, len(minute_cols), str(trace_dir))
