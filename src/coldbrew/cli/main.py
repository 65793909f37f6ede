"""The ``coldbrew`` command: run the server, deploy functions, manage them, invoke them.

Exit codes are part of the interface, so scripts can branch on them: 0 success, 1 the server
refused (``error CODE: message`` on stderr), 2 no server at the URL or bad usage (a bad
``COLDBREW_*`` setting included: see ``main``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TransferSpeedColumn,
)

from coldbrew.cli import render
from coldbrew.cli.client import InvokeResult
from coldbrew.cli.common import JsonOption, UrlOption, connect, err, fail, out
from coldbrew.cli.delivery import rollout_app, shadow_app
from coldbrew.cli.packaging import PackagingError, default_name, prepare_upload
from coldbrew.cli.routes import routes_app
from coldbrew.cli.serving import PortInUse, settings_with

app = typer.Typer(
    name="coldbrew",
    no_args_is_help=True,
    add_completion=False,
    help="Serverless ML inference you run yourself.",
)
alias_app = typer.Typer(no_args_is_help=True, help="Point aliases (prod, staging) at versions.")
app.add_typer(alias_app, name="alias")
app.add_typer(routes_app, name="route")
app.add_typer(rollout_app, name="rollout")
app.add_typer(shadow_app, name="shadow")


HostOption = Annotated[str | None, typer.Option(help="Interface to bind (default: COLDBREW_HOST).")]
PortOption = Annotated[int | None, typer.Option(help="TCP port (default: COLDBREW_PORT).")]
HomeOption = Annotated[Path | None, typer.Option(help="Data folder (default: COLDBREW_HOME).")]
WorkersOption = Annotated[
    int,
    typer.Option(
        min=1,
        help="Gateway processes on the port, restarted when they die (over 1: needs "
        "COLDBREW_REDIS_URL; docs/CLUSTER.md).",
    ),
]
RayOption = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Run instances on the nodes of the Ray cluster at ADDRESS ('auto' or HEAD:PORT): "
        "sets COLDBREW_BACKEND=ray and COLDBREW_RAY_ADDRESS (docs/CLUSTER.md).",
    ),
]


# --- server ---------------------------------------------------------------------------------


@app.command()
def serve(
    host: HostOption = None,
    port: PortOption = None,
    home: HomeOption = None,
    workers: WorkersOption = 1,
    ray: RayOption = None,
) -> None:
    """Run the coldbrew server in the foreground (Ctrl-C to stop)."""
    from coldbrew.cli.serving import bind_socket
    from coldbrew.gateway.server import build_server

    if ray is not None:  # in the environment, so that --workers' processes inherit it
        os.environ["COLDBREW_BACKEND"] = "ray"
        os.environ["COLDBREW_RAY_ADDRESS"] = ray
    settings = settings_with(host, port, home)
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        raise fail(str(exc)) from None
    if workers > 1:
        from coldbrew.cli.cluster import serve_workers

        raise typer.Exit(serve_workers(settings, sock, workers))
    server = build_server(settings)
    server.run(sockets=[sock])
    if not server.started:
        raise typer.Exit(1)


@app.command()
def quickstart(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    home: HomeOption = None,
    all_examples: Annotated[
        bool, typer.Option("--all", help="Also the larger examples (image-api: a 100 MB model).")
    ] = False,
) -> None:
    """Train three example models, serve and deploy them, and print how to invoke each."""
    import os

    from coldbrew.cli.quickstart import run_quickstart

    # Keep the welcome readable: the server's info logs are for `coldbrew serve`.
    level = None if "COLDBREW_LOG_LEVEL" in os.environ else "warning"
    settings = settings_with(host, port, home, log_level=level)
    if settings.auth_enabled() and not os.environ.get("COLDBREW_API_KEY"):
        from coldbrew.cli.security import create_local_key

        _, token = create_local_key(settings, {"role": "admin", "name": "quickstart"})
        os.environ["COLDBREW_API_KEY"] = token  # the quickstart's own client uses it
        out().print(f"auth is on: admin key (shown once): {token}", markup=False)
    try:
        code = run_quickstart(settings, out(), all_examples)
    except PortInUse as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(code)


# --- deploy and manage ----------------------------------------------------------------------


@app.command()
def deploy(
    path: Annotated[
        Path,
        typer.Argument(
            help="Model file, bundle folder or archive (with --model: the function's name)."
        ),
    ],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Function name (default: from PATH).")
    ] = None,
    description: Annotated[str | None, typer.Option("--description", "-d")] = None,
    trust: Annotated[
        bool,
        typer.Option("--trust", help="Allow a pickle-based model (joblib/pickle): it runs code."),
    ] = False,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model", help="Keep the function's code and config; deploy only this new model."
        ),
    ] = None,
    replace_handler: Annotated[
        bool,
        typer.Option(
            "--replace-handler",
            help="Let a bare model file replace a bundle's own handler with the built-in one.",
        ),
    ] = False,
    url: UrlOption = None,
) -> None:
    """Deploy a model file, a bundle folder or a bundle archive as a new version.

    `coldbrew deploy NAME --model new.joblib`: a new version of NAME with its current code and
    config and a new model."""
    from coldbrew.cli import lifecycle
    from coldbrew.errors import ValidationError
    from coldbrew.registry.names import check_function_name

    name = name or (str(path) if model is not None else default_name(path))
    try:
        check_function_name(name)  # here, before the bundle is packed and sent
    except ValidationError as exc:
        raise fail(f"error: {exc.message}", 2) from None
    if model is not None:
        lifecycle.deploy_model(name, model, description, trust, url, _print_deployed)
        return
    try:
        upload = prepare_upload(path)
    except PackagingError as exc:
        raise fail(f"error: {exc}") from None
    with connect(url) as client, upload.data, _upload_progress(upload.size) as advance:
        if replace_handler:
            options = {"replace_handler": "1"}
            answer = lifecycle.upload(
                client, name, upload.filename, upload.data, description, trust, options
            )
        else:
            answer = client.deploy(name, upload.filename, upload.data, description, advance, trust)
    _print_deployed(answer)


def _print_deployed(answer: dict[str, Any]) -> None:
    sha = render.short_sha(answer["content_sha256"])
    if answer.get("created", True):
        init = answer.get("init_ms")
        extra = f", init {init:.0f} ms" if isinstance(init, int | float) else ""
        out().print(
            f"deployed {answer['function']} version {answer['version']} (sha256 {sha}{extra})",
            markup=False,
        )
    else:
        out().print(
            f"unchanged: {answer['function']} version {answer['version']} already "
            f"has this content (sha256 {sha})",
            markup=False,
        )


@contextlib.contextmanager
def _upload_progress(total: int) -> Iterator[Any]:
    """A transient progress bar on stderr; after the last byte it turns into a spinner while
    the server loads the model and runs its validation sample."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    console = err()
    if not console.is_terminal:  # a log file or CI: a live bar would only add blank lines
        yield lambda n: None
        return
    with Progress(*columns, console=console, transient=True) as progress:
        # One unit more than the upload, so the task never "finishes" and the spinner keeps
        # turning while the server works on the last byte.
        task = progress.add_task("uploading", total=total + 1)

        def advance(n: int) -> None:
            progress.advance(task, n)
            if progress.tasks[0].completed >= total:
                progress.update(task, description="loading on the server")

        yield advance


@app.command("ls")
def list_functions(url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List functions with their latest version and aliases."""
    with connect(url) as client:
        functions = client.list_functions()
    if as_json:
        render.print_json(out(), functions)
    elif not functions:
        err().print("no functions yet: deploy one with `coldbrew deploy PATH`", markup=False)
    else:
        out().print(render.functions_table(functions))


@app.command()
def info(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Show a function: its versions, aliases and live instances."""
    with connect(url) as client:
        function = client.get_function(name)
    if as_json:
        render.print_json(out(), function)
        return
    console = out()
    aliases = function.get("aliases") or {}
    console.print(f"[bold]{function['name']}[/bold]  {function.get('description') or ''}")
    console.print(
        f"created {render.short_time(function.get('created_at'))}, updated "
        f"{render.short_time(function.get('updated_at'))}, aliases "
        f"{render.format_aliases(aliases)}",
        markup=False,
    )
    console.print("\n[bold]versions[/bold]")
    console.print(render.versions_table(function.get("versions", []), aliases))
    pools = function.get("pools", [])
    instances = render.instances_table(pools)
    console.print("\n[bold]instances[/bold]")
    console.print(instances if instances is not None else "none live (scaled to zero)")
    for pool in pools:
        console.print(
            f"version {pool.get('version')}: {pool.get('queued', 0)} queued, "
            f"{pool.get('cold_starts', 0)} cold starts"
            + (f", {pool['template']}" if pool.get("template") else "")
            + _breaker_note(pool.get("breaker")),
            markup=False,
        )


def _breaker_note(breaker: dict[str, Any] | None) -> str:
    """Say so when a version's instances keep failing to start (scaling/breaker.py)."""
    if not breaker or breaker.get("state") == "closed":
        return ""
    return (
        f", instances fail to start ({breaker.get('start_failures')} failures; next try in "
        f"{breaker.get('retry_after_s')} s): see `coldbrew logs`"
    )


@app.command()
def versions(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List the versions of a function."""
    with connect(url) as client:
        found = client.list_versions(name)
        aliases = {} if as_json else client.get_function(name).get("aliases") or {}
    if as_json:
        render.print_json(out(), found)
    else:
        out().print(render.versions_table(found, aliases))


@app.command("rm")
def remove(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    url: UrlOption = None,
) -> None:
    """Delete a function with all its versions and aliases."""
    if not yes:
        typer.confirm(f"delete function {name!r} and all its versions?", abort=True)
    with connect(url) as client:
        client.delete_function(name)
    out().print(f"deleted {name}", markup=False)


WeightOption = Annotated[
    list[str] | None,
    typer.Option(
        "--weight",
        help="Send a fraction of the alias's traffic to another version: VERSION=FRACTION "
        "(e.g. 2=0.25); repeatable. VERSION gets the rest.",
    ),
]
StickyOption = Annotated[
    str | None,
    typer.Option(help="JSON path of the event field that keeps a caller on one version."),
]


def _weights(given: list[str] | None) -> dict[str, float] | None:
    weights: dict[str, float] = {}
    for item in given or []:
        version, _, fraction = item.partition("=")
        try:
            weights[str(int(version))] = float(fraction)
        except ValueError:
            raise fail(f"--weight takes VERSION=FRACTION (e.g. 2=0.25), not {item!r}") from None
    return weights or None


@alias_app.command("set")
def alias_set(
    name: str,
    alias: str,
    version: int,
    weight: WeightOption = None,
    sticky: StickyOption = None,
    url: UrlOption = None,
) -> None:
    """Point ALIAS of function NAME at VERSION (creating the alias if needed), or at a split:
    `coldbrew alias set NAME canary 1 --weight 2=0.25`."""
    weights = _weights(weight)
    with connect(url) as client:
        record = client.set_alias(name, alias, version, weights, sticky)
    split = render.format_split(record)
    out().print(f"{name}:{record.get('name', alias)} → {split}", markup=False)


@alias_app.command("ls")
def alias_ls(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List the aliases of a function."""
    with connect(url) as client:
        aliases = client.list_aliases(name)
    if as_json:
        render.print_json(out(), aliases)
    else:
        out().print(render.aliases_table(aliases))


@alias_app.command("rm")
def alias_rm(name: str, alias: str, url: UrlOption = None) -> None:
    """Delete an alias (the versions stay)."""
    with connect(url) as client:
        client.delete_alias(name, alias)
    out().print(f"deleted alias {name}:{alias}", markup=False)


# --- invoke ---------------------------------------------------------------------------------


def read_event(data: str | None, file: Path | None) -> bytes:
    """The event bytes from --data, --file, or stdin for ``-``; checked to be JSON here so a
    typo is reported before a round trip (and without starting an instance)."""
    if data is not None and file is not None:
        raise typer.BadParameter("give --data or --file, not both")
    if data == "-" or (file is not None and str(file) == "-"):
        payload = sys.stdin.buffer.read()
    elif file is not None:
        try:
            payload = file.read_bytes()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {file}: {exc.strerror}") from None
    else:
        payload = (data or "{}").encode()
    try:
        json.loads(payload or b"{}")
    except ValueError as exc:
        raise typer.BadParameter(f"the event is not valid JSON: {exc}") from None
    return payload


def _print_meta(result: InvokeResult) -> None:
    h = result.headers
    parts = [f"status {result.status}"]
    for label, key in (
        ("version", "x-coldbrew-executed-version"),
        ("cold start", "x-coldbrew-cold-start"),
        ("duration ms", "x-coldbrew-duration-ms"),
        ("billed ms", "x-coldbrew-billed-duration-ms"),
        ("init ms", "x-coldbrew-init-duration-ms"),
        ("request id", "x-request-id"),
    ):
        if key in h:
            parts.append(f"{label} {h[key]}")
    err().print(" · ".join(parts), markup=False, soft_wrap=True)


def _print_body(content: bytes) -> None:
    """Pretty JSON when the body is JSON, the bytes as they are otherwise."""
    try:
        parsed = json.loads(content)
    except ValueError:
        sys.stdout.write(content.decode("utf-8", errors="replace") + "\n")
        return
    render.print_json(out(), parsed)


def _invocation_error(result: InvokeResult) -> str:
    try:
        error = json.loads(result.content)["error"]
        return f"error {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        text = result.content.decode("utf-8", errors="replace").strip()[:500]
        return f"error HTTP_{result.status}: {text}"


@app.command()
def invoke(
    target: Annotated[
        str,
        typer.Argument(
            metavar="NAME[:QUALIFIER]", help="Function, e.g. digits, digits:3, digits:prod."
        ),
    ],
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Event JSON, or - for stdin.")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="File holding the event JSON, or - for stdin."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Status and timing to stderr.")
    ] = False,
    run_async: Annotated[
        bool,
        typer.Option("--async", help="Queue it (202 and a request id); see docs/ASYNC.md."),
    ] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="With --async: a retried submit is a no-op."),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Invoke a function synchronously and print its answer (--async: queue it)."""
    payload = read_event(data, file)
    with connect(url) as client:
        result = client.invoke(target, payload, run_async, idempotency_key)
    if verbose:
        _print_meta(result)
    if result.ok:
        _print_body(result.content)
        return
    if verbose:
        _print_body(result.content)
    retry = result.headers.get("retry-after")
    suffix = f" (retry after {retry} s)" if retry else ""
    raise fail(_invocation_error(result) + suffix)


@app.command()
def simulate(
    trace: Annotated[
        Path | None,
        typer.Option(help="folder with the Azure Functions trace CSVs (default: the sample)"),
    ] = None,
    out: Annotated[Path, typer.Option(help="where report.txt and keepalive.png go")] = Path(
        "simulate-out"
    ),
    no_plot: Annotated[bool, typer.Option("--no-plot", help="skip the PNG")] = False,
) -> None:
    """Replay a trace through keep-alive policies in simulated time and compare them."""
    from coldbrew.scaling.simulate import format_report, run_simulation
    from coldbrew.scaling.simulate.trace import SAMPLE_TRACE

    trace = trace or SAMPLE_TRACE  # 8 functions x one day, shipped with the package
    if not trace.is_dir():
        raise fail(f"no trace folder at {trace}")
    report = run_simulation(trace, out, plot=not no_plot)
    typer.echo(format_report(report))
    typer.echo(f"report and plot written to {out}/")


from coldbrew.cli import async_cmds as _async  # noqa: E402
from coldbrew.cli import batch as _batch  # noqa: E402
from coldbrew.cli import cluster as _cluster  # noqa: E402
from coldbrew.cli import cost_estimate as _cost_estimate  # noqa: E402
from coldbrew.cli import lifecycle as _lifecycle  # noqa: E402
from coldbrew.cli import maintenance as _maintenance  # noqa: E402
from coldbrew.cli import observe as _observe  # noqa: E402  (it imports helpers from here)
from coldbrew.cli import predictions_cmds as _predictions  # noqa: E402
from coldbrew.cli import quality_cmds as _quality  # noqa: E402
from coldbrew.cli import secrets_cmds as _secrets  # noqa: E402
from coldbrew.cli import security as _security  # noqa: E402
from coldbrew.cli import sources_cmds as _sources  # noqa: E402

app.add_typer(_security.keys_app, name="keys")
app.add_typer(_secrets.secrets_app, name="secrets")
app.command()(_predictions.predictions)
app.command()(_quality.quality)
app.command()(_security.audit)

app.command()(_observe.logs)
app.command()(_observe.alerts)
app.add_typer(_cost_estimate.cost_app(), name="cost")  # cost, and cost estimate
app.command()(_maintenance.gc)
app.command()(_cluster.nodes)
app.add_typer(_async.dlq_app, name="dlq")
app.add_typer(_async.schedule_app, name="schedule")
app.add_typer(_batch.batch_app, name="batch")
app.add_typer(_sources.source_app, name="source")
app.command()(_async.events)
app.command()(_async.results)
app.command()(_lifecycle.restart)


def main() -> None:
    """Console-script entry point."""
    from coldbrew.settings import InvalidSettings

    try:
        app()
    except InvalidSettings as exc:  # a bad COLDBREW_* value, from whichever command read them
        err().print(f"error: {exc.message}", markup=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
