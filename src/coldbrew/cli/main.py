"""The ``coldbrew`` command: run the server, deploy functions, manage them, invoke them.

Exit codes are part of the interface, so scripts can branch on them: 0 success, 1 the server
refused (``error CODE: message`` on stderr), 2 no server at the URL or bad usage.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TransferSpeedColumn,
)

from coldbrew.cli import render
from coldbrew.cli.client import ApiError, ColdbrewClient, InvokeResult, ServerUnreachable
from coldbrew.cli.packaging import PackagingError, default_name, prepare_upload
from coldbrew.cli.routes import routes_app
from coldbrew.cli.serving import PortInUse, settings_with
from coldbrew.settings import Settings

app = typer.Typer(
    name="coldbrew",
    no_args_is_help=True,
    add_completion=False,
    help="Serverless ML inference you run yourself.",
)
alias_app = typer.Typer(no_args_is_help=True, help="Point aliases (prod, staging) at versions.")
app.add_typer(alias_app, name="alias")
app.add_typer(routes_app, name="route")


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Where the coldbrew server listens (default: COLDBREW_URL, else "
        "http://127.0.0.1:8080).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]
HostOption = Annotated[str | None, typer.Option(help="Interface to bind (default: COLDBREW_HOST).")]
PortOption = Annotated[int | None, typer.Option(help="TCP port (default: COLDBREW_PORT).")]
HomeOption = Annotated[Path | None, typer.Option(help="Data folder (default: COLDBREW_HOME).")]


def _out() -> Console:
    # Built per call, not at import: CliRunner swaps sys.stdout for each invocation.
    return Console(highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line to stderr (no markup: messages may contain brackets) and exit."""
    _err().print(message, markup=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def connect(url: str | None) -> Iterator[ColdbrewClient]:
    """A client whose failures become the CLI's one-line errors and exit codes."""
    try:
        with ColdbrewClient(url or Settings().url) as client:
            yield client
    except ServerUnreachable as exc:
        raise fail(str(exc), 2) from None
    except ApiError as exc:
        raise fail(str(exc), 1) from None


# --- server ---------------------------------------------------------------------------------


@app.command()
def serve(host: HostOption = None, port: PortOption = None, home: HomeOption = None) -> None:
    """Run the coldbrew server in the foreground (Ctrl-C to stop)."""
    from coldbrew.cli.serving import bind_socket
    from coldbrew.gateway.server import build_server

    settings = settings_with(host, port, home)
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        raise fail(str(exc)) from None
    server = build_server(settings)
    server.run(sockets=[sock])
    if not server.started:
        raise typer.Exit(1)


@app.command()
def quickstart(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    home: HomeOption = None,
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
        _out().print(f"auth is on: admin key (shown once): {token}", markup=False)
    try:
        code = run_quickstart(settings, _out())
    except PortInUse as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(code)


# --- deploy and manage ----------------------------------------------------------------------


@app.command()
def deploy(
    path: Annotated[Path, typer.Argument(help="Model file, bundle folder or archive.")],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Function name (default: from PATH).")
    ] = None,
    description: Annotated[str | None, typer.Option("--description", "-d")] = None,
    trust: Annotated[
        bool,
        typer.Option("--trust", help="Allow a pickle-based model (joblib/pickle): it runs code."),
    ] = False,
    url: UrlOption = None,
) -> None:
    """Deploy a model file, a bundle folder or a bundle archive as a new version."""
    name = name or default_name(path)
    try:
        upload = prepare_upload(path)
    except PackagingError as exc:
        raise fail(f"error: {exc}") from None
    with connect(url) as client, upload.data, _upload_progress(upload.size) as advance:
        answer = client.deploy(name, upload.filename, upload.data, description, advance, trust)
    sha = render.short_sha(answer["content_sha256"])
    if answer.get("created", True):
        init = answer.get("init_ms")
        extra = f", init {init:.0f} ms" if isinstance(init, int | float) else ""
        _out().print(
            f"deployed {answer['function']} version {answer['version']} (sha256 {sha}{extra})",
            markup=False,
        )
    else:
        _out().print(
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
    console = _err()
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
        render.print_json(_out(), functions)
    elif not functions:
        _err().print("no functions yet: deploy one with `coldbrew deploy PATH`", markup=False)
    else:
        _out().print(render.functions_table(functions))


@app.command()
def info(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Show a function: its versions, aliases and live instances."""
    with connect(url) as client:
        function = client.get_function(name)
    if as_json:
        render.print_json(_out(), function)
        return
    out = _out()
    aliases = function.get("aliases") or {}
    out.print(f"[bold]{function['name']}[/bold]  {function.get('description') or ''}")
    out.print(
        f"created {render.short_time(function.get('created_at'))}, updated "
        f"{render.short_time(function.get('updated_at'))}, aliases "
        f"{render.format_aliases(aliases)}",
        markup=False,
    )
    out.print("\n[bold]versions[/bold]")
    out.print(render.versions_table(function.get("versions", []), aliases))
    pools = function.get("pools", [])
    instances = render.instances_table(pools)
    out.print("\n[bold]instances[/bold]")
    out.print(instances if instances is not None else "none live (scaled to zero)")
    for pool in pools:
        out.print(
            f"version {pool.get('version')}: {pool.get('queued', 0)} queued, "
            f"{pool.get('cold_starts', 0)} cold starts",
            markup=False,
        )


@app.command()
def versions(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List the versions of a function."""
    with connect(url) as client:
        found = client.list_versions(name)
        aliases = {} if as_json else client.get_function(name).get("aliases") or {}
    if as_json:
        render.print_json(_out(), found)
    else:
        _out().print(render.versions_table(found, aliases))


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
    _out().print(f"deleted {name}", markup=False)


@alias_app.command("set")
def alias_set(name: str, alias: str, version: int, url: UrlOption = None) -> None:
    """Point ALIAS of function NAME at VERSION (creating the alias if needed)."""
    with connect(url) as client:
        record = client.set_alias(name, alias, version)
    _out().print(
        f"{name}:{record.get('name', alias)} → version {record.get('version', version)}",
        markup=False,
    )


@alias_app.command("ls")
def alias_ls(name: str, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """List the aliases of a function."""
    with connect(url) as client:
        aliases = client.list_aliases(name)
    if as_json:
        render.print_json(_out(), aliases)
    else:
        _out().print(render.aliases_table(aliases))


@alias_app.command("rm")
def alias_rm(name: str, alias: str, url: UrlOption = None) -> None:
    """Delete an alias (the versions stay)."""
    with connect(url) as client:
        client.delete_alias(name, alias)
    _out().print(f"deleted alias {name}:{alias}", markup=False)


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
    _err().print(" · ".join(parts), markup=False, soft_wrap=True)


def _print_body(content: bytes) -> None:
    """Pretty JSON when the body is JSON, the bytes as they are otherwise."""
    try:
        parsed = json.loads(content)
    except ValueError:
        sys.stdout.write(content.decode("utf-8", errors="replace") + "\n")
        return
    render.print_json(_out(), parsed)


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
    url: UrlOption = None,
) -> None:
    """Invoke a function synchronously and print its answer."""
    payload = read_event(data, file)
    with connect(url) as client:
        result = client.invoke(target, payload)
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
    trace: Annotated[Path, typer.Option(help="folder with the Azure Functions trace CSVs")],
    out: Annotated[Path, typer.Option(help="where report.txt and keepalive.png go")] = Path(
        "simulate-out"
    ),
    no_plot: Annotated[bool, typer.Option("--no-plot", help="skip the PNG")] = False,
) -> None:
    """Replay a trace through keep-alive policies in simulated time and compare them."""
    from coldbrew.scaling.simulate import format_report, run_simulation

    if not trace.is_dir():
        raise fail(f"no trace folder at {trace}")
    report = run_simulation(trace, out, plot=not no_plot)
    typer.echo(format_report(report))
    typer.echo(f"report and plot written to {out}/")


from coldbrew.cli import observe as _observe  # noqa: E402  (it imports helpers from here)
from coldbrew.cli import security as _security  # noqa: E402

app.add_typer(_security.keys_app, name="keys")
app.command()(_security.audit)

app.command()(_observe.logs)
app.command()(_observe.alerts)
app.command()(_observe.cost)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
