"""``coldbrew quality NAME``: accuracy in production, from feedback; calibration and input
drift (docs/DATA.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from coldbrew.cli import render
from coldbrew.cli.common import JsonOption, UrlOption, connect, out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def quality(
    name: str,
    since: Annotated[
        str, typer.Option(help="Predictions made since: 30d, 24h or ISO 8601.")
    ] = "30d",
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Accuracy / MAE per version and day, the confusion matrix and calibration (from
    feedback), and input drift against the version's reference or validation sample."""
    with connect(url) as client:
        report = client.request_json(
            "GET", f"/v1/functions/{name}/quality", params={"since": since}
        )
    if as_json:
        render.print_json(out(), report)
        return
    console = out()
    if not report["versions"]:
        console.print(
            f"no feedback for {name} since {since}: POST /v1/functions/{name}/feedback",
            markup=False,
        )
        return
    for version in report["versions"]:
        if not version["n"] and not version.get("drift_reference"):
            continue
        console.print(
            f"version {version['version']}: {version['n']} feedback, accuracy "
            f"{_pct(version['accuracy'])}, MAE {_num(version['mae'])}",
            markup=False,
        )
        if version["days"]:
            days = Table("day", "feedback", "accuracy", "MAE")
            for day in version["days"]:
                days.add_row(day["day"], str(day["n"]), _pct(day["accuracy"]), _num(day["mae"]))
            console.print(days)
        if version.get("confusion"):
            console.print(_confusion(version["confusion"]))
        if version.get("calibration"):
            calibration = version["calibration"]
            console.print(
                f"calibration: ECE {calibration['ece']:.3f}, Brier {calibration['brier']:.3f} "
                f"over {calibration['n']} feedback with probabilities",
                markup=False,
            )
            console.print(_calibration(calibration))
        reference = version.get("drift_reference") or {}
        if reference.get("problem"):
            console.print(f"input drift: {reference['problem']}", markup=False)
        elif version.get("drift"):
            console.print(drift_heading(reference), markup=False)
            console.print(_drift(version["drift"]))


def _calibration(calibration: dict[str, Any]) -> Table:
    table = Table("confidence", "feedback", "mean confidence", "accuracy")
    for row in calibration["bins"]:
        table.add_row(
            f"{row['low']:.1f}-{row['high']:.1f}",
            str(row["n"]),
            _pct(row["confidence"]),
            _pct(row["accuracy"]),
        )
    return table


SOURCES = {
    "quality.reference": "the reference set",
    "validation.sample": "the validation sample",
    "validation.input": "the validation input",
}


def drift_heading(reference: dict[str, Any]) -> str:
    """What the drift table compares with (a line of its own: rich wraps long titles)."""
    against = SOURCES.get(reference.get("source", ""), "the reference set")
    if reference.get("path"):
        against += f" {reference['path']}"
    if reference.get("rows"):
        against += f" ({reference['rows']} rows)"
    return f"input drift vs {against}"


def _drift(drift: dict[str, Any]) -> Table:
    table = Table("feature", "PSI", "inputs", "", title="input drift")
    for feature, found in drift.items():
        value = found["psi"]
        verdict = "shifted" if value > 0.25 else "some shift" if value > 0.1 else "stable"
        table.add_row(feature, f"{value:.3f}", str(found["n"]), verdict)
    return table


def _confusion(confusion: dict[str, Any]) -> Table:
    labels = [str(label) for label in confusion["labels"]]
    table = Table("truth \\ predicted", *labels, title="confusion matrix")
    for label, row in zip(labels, confusion["matrix"], strict=True):
        table.add_row(label, *(str(n) for n in row))
    return table
