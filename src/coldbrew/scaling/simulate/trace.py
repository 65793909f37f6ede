"""Loading a trace of per-minute invocation counts (Azure Functions 2019 layout).

Two layouts of the invocation file are read, told apart by their header: the vHive "invitro"
samples' ``HashFunction,HashApp,HashOwner,minute_1..minute_N`` (``*_inv.csv``) and the original
dataset's ``HashOwner,HashApp,HashFunction,Trigger,1..1440``
(``invocations_per_function_md.anon.dNN.csv``). Several invocation files in one folder are days
of one trace: they are joined in name order (d01, d02, ...), a function absent on a day counting
zero invocations that day. ``*mem*.csv`` files hold the allocated memory per app
(``HashApp,...,AverageAllocatedMb``). Memory is optional: apps missing from it (or a trace
folder without it) get ``default_memory_mb`` so a synthetic trace of counts alone can be replayed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

DEFAULT_MEMORY_MB = 256.0

SAMPLE_TRACE = Path(__file__).with_name("sample")
"""A small trace shipped with the package (8 functions x one day, sample/*.csv say whence):
the default of ``coldbrew simulate`` and ``coldbrew cost --what-if``."""


def _rows(f: TextIO) -> Iterator[str]:
    """The lines of a CSV file that are not ``#`` comments (the sample trace has a header)."""
    return (line for line in f if not line.startswith("#"))


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


def load_memory(paths: list[Path]) -> dict[str, float]:
    """Average allocated MB per app (the first file that names an app wins)."""
    memory: dict[str, float] = {}
    for path in paths:
        with path.open(newline="") as f:
            for row in csv.DictReader(_rows(f)):
                memory.setdefault(row["HashApp"], float(row["AverageAllocatedMb"]))
    return memory


def _read_day(path: Path) -> tuple[dict[str, tuple[str, np.ndarray]], int]:
    """One invocation file: function -> (app, counts per minute), and its number of minutes."""
    with path.open(newline="") as f:
        reader = csv.reader(_rows(f))
        header = next(reader)
        try:
            function_col, app_col = header.index("HashFunction"), header.index("HashApp")
        except ValueError:
            raise ValueError(f"{path.name}: no HashFunction / HashApp columns") from None
        minute_cols = [
            i for i, h in enumerate(header) if h.startswith("minute_") or h.strip().isdigit()
        ]
        if not minute_cols:
            raise ValueError(f"{path.name}: no per-minute columns (minute_1.. or 1..1440)")
        rows: dict[str, tuple[str, np.ndarray]] = {}
        for row in reader:
            counts = np.array([int(float(row[i] or 0)) for i in minute_cols], dtype=np.int64)
            name = row[function_col]
            if name in rows:  # the same function under two triggers: one function's traffic
                counts = counts + rows[name][1]
            rows[name] = (row[app_col], counts)
    return rows, len(minute_cols)


def load_trace(trace_dir: Path, default_memory_mb: float = DEFAULT_MEMORY_MB) -> Trace:
    """Read the invocation counts (and memory, if present) found in ``trace_dir``."""
    days = sorted(trace_dir.glob("*inv*.csv"))
    if not days:
        raise FileNotFoundError(f"no *inv*.csv (invocations per minute) in {trace_dir}")
    memory = load_memory(sorted(trace_dir.glob("*mem*.csv")))
    read = [_read_day(day) for day in days]
    apps: dict[str, str] = {}
    for rows, _ in read:
        for name, (app, _counts) in rows.items():
            apps.setdefault(name, app)
    functions = [
        FunctionTrace(
            name,
            app,
            memory.get(app, default_memory_mb),
            # A function absent on a day had no invocations that day.
            np.concatenate(
                [rows[name][1] if name in rows else np.zeros(n, np.int64) for rows, n in read]
            ),
        )
        for name, app in apps.items()
    ]
    minutes = sum(n for _, n in read)
    return Trace(functions, minutes, str(trace_dir))
