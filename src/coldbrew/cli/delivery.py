"""``coldbrew rollout`` and ``coldbrew shadow``: safe delivery of a new version
(docs/DELIVERY.md)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from coldbrew.cli import render
from coldbrew.cli.common import JsonOption, UrlOption, connect, out

rollout_app = typer.Typer(
    no_args_is_help=True,
    help="Move an alias to a new version step by step, rolling back by itself on errors, "
    "latency or (with feedback) accuracy.",
)


def _path(name: str, action: str = "") -> str:
    return f"/v1/functions/{name}/rollout" + (f"/{action}" if action else "")


def _stats(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "-"
    p95 = stats.get("p95_ms")
    said = (
        f"{stats['invocations']} invocations, {stats['error_rate']:.2%} errors, "
        f"p95 {'-' if p95 is None else f'{p95:.1f} ms'}"
    )
    if stats.get("accuracy") is not None:
        said += f", accuracy {stats['accuracy']:.1%} of {stats['feedback']} feedback"
    return said


def _bounds(c: dict[str, Any]) -> str:
    said = [
        f"error rate +{c.get('max_error_rate_delta', 0):.2%}",
        f"p95 x{c.get('max_p95_ratio', 0):g}",
        f"{c.get('min_samples')} samples",
    ]
    if c.get("min_accuracy") is not None:
        said.append(f"accuracy >= {c['min_accuracy']:.1%}")
    if c.get("max_accuracy_drop") is not None:
        said.append(f"accuracy -{c['max_accuracy_drop']:.1%} at most")
    if c.get("min_accuracy") is not None or c.get("max_accuracy_drop") is not None:
        said.append(f"{c.get('min_feedback')} feedback")
    return ", ".join(said)


def _print_rollout(rollout: dict[str, Any]) -> None:
    steps = ", ".join(
        f"[{round(s * 100, 2):g}%]" if i == rollout["step"] else f"{round(s * 100, 2):g}%"
        for i, s in enumerate(rollout["steps"])
    )
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("function", f"{rollout['function_name']}:{rollout['alias']}")
    table.add_row("state", rollout["state"])
    table.add_row("versions", f"{rollout['baseline']} → {rollout['candidate']}")
    table.add_row("steps", steps)
    table.add_row("step duration", f"{rollout['step_duration_s']:g} s")
    table.add_row("bounds", _bounds(rollout.get("criteria") or {}))
    table.add_row("step started", render.short_time(rollout.get("step_started_at")))
    if rollout.get("baseline_stats"):
        table.add_row("baseline", _stats(rollout["baseline_stats"]))
        table.add_row("candidate", _stats(rollout["candidate_stats"]))
    if rollout.get("verdict"):
        table.add_row("now", f"{rollout['verdict']['action']}: {rollout['verdict']['reason']}")
    if rollout.get("reason"):
        table.add_row("reason", rollout["reason"])
    out().print(table)


@rollout_app.command("start")
def rollout_start(
    name: str,
    to: Annotated[int, typer.Option("--to", help="The candidate version.")],
    steps: Annotated[str, typer.Option(help="Candidate traffic at each step, in %.")] = (
        "5,25,50,100"
    ),
    step_duration: Annotated[str, typer.Option(help="How long each step is watched.")] = "10m",
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "latest",
    baseline: Annotated[
        int | None,
        typer.Option("--from", help="The baseline version (default: the alias's version)."),
    ] = None,
    max_error_rate_delta: Annotated[
        float,
        typer.Option(
            help="Roll back when the candidate's error rate exceeds the "
            "baseline's by more than this."
        ),
    ] = 0.01,
    max_p95_ratio: Annotated[
        float,
        typer.Option(help="Roll back when the candidate's p95 exceeds the baseline's times this."),
    ] = 1.2,
    min_samples: Annotated[
        int, typer.Option(help="Candidate invocations a step needs before a verdict.")
    ] = 100,
    min_accuracy: Annotated[
        float | None,
        typer.Option(
            help="Roll back when the candidate's accuracy (from feedback) is under this; "
            "a step then advances only with --min-feedback feedback."
        ),
    ] = None,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option(
            help="Roll back when the candidate's accuracy is under the baseline's minus this."
        ),
    ] = None,
    min_feedback: Annotated[
        int,
        typer.Option(help="Feedback on the candidate's predictions before accuracy is judged."),
    ] = 20,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start rolling ALIAS of NAME out to version --to (blue/green: --steps 100)."""
    body: dict[str, Any] = {
        "to": to,
        "steps": steps,
        "step_duration": step_duration,
        "alias": alias,
        "max_error_rate_delta": max_error_rate_delta,
        "max_p95_ratio": max_p95_ratio,
        "min_samples": min_samples,
        "min_feedback": min_feedback,
    }
    if min_accuracy is not None:
        body["min_accuracy"] = min_accuracy
    if max_accuracy_drop is not None:
        body["max_accuracy_drop"] = max_accuracy_drop
    if baseline is not None:
        body["from"] = baseline
    with connect(url) as client:
        rollout = client.request_json("POST", _path(name), json=body)
    if as_json:
        render.print_json(out(), rollout)
    else:
        _print_rollout(rollout)


@rollout_app.command("status")
def rollout_status(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """The rollout of NAME (the active one, else the last): step, state, both versions' stats."""
    with connect(url) as client:
        rollout = client.request_json("GET", _path(name))
    if as_json:
        render.print_json(out(), rollout)
    else:
        _print_rollout(rollout)


def _act(name: str, action: str, url: str | None, as_json: bool) -> None:
    with connect(url) as client:
        rollout = client.request_json("POST", _path(name, action))
    if as_json:
        render.print_json(out(), rollout)
    else:
        _print_rollout(rollout)


@rollout_app.command("pause")
def rollout_pause(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Hold the rollout at its step (the split stays; nothing is judged until resumed)."""
    _act(name, "pause", url, as_json)


@rollout_app.command("resume")
def rollout_resume(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Carry on from the step it was paused at (the step is timed afresh)."""
    _act(name, "resume", url, as_json)


@rollout_app.command("abort")
def rollout_abort(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Stop the rollout and point the alias back at the baseline."""
    _act(name, "abort", url, as_json)


class ShadowPriority(StrEnum):
    low = "low"
    normal = "normal"


shadow_app = typer.Typer(
    no_args_is_help=True,
    help="Copy a share of an alias's traffic to a candidate version and compare the answers "
    "(callers only ever get the alias's own).",
)


def _shadow_table(shadows: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold")
    columns = (
        "ALIAS",
        "TO",
        "%",
        "PRIORITY",
        "MIRRORED",
        "DROPPED",
        "AGREEMENT",
        "ERRORS (PRIMARY/SHADOW)",
    )
    for column in (*columns, "P95 PRIMARY/SHADOW"):
        table.add_column(column)
    for s in shadows:
        rate = s.get("agreement_rate")

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f} ms"

        table.add_row(
            s["alias"],
            str(s["version"]),
            f"{s['percent']:g}",
            s.get("priority", "normal"),
            str(s["mirrored"]),
            str(s["dropped"]),
            "-" if rate is None else f"{rate:.2%} of {s['compared']}",
            f"{s['primary_errors']}/{s['shadow_errors']}",
            f"{ms(s.get('primary_p95_ms'))}/{ms(s.get('shadow_p95_ms'))}",
        )
    return table


@shadow_app.command("start")
def shadow_start(
    name: str,
    to: Annotated[int, typer.Option("--to", help="The candidate version the copies run on.")],
    percent: Annotated[float, typer.Option(help="Share of the alias's traffic copied.")] = 100.0,
    alias: Annotated[str, typer.Option(help="The alias whose traffic is copied.")] = "latest",
    tolerance: Annotated[
        float, typer.Option(help="Numbers within this (relative or absolute) agree.")
    ] = 1e-6,
    ignore: Annotated[
        list[str] | None,
        typer.Option("--ignore", help="A top-level result key left out of the comparison."),
    ] = None,
    priority: Annotated[
        ShadowPriority,
        typer.Option(
            help="low: the candidate's instances get only the CPU the primary leaves (SCHED_IDLE); "
            "normal: they compete with it (latency comparable)."
        ),
    ] = ShadowPriority.low,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> None:
    """Copy --percent of ALIAS's invocations of NAME to version --to (replaces a previous one)."""
    body: dict[str, Any] = {"version": to, "alias": alias, "percent": percent}
    body.update(tolerance=tolerance, ignore=ignore or [], priority=priority.value)
    with connect(url) as client:
        answer = client.request_json("PUT", f"/v1/functions/{name}/shadow", json=body)
    if as_json:
        render.print_json(out(), answer)
    else:
        out().print(_shadow_table(answer["shadows"]))


@shadow_app.command("status")
def shadow_status(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Agreement rate, errors and p95 of the primary and the shadow, per shadowed alias."""
    with connect(url) as client:
        answer = client.request_json("GET", f"/v1/functions/{name}/shadow")
    if as_json:
        render.print_json(out(), answer)
    elif not answer["shadows"]:
        out().print(f"{name}: no shadow traffic", markup=False)
    else:
        out().print(_shadow_table(answer["shadows"]))


@shadow_app.command("stop")
def shadow_stop(
    name: str,
    alias: Annotated[str | None, typer.Option(help="Only this alias's shadow.")] = None,
    url: UrlOption = None,
) -> None:
    """Stop copying NAME's traffic."""
    params = {"alias": alias} if alias else None
    with connect(url) as client:
        answer = client.request_json("DELETE", f"/v1/functions/{name}/shadow", params=params)
    out().print("stopped " + ", ".join(answer["stopped"]), markup=False)
