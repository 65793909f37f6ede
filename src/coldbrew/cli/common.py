"""What every ``coldbrew`` subcommand shares: the server connection, errors, common options.

One place, so that ``--url``, ``--json``, exit codes and error lines are the same in every
command, and subcommand modules never import ``cli.main`` (which imports them)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer
from rich.console import Console

from coldbrew.cli.client import ApiError, ColdbrewClient, ServerUnreachable
from coldbrew.settings import Settings

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Where the coldbrew server listens (default: COLDBREW_URL, else "
        "http://127.0.0.1:8080).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]


def out() -> Console:
    # Built per call, not at import: CliRunner swaps sys.stdout for each invocation.
    return Console(highlight=False)


def err() -> Console:
    return Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line to stderr (no markup: messages may contain brackets) and exit."""
    err().print(message, markup=False, soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def connect(url: str | None) -> Iterator[ColdbrewClient]:
    """A client whose failures become the CLI's one-line errors and exit codes: 1 the server
    refused, 2 no server at the URL."""
    try:
        with ColdbrewClient(url or Settings().url) as client:
            yield client
    except ServerUnreachable as exc:
        raise fail(str(exc), 2) from None
    except ApiError as exc:
        raise fail(str(exc), 1) from None
