"""The PNG: the fixed keep-alive curve with the hybrid points, and coldbrew's price view.

matplotlib is imported here only (and with the Agg backend) so the simulator's numbers do not
need it and nothing opens a display.
"""

from __future__ import annotations

from pathlib import Path

from coldbrew.scaling.simulate.report import SimulationReport


def plot_report(report: SimulationReport, path: Path) -> Path:
    """Write the two-panel figure to ``path`` and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    fixed = sorted((p for p in report.policies if p.family == "fixed"), key=lambda p: p.wasted_norm)
    left.plot(
        [p.wasted_norm for p in fixed],
        [p.p75_cold_start_pct for p in fixed],
        "o-",
        color="tab:blue",
        label="fixed keep-alive",
    )
    for p in fixed:
        left.annotate(
            p.name.removeprefix("fixed-") + " min",
            (p.wasted_norm, p.p75_cold_start_pct),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    for p in (p for p in report.policies if p.family == "hybrid"):
        left.plot(p.wasted_norm, p.p75_cold_start_pct, "*", markersize=12, label=p.name)
    left.set_xlabel("wasted memory-time (normalised to fixed-10)")
    left.set_ylabel("75th percentile of cold-start % across functions")
    left.set_title("Keep-alive policies: cold starts vs wasted memory")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)

    for p in report.policies:
        marker = {"fixed": "o", "hybrid": "*", "priced": "s"}[p.family]
        right.plot(p.held_gb_minutes, p.added_latency_s, marker, markersize=8)
        right.annotate(
            p.name,
            (p.held_gb_minutes, p.added_latency_s),
            textcoords="offset points",
            xytext=(4, 3),
            fontsize=7,
        )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("memory held idle: instances + version templates (GB-minutes)")
    right.set_ylabel("latency added by cold starts (s, whole trace)")
    right.set_title("In coldbrew's terms: milliseconds vs money")
    right.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
