"""``coldbrew quickstart``: train the bundled examples, serve them, and show how to call them.

The server runs in the main thread (uvicorn installs its Ctrl-C handlers there); a helper thread
waits for ``/healthz`` and deploys the examples over HTTP, exactly as a user would, so the
quickstart also proves the deploy path works on this machine.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from coldbrew.cli.client import ClientError, ColdbrewClient, ServerUnreachable
from coldbrew.cli.packaging import prepare_upload
from coldbrew.cli.serving import bind_socket, public_url
from coldbrew.examples import Example, build_examples
from coldbrew.settings import Settings

READY_TIMEOUT_S = 90.0
"""The server pre-imports numpy, scikit-learn, ONNX Runtime and XGBoost before it answers; on
a slow disk with cold caches that can take far longer than the usual 2-3 s."""


@dataclass
class Deployed:
    """The outcome of deploying one example: a version, or the error the server gave."""

    example: Example
    version: int | None = None
    error: str | None = None


def invoke_commands(example: Example, url: str, default_url: str) -> tuple[str, str]:
    """A curl line and a ``coldbrew invoke`` line, shell-quoted so they survive pasting."""
    event = json.dumps(example.sample_event, separators=(",", ":"))
    endpoint = f"{url}/v1/functions/{example.name}/invoke"
    curl = (
        f"curl -s -X POST {shlex.quote(endpoint)} "
        f"-H 'content-type: application/json' -d {shlex.quote(event)}"
    )
    # The CLI finds the server through COLDBREW_URL; only spell --url out when it would not.
    url_flag = "" if url == default_url.rstrip("/") else f" --url {shlex.quote(url)}"
    cli = f"coldbrew invoke {shlex.quote(example.name)}{url_flag} --data {shlex.quote(event)}"
    return curl, cli


def print_welcome(
    console: Console, url: str, home: Path, results: list[Deployed], default_url: str
) -> None:
    console.print(f"\n[bold]coldbrew is serving at {url}[/bold]  (home {home}; Ctrl-C to stop)\n")
    for result in results:
        example = result.example
        if result.error is not None:
            console.print(f"[red]✗ {example.name}[/red]: could not deploy: ", end="")
            console.print(result.error, markup=False)
            continue
        console.print(f"[green]✓ {example.name}[/green] version {result.version}: ", end="")
        console.print(example.description, markup=False, highlight=False)
        for line in invoke_commands(example, url, default_url):
            # soft_wrap: a wrapped line would paste as two broken commands.
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        console.print()
    console.print(
        f"List functions with [bold]coldbrew ls[/bold], inspect one with "
        f"[bold]coldbrew info NAME[/bold]; curl {url}/v1/functions also works."
    )


def wait_until_ready(
    client: ColdbrewClient, is_running: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S
) -> bool:
    """Poll ``/healthz`` until it answers; False if the server stopped or never answered."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and is_running():
        try:
            client.health()
            return True
        except ServerUnreachable:
            time.sleep(0.1)
        except ClientError:
            time.sleep(0.1)
    return False


def deploy_examples(client: ColdbrewClient, examples: list[Example]) -> list[Deployed]:
    results = []
    for example in examples:
        upload = prepare_upload(example.path)
        try:
            answer = client.deploy(
                example.name,
                upload.filename,
                upload.data,
                description=example.description,
                trusted=True,  # built on this machine by coldbrew itself, from sklearn's data
            )
            results.append(Deployed(example, version=int(answer["version"])))
        except ClientError as exc:
            results.append(Deployed(example, error=str(exc)))
        finally:
            upload.data.close()
    return results


def run_quickstart(settings: Settings, console: Console, include_extra: bool = False) -> int:
    """Serve until Ctrl-C; returns the exit code. Raises PortInUse before any work is done."""
    from coldbrew.gateway.server import build_server  # heavy: only when actually serving

    sock = bind_socket(settings.host, settings.port)
    url = public_url(settings.host, settings.port)
    with console.status("training the example models (no downloads)…"):
        examples = build_examples(settings.home / "examples", include_extra)
    server = build_server(settings)
    failed = threading.Event()

    def deploy_when_ready() -> None:
        with ColdbrewClient(url) as client:
            if not wait_until_ready(client, lambda: not server.should_exit):
                failed.set()
                server.should_exit = True
                return
            results = deploy_examples(client, examples)
        print_welcome(console, url, settings.home, results, Settings().url)

    console.print(f"starting the server on {url} …")
    threading.Thread(target=deploy_when_ready, name="quickstart-deploy", daemon=True).start()
    server.run(sockets=[sock])
    if failed.is_set() or not server.started:
        console.print("[red]the server did not start; see the log above[/red]")
        return 1
    return 0
