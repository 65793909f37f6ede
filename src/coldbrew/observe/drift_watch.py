"""Input drift of each version, measured from the prediction log: on demand for the quality
report, and every ``alert_drift_interval_s`` over the quality window for the ``psi`` alert
rule and the ``coldbrew_quality_psi`` gauge (docs/DATA.md).

Measuring reads the logged inputs of a function (at most ``MAX_INPUTS`` per version, the
newest), so it runs on a worker thread, never in the alert loop's pass: that pass only reads
the last measurement (:meth:`DriftWatch.evaluations`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import Gauge

from coldbrew import errors
from coldbrew.observe.drift import drift_against
from coldbrew.observe.metrics import LabelLimiter
from coldbrew.observe.reference import Reference
from coldbrew.observe.rules import Evaluation
from coldbrew.registry.predictions import PredictionStore

log = logging.getLogger("coldbrew.quality")
MAX_INPUTS = 50_000


@dataclass(frozen=True)
class Measured:
    at: float
    inputs: int
    drift: dict[str, dict[str, float]]


class DriftWatch:
    def __init__(
        self,
        predictions: PredictionStore,
        gauge: Gauge,
        limit: LabelLimiter,
        window_s: float = 3600.0,
        interval_s: float = 300.0,
        max_psi: float | None = None,
        min_inputs: int = 100,
    ) -> None:
        self.predictions = predictions
        self.gauge = gauge
        self.limit = limit
        self.window_s = window_s
        self.interval_s = interval_s
        self.max_psi = max_psi
        self.min_inputs = min_inputs
        self.references: Callable[[str], dict[int, Reference]] | None = None
        """function -> each version's reference; set by the platform (it reads the bundles)."""
        self.functions: Callable[[], Iterable[str]] = lambda: ()
        """The functions worth a look (those invoked lately); set by the hub."""
        self.latest: dict[tuple[str, int], Measured] = {}
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    # --- measuring -----------------------------------------------------------------------------
    def measure(
        self, function: str, since: datetime | None, references: dict[int, Reference]
    ) -> dict[int, Measured]:
        """Drift of each version having a usable reference, from one read of the log; the
        gauges are set to what this found."""
        usable = {v: r for v, r in references.items() if r.features}
        if not usable:
            return {}
        inputs: dict[int, deque[Any]] = defaultdict(lambda: deque(maxlen=MAX_INPUTS))
        for row in self.predictions.rows(function, since):
            if row["version"] in usable and row["input"]:
                with contextlib.suppress(orjson.JSONDecodeError):
                    inputs[row["version"]].append(orjson.loads(row["input"]))
        now = time.time()
        label = self.limit.function(function)
        found = {}
        for version, reference in usable.items():
            events = list(inputs.get(version, ()))
            measured = Measured(now, len(events), drift_against(reference.features, events))
            for feature, values in measured.drift.items():
                self.gauge.labels(label, str(version), feature).set(values["psi"])
            found[version] = measured
        return found

    def check(self, now: float | None = None) -> None:
        """Measure every recently invoked function over the window (a worker thread)."""
        if self.references is None:
            return
        now = time.time() if now is None else now
        since = datetime.fromtimestamp(now - self.window_s, UTC)
        functions = set(self.functions())
        for function in sorted(functions):
            try:
                found = self.measure(function, since, self.references(function))
            except errors.NotFound:
                found = {}  # deleted since it ran
            except Exception:  # one function's unreadable bundle must not stop the others
                log.exception("input drift of %s could not be measured", function)
                continue
            with self._lock:
                for key in [k for k in self.latest if k[0] == function]:
                    if key[1] not in found:
                        del self.latest[key]
                for version, measured in found.items():
                    self.latest[(function, version)] = measured
        with self._lock:  # a function gone quiet has nothing to measure: its rule resolves
            for key in [k for k in self.latest if k[0] not in functions]:
                del self.latest[key]

    async def start(self) -> None:
        if self.max_psi is not None:  # the log is read only when a rule needs it
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.check)
            except Exception:
                log.exception("input drift check failed")
            await asyncio.sleep(self.interval_s)

    # --- the alert rule ------------------------------------------------------------------------
    def evaluations(self, now: float | None = None) -> list[Evaluation]:
        if self.max_psi is None:
            return []
        with self._lock:
            latest = sorted(self.latest.items())
        return [
            psi_rule(f"{function}:{version}", m, self.max_psi, self.min_inputs, self.window_s)
            for (function, version), m in latest
        ]


def psi_rule(
    target: str, measured: Measured, max_psi: float, min_inputs: int, window_s: float
) -> Evaluation:
    """Pure: fires when any feature's PSI is above the bound, with enough inputs measured."""
    values = {name: found["psi"] for name, found in measured.drift.items()}
    worst = max(values.values(), default=None)
    firing = worst is not None and measured.inputs >= min_inputs and worst > max_psi
    shifted = ", ".join(f"{n} {v:.2f}" for n, v in sorted(values.items()) if v > max_psi)
    return Evaluation(
        "psi",
        target,
        firing,
        worst,
        max_psi,
        f"{target}: input drift PSI {shifted or f'{worst or 0:.2f} at most'} over "
        f"{measured.inputs} logged inputs in {window_s / 60:g} min (bound {max_psi:g})",
    )
