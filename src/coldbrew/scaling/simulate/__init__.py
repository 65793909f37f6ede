"""The keep-alive policy simulator: replay a per-minute trace in simulated time.

No processes and no sleeping: each function's active minutes are walked once per policy. The
CLI's ``coldbrew simulate`` calls :func:`run_simulation` and prints :func:`format_report`.
"""

from coldbrew.scaling.simulate.costs import TierCosts
from coldbrew.scaling.simulate.report import SimulationReport, format_report
from coldbrew.scaling.simulate.run import (
    Candidate,
    default_candidates,
    run_simulation,
    simulate_trace,
)
from coldbrew.scaling.simulate.trace import FunctionTrace, Trace, load_trace

__all__ = [
    "Candidate",
    "FunctionTrace",
    "SimulationReport",
    "TierCosts",
    "Trace",
    "default_candidates",
    "format_report",
    "load_trace",
    "run_simulation",
    "simulate_trace",
]
