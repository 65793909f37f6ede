"""``python -m coldbrew.scaling.simulate --trace DIR [--out DIR]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from coldbrew.scaling.simulate.costs import TierCosts
from coldbrew.scaling.simulate.report import format_report
from coldbrew.scaling.simulate.run import run_simulation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coldbrew.scaling.simulate",
        description="Replay a per-minute invocation trace through keep-alive policies.",
    )
    parser.add_argument("--trace", type=Path, required=True, help="folder with *inv*.csv")
    parser.add_argument("--out", type=Path, default=Path("simulate-out"), help="output folder")
    parser.add_argument("--runtime-template-ms", type=float, default=TierCosts.runtime_template_ms)
    parser.add_argument("--version-template-ms", type=float, default=TierCosts.version_template_ms)
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    costs = TierCosts(
        version_template_ms=args.version_template_ms, runtime_template_ms=args.runtime_template_ms
    )
    report = run_simulation(args.trace, args.out, costs=costs, plot=not args.no_plot)
    print(format_report(report))
    print(f"\nwritten to {args.out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
