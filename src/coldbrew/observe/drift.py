"""Input drift: the population stability index (PSI) of each numeric input feature, logged
inputs against a reference set (docs/DATA.md). Pure functions, no I/O.

Features of an event: for the built-in model handler's shape (``{"instances": [[...], ...]}``)
column ``i`` of every row is feature ``x<i>``; for any other JSON object, each top-level number
is a feature by its name. Bins are the reference's deciles (so each holds ~10% of it); PSI =
sum over bins of (actual% - reference%) * ln(actual% / reference%), with empty bins floored at
0.01%. Rules of thumb: < 0.1 stable, 0.1-0.25 some shift, > 0.25 a real shift.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

FLOOR = 1e-4
BINS = 10


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def features_of(event: Any) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    if not isinstance(event, dict):
        return out
    rows = event.get("instances", event.get("inputs"))
    if isinstance(rows, list):
        for row in rows:
            if isinstance(row, list):
                for i, value in enumerate(row):
                    number = _number(value)
                    if number is not None:
                        out[f"x{i}"].append(number)
        return out
    for name, value in event.items():
        number = _number(value)
        if number is not None:
            out[name].append(number)
    return out


def collect(events: list[Any]) -> dict[str, list[float]]:
    merged: dict[str, list[float]] = defaultdict(list)
    for event in events:
        for name, values in features_of(event).items():
            merged[name].extend(values)
    return merged


def edges(reference: list[float], bins: int = BINS) -> list[float]:
    """Inner bin edges: the reference's quantiles, duplicates dropped."""
    ordered = sorted(reference)
    cuts = [ordered[min(len(ordered) - 1, (len(ordered) * k) // bins)] for k in range(1, bins)]
    return sorted(set(cuts))


def shares(values: list[float], cuts: list[float]) -> list[float]:
    counts = [0] * (len(cuts) + 1)
    for value in values:
        counts[bisect.bisect_right(cuts, value)] += 1
    return [max(c / len(values), FLOOR) for c in counts]


@dataclass(frozen=True)
class Profile:
    """What PSI needs of a reference feature: its bin edges and each bin's share (a few numbers,
    so a reference file is parsed once and kept small)."""

    cuts: list[float]
    shares: list[float]
    n: int


def profile(reference: list[float], bins: int = BINS) -> Profile:
    cuts = edges(reference, bins)
    return Profile(cuts, shares(reference, cuts), len(reference))


def profiles(features: dict[str, list[float]]) -> dict[str, Profile]:
    """A profile per feature with enough values to fill the bins."""
    return {name: profile(values) for name, values in features.items() if len(values) >= BINS}


def psi_against(reference: Profile, actual: list[float]) -> float:
    observed = shares(actual, reference.cuts)
    pairs = zip(observed, reference.shares, strict=True)
    return sum((o - e) * math.log(o / e) for o, e in pairs)


def psi(reference: list[float], actual: list[float], bins: int = BINS) -> float:
    return psi_against(profile(reference, bins), actual)


def drift_against(reference: dict[str, Profile], actual: list[Any]) -> dict[str, dict[str, float]]:
    """Per feature present in both: PSI and how many values the actual side had."""
    now = collect(actual)
    return {
        name: {"psi": round(psi_against(reference[name], now[name]), 6), "n": len(now[name])}
        for name in sorted(reference)
        if now.get(name)
    }


def drift(reference: list[Any], actual: list[Any]) -> dict[str, dict[str, float]]:
    """Events against events (see :func:`drift_against`)."""
    return drift_against(profiles(collect(reference)), actual)
