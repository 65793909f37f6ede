"""Per-policy summaries, the Pareto comparison against the fixed family, and the text table.

The paper's two axes: the 75th percentile across functions of the cold-start percentage
(functions with no invocation are left out), and wasted memory-time normalised to the fixed
10-minute keep-alive. Memory-time is weighted by each function's memory, so the normalised
figure is the same ratio as the money. coldbrew's own axes follow: total latency added by cold
starts (priced by tier) against GB-minutes held by idle instances and version templates.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field, replace

import numpy as np

from coldbrew.scaling.simulate.costs import TierCosts
from coldbrew.scaling.simulate.replay import FunctionResult
from coldbrew.scaling.simulate.trace import FunctionTrace

BASELINE = "fixed-10"


@dataclass(frozen=True)
class PolicyResult:
    """Totals of one policy over the whole trace."""

    name: str
    family: str
    """"fixed" (the baseline curve), "hybrid" (placed against it) or "priced" (extra tiers)."""
    p75_cold_start_pct: float
    cold_starts: int
    invocations: int
    idle_gb_minutes: float
    template_gb_minutes: float
    added_latency_s: float
    wasted_norm: float = float("nan")

    @property
    def held_gb_minutes(self) -> float:
        return self.idle_gb_minutes + self.template_gb_minutes


@dataclass(frozen=True)
class ParetoComparison:
    """Where one hybrid configuration sits against the fixed curve."""

    name: str
    dominated_by: list[str]
    """Fixed policies wasting no more memory with no more cold starts (empty: Pareto-better)."""
    fixed_cold_pct_at_same_memory: float | None
    """The fixed curve interpolated at this policy's memory (None: outside the curve)."""
    fixed_memory_at_same_cold_pct: float | None
    """Normalised memory the fixed curve needs for this policy's cold-start percentage."""

    @property
    def pareto_better(self) -> bool:
        return not self.dominated_by


@dataclass
class SimulationReport:
    source: str
    functions: int
    invocations: int
    minutes: int
    costs: TierCosts
    policies: list[PolicyResult] = field(default_factory=list)
    comparisons: list[ParetoComparison] = field(default_factory=list)
    elapsed_s: float = 0.0


def summarise(
    name: str, family: str, functions: list[FunctionTrace], results: list[FunctionResult]
) -> PolicyResult:
    """Fold per-function results into one row (memory weighted by each function's MB)."""
    invoked = [r for r in results if r.invocations]
    pct = [r.cold_start_pct for r in invoked]
    gb = [f.memory_mb / 1024.0 for f in functions]
    return PolicyResult(
        name=name,
        family=family,
        p75_cold_start_pct=float(np.percentile(pct, 75)) if pct else 0.0,
        cold_starts=sum(r.cold_starts for r in results),
        invocations=sum(r.invocations for r in results),
        idle_gb_minutes=sum(g * r.idle_instance_minutes for g, r in zip(gb, results, strict=True)),
        template_gb_minutes=sum(g * r.template_minutes for g, r in zip(gb, results, strict=True)),
        added_latency_s=sum(r.cold_start_ms for r in results) / 1000.0,
    )


def normalise(policies: list[PolicyResult], baseline: str = BASELINE) -> list[PolicyResult]:
    """Set ``wasted_norm`` = idle instance memory-time / the baseline's."""
    base = next((p for p in policies if p.name == baseline), None)
    denom = base.idle_gb_minutes if base and base.idle_gb_minutes else float("nan")
    return [replace(p, wasted_norm=p.idle_gb_minutes / denom) for p in policies]


def compare(policies: list[PolicyResult]) -> list[ParetoComparison]:
    """Place every hybrid configuration against the fixed curve."""
    fixed = sorted((p for p in policies if p.family == "fixed"), key=lambda p: p.wasted_norm)
    mem = np.array([p.wasted_norm for p in fixed])
    cold = np.array([p.p75_cold_start_pct for p in fixed])
    out = []
    for h in (p for p in policies if p.family == "hybrid"):
        dominated = [
            f.name
            for f in fixed
            if f.wasted_norm <= h.wasted_norm and f.p75_cold_start_pct <= h.p75_cold_start_pct
        ]
        at_mem = _interp(h.wasted_norm, mem, cold)
        # The curve falls as memory grows: interpolate memory against ascending cold-start %.
        at_cold = _interp(h.p75_cold_start_pct, cold[::-1], mem[::-1])
        out.append(ParetoComparison(h.name, dominated, at_mem, at_cold))
    return out


def _interp(x: float, xs: np.ndarray, ys: np.ndarray) -> float | None:
    if len(xs) == 0 or x < xs.min() or x > xs.max():
        return None
    return float(np.interp(x, xs, ys))


WIDTH = 80
"""The report fits an 80-column terminal: the table is 69 wide, prose lines are wrapped."""


def _wrap(text: str) -> str:
    return textwrap.fill(text, WIDTH, subsequent_indent="  ", break_on_hyphens=False)


def format_report(report: SimulationReport) -> str:
    """The results as a plain-text table plus one line per hybrid configuration."""
    c = report.costs
    head = "\n".join(
        _wrap(line)
        for line in (
            f"trace: {report.source}",
            f"{report.functions} functions, {report.invocations} invocations,"
            f" {report.minutes} minutes; simulated in {report.elapsed_s:.1f} s",
            f"cold-start cost: version template {c.version_template_ms:g} ms, runtime"
            f" template {c.runtime_template_ms:g} ms, nothing {c.nothing_ms:g} ms;"
            f" version template memory {c.template_memory_fraction:g} x instance",
        )
    )
    cols = f"{'policy':<15}{'p75 cold %':>11}{'cold':>7}{'wasted':>8}"
    cols += f"{'idle GB-m':>10}{'tmpl GB-m':>10}{'lat s':>8}\n"
    rows = "".join(
        f"{p.name[:14]:<15}{p.p75_cold_start_pct:>11.2f}{p.cold_starts:>7d}{p.wasted_norm:>8.3f}"
        f"{p.idle_gb_minutes:>10.0f}{p.template_gb_minutes:>10.0f}{p.added_latency_s:>8.1f}\n"
        for p in report.policies
    )
    legend = "\n".join(
        _wrap(line)
        for line in (
            "cold = cold starts; wasted = idle instance memory-time / fixed-10's"
            " (memory-weighted); idle / tmpl GB-m = GB-minutes held by idle instances / version"
            " templates; lat s = latency added by cold starts, in seconds",
        )
    )
    verdicts = "\n".join(_wrap(_verdict(v, report)) for v in report.comparisons)
    return f"{head}\n\n{cols}{rows}{legend}\n\n{verdicts}"


def _verdict(c: ParetoComparison, report: SimulationReport) -> str:
    p = next(r for r in report.policies if r.name == c.name)
    where = f"{c.name}: p75 cold {p.p75_cold_start_pct:.2f}% at wasted mem {p.wasted_norm:.3f}"
    if not c.pareto_better:
        return f"{where}: NOT Pareto-better (dominated by {', '.join(c.dominated_by)})"
    parts = [f"{where}: Pareto-better than the fixed family"]
    if c.fixed_cold_pct_at_same_memory is not None:
        gap = c.fixed_cold_pct_at_same_memory - p.p75_cold_start_pct
        parts.append(
            f"fixed curve at same memory: {c.fixed_cold_pct_at_same_memory:.2f}%"
            f" ({gap:.2f} points more)"
        )
    if c.fixed_memory_at_same_cold_pct is not None:
        ratio = c.fixed_memory_at_same_cold_pct / p.wasted_norm if p.wasted_norm else float("inf")
        parts.append(
            f"fixed needs {c.fixed_memory_at_same_cold_pct:.3f} wasted mem for the same"
            f" cold-start % ({ratio:.2f}x)"
        )
    return "; ".join(parts)
