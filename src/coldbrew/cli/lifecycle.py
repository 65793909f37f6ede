"""``coldbrew restart`` and the model-update form of ``coldbrew deploy``.

``coldbrew deploy NAME --model new.joblib`` makes a new version of NAME with its current code
and config and a new model file (roll back with ``coldbrew alias set``); ``coldbrew restart
NAME[:QUALIFIER]`` replaces a version's instances and version template, for code that reads
files at import.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from coldbrew.cli.client import ColdbrewClient
from coldbrew.cli.common import UrlOption, connect, fail, out


def upload(
    client: ColdbrewClient,
    name: str,
    filename: str,
    data: IO[bytes],
    description: str | None,
    trusted: bool,
    options: dict[str, str],
) -> dict[str, Any]:
    """A multipart deploy with extra fields (``model_only``, ``replace_handler``)."""
    fields = {"name": name, **options}
    if trusted:
        fields["trusted"] = "true"
    if description:
        fields["description"] = description
    files = {"file": (filename, data, "application/octet-stream")}
    return client.request_json("POST", "/v1/functions", data=fields, files=files)


def deploy_model(
    name: str,
    model: Path,
    description: str | None,
    trusted: bool,
    url: str | None,
    report: Callable[[dict[str, Any]], None],
) -> None:
    """``coldbrew deploy NAME --model FILE``: only the model changes."""
    if not model.is_file():
        raise fail(f"error: no model file at {model}", 2)
    with connect(url) as client, model.open("rb") as data:
        answer = upload(client, name, model.name, data, description, trusted, {"model_only": "1"})
    report(answer)


def restart(
    target: Annotated[
        str,
        typer.Argument(metavar="NAME[:QUALIFIER]", help="Function, e.g. digits, digits:prod."),
    ],
    url: UrlOption = None,
) -> None:
    """Replace a version's instances and version template (code that reads files at import)."""
    with connect(url) as client:
        answer = client.request_json("POST", f"/v1/functions/{target}/restart")
    template = ", and its version template" if answer.get("template_replaced") else ""
    out().print(
        f"restarted {answer['function']} version {answer['version']}: "
        f"{answer.get('instances_replaced', 0)} instance(s) replaced{template}",
        markup=False,
    )
