"""Running the simulation: the default set of policies, the replay loop, the output files."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from coldbrew.scaling.policies import (
    NAMED_HYBRID_CONFIGS,
    FixedKeepAlive,
    KeepAlivePolicy,
    WithVersionTemplate,
    hybrid_policy,
)
from coldbrew.scaling.simulate.costs import TierCosts
from coldbrew.scaling.simulate.replay import replay_function
from coldbrew.scaling.simulate.report import (
    SimulationReport,
    compare,
    format_report,
    normalise,
    summarise,
)
from coldbrew.scaling.simulate.trace import Trace, load_trace

FIXED_MINUTES = (1, 5, 10, 20, 30, 60, 120, 240)
DEFAULT_COSTS = TierCosts()


@dataclass(frozen=True)
class Candidate:
    """A policy and the family it is plotted and compared in."""

    policy: KeepAlivePolicy
    family: str


def default_candidates() -> list[Candidate]:
    """The fixed curve, every named hybrid configuration, and two priced tier variants."""
    out = [Candidate(FixedKeepAlive(m), "fixed") for m in FIXED_MINUTES]
    out += [Candidate(hybrid_policy(name), "hybrid") for name in NAMED_HYBRID_CONFIGS]
    out.append(Candidate(WithVersionTemplate(FixedKeepAlive(10), 60), "priced"))
    out.append(Candidate(WithVersionTemplate(hybrid_policy("hybrid"), 60), "priced"))
    return out


def simulate_trace(
    trace: Trace, candidates: list[Candidate], costs: TierCosts = DEFAULT_COSTS
) -> SimulationReport:
    """Replay ``trace`` through every candidate (pure computation, no files)."""
    started = time.perf_counter()
    rows = []
    for c in candidates:
        results = [replay_function(f, c.policy, trace.minutes, costs) for f in trace.functions]
        rows.append(summarise(c.policy.name, c.family, trace.functions, results))
    policies = normalise(rows)
    return SimulationReport(
        source=trace.source,
        functions=len(trace.functions),
        invocations=trace.invocations,
        minutes=trace.minutes,
        costs=costs,
        policies=policies,
        comparisons=compare(policies),
        elapsed_s=time.perf_counter() - started,
    )


def run_simulation(
    trace_dir: Path,
    out_dir: Path = Path("simulate-out"),
    candidates: list[Candidate] | None = None,
    costs: TierCosts = DEFAULT_COSTS,
    plot: bool = True,
) -> SimulationReport:
    """Load the trace in ``trace_dir``, simulate, write report.txt (and plot.png) to ``out_dir``."""
    report = simulate_trace(load_trace(Path(trace_dir)), candidates or default_candidates(), costs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.txt").write_text(format_report(report) + "\n")
    if plot:
        from coldbrew.scaling.simulate.plot import plot_report

        plot_report(report, out_dir / "keepalive.png")
    return report
