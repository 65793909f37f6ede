"""What a version's input drift is measured against (docs/DATA.md), first found wins:

1. ``[quality] reference = "reference.jsonl"``: a bundle file of events, one JSON per line
   (a reference set given at deploy);
2. ``[validation] sample = "validation.csv"``: the deploy's validation sample, a bundle file of
   rows: CSV with a header, or JSON lines of events. A CSV column is a feature by its header
   name (matching the events' top-level numbers) and by its position ``x<i>`` (matching column
   ``i`` of the built-in handler's ``instances`` rows), so one file fits either event shape;
   non-numeric cells are skipped;
3. ``[validation] input``, the load-time check's event, when it holds enough rows
   (``instances`` of 10 or more) to be a distribution.

Files are read through ``read(sha256)`` (the artifact store), parsed once per content hash and
kept as :class:`~coldbrew.observe.drift.Profile` bins, a few numbers per feature.
"""

from __future__ import annotations

import contextlib
import csv
import io
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from coldbrew.observe.drift import Profile, collect, profiles

MAX_ROWS = 100_000
"""Rows read from a reference file; a longer file is cut (its head is the sample)."""
CACHED = 32


@dataclass(frozen=True)
class Reference:
    source: str
    """``quality.reference``, ``validation.sample`` or ``validation.input``."""
    path: str | None
    rows: int
    features: dict[str, Profile] = field(default_factory=dict)
    problem: str | None = None
    """Why nothing can be measured against it (shown in the report), or None."""

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "path": self.path, "rows": self.rows}
        if self.problem:
            out["problem"] = self.problem
        return out


def events_of_jsonl(data: bytes) -> list[Any]:
    events = []
    for line in data.splitlines()[:MAX_ROWS]:
        with contextlib.suppress(orjson.JSONDecodeError):
            events.append(orjson.loads(line))
    return events


def features_of_csv(data: bytes) -> tuple[dict[str, list[float]], int]:
    """Numeric columns by header name and by position ``x<i>``; (features, rows read)."""
    text = data.decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None) or []
    out: dict[str, list[float]] = defaultdict(list)
    rows = 0
    for row in reader:
        if rows >= MAX_ROWS:
            break
        rows += 1
        for i, cell in enumerate(row):
            try:
                value = float(cell)
            except ValueError:
                continue
            if value != value or value in (float("inf"), float("-inf")):
                continue
            out[f"x{i}"].append(value)
            name = header[i].strip() if i < len(header) else ""
            if name and name != f"x{i}":
                out[name].append(value)
    return out, rows


def parse(path: str, data: bytes) -> tuple[dict[str, Profile], int]:
    if path.lower().endswith(".csv"):
        features, rows = features_of_csv(data)
        return profiles(features), rows
    events = events_of_jsonl(data)
    return profiles(collect(events)), len(events)


class References:
    """Each version's reference, from its config and manifest (thread-safe, cached)."""

    def __init__(self, read: Callable[[str], bytes]) -> None:
        self.read = read
        self._parsed: OrderedDict[str, tuple[dict[str, Profile], int]] = OrderedDict()
        self._lock = threading.Lock()

    def of_versions(self, versions: Iterable[Any]) -> dict[int, Reference]:
        """``versions``: registry records (``number``, ``config``, ``manifest``)."""
        found = {}
        for version in versions:
            reference = self.of(version.config, version.manifest)
            if reference is not None:
                found[version.number] = reference
        return found

    def of(self, config: dict[str, Any], manifest: dict[str, str]) -> Reference | None:
        quality = config.get("quality") or {}
        validation = config.get("validation") or {}
        for source, path in (
            ("quality.reference", quality.get("reference")),
            ("validation.sample", validation.get("sample")),
        ):
            if path:
                return self._file(source, path, manifest)
        if validation.get("input") is not None:
            features = profiles(collect([validation["input"]]))
            if features:
                return Reference("validation.input", None, 1, features)
        return None

    def _file(self, source: str, path: str, manifest: dict[str, str]) -> Reference:
        sha256 = manifest.get(path)
        if sha256 is None:
            return Reference(source, path, 0, problem=f"{path} is not in the bundle")
        key = f"{sha256}:{path.lower().endswith('.csv')}"  # one content, parsed per format
        with self._lock:
            cached = self._parsed.get(key)
            if cached is not None:
                self._parsed.move_to_end(key)
        if cached is None:
            try:
                cached = parse(path, self.read(sha256))
            except (csv.Error, ValueError) as exc:  # a NUL byte, a field past csv's limit
                return Reference(source, path, 0, problem=f"{path} cannot be read: {exc}")
            with self._lock:
                self._parsed[key] = cached
                while len(self._parsed) > CACHED:
                    self._parsed.popitem(last=False)
        features, rows = cached
        problem = None if features else f"{path} has no numeric feature with 10 values or more"
        return Reference(source, path, rows, features, problem)
