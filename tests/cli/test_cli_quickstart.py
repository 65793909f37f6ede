"""``coldbrew quickstart`` end to end: the printed commands must work when pasted."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from coldbrew.cli.main import app
from coldbrew.cli.quickstart import invoke_commands
from coldbrew.examples import Example
from support import free_port

WELCOME_TIMEOUT_S = 90


def test_invoke_commands_quote_for_the_shell() -> None:
    """A sample event with a quote and a space must survive the shell unchanged."""
    event = {"text": 'it\'s a "test"', "values": [1, 2.5]}
    example = Example("greeter", Path("x"), event, "")
    curl, cli = invoke_commands(example, "http://127.0.0.1:9000", "http://127.0.0.1:8080")
    curl_args = shlex.split(curl)
    assert curl_args[:4] == ["curl", "-s", "-X", "POST"]
    assert curl_args[4] == "http://127.0.0.1:9000/v1/functions/greeter/invoke"
    assert json.loads(curl_args[-1]) == event
    assert shlex.split(cli) == [
        "coldbrew",
        "invoke",
        "greeter",
        "--url",
        "http://127.0.0.1:9000",
        "--data",
        json.dumps(event, separators=(",", ":")),
    ]
    _, default_cli = invoke_commands(example, "http://127.0.0.1:8080", "http://127.0.0.1:8080")
    assert "--url" not in default_cli


def test_quickstart_on_taken_port(tmp_path: Path) -> None:
    with socket_listening() as port:
        result = CliRunner().invoke(
            app, ["quickstart", "--port", str(port), "--home", str(tmp_path)]
        )
    assert result.exit_code == 1
    assert result.stderr == (
        f"port {port} on 127.0.0.1 is already in use: stop the other server or pick another "
        "port with --port\n"
    )
    assert not (tmp_path / "examples").exists()  # refused before training anything


def test_quickstart_serves_the_examples(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDBREW_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coldbrew.cli.main",
            "quickstart",
            "--port",
            str(port),
            "--home",
            str(tmp_path),
        ],
        env={**env, "COLUMNS": "100"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("List functions"):
                done.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert done.wait(WELCOME_TIMEOUT_S), "\n".join(lines) + _stderr_tail(process)
        assert sum(line.startswith("✓ ") for line in lines) == 3, "\n".join(lines)
        cli_lines = [line.strip() for line in lines if line.strip().startswith("coldbrew invoke")]
        assert {shlex.split(line)[2] for line in cli_lines} == {
            "breast-cancer",
            "digits",
            "water-quality",
        }
        for line in cli_lines:
            result = CliRunner().invoke(app, shlex.split(line)[1:])
            assert result.exit_code == 0, (line, result.output)
            json.loads(result.stdout)
        curl_lines = [line.strip() for line in lines if line.strip().startswith("curl ")]
        assert len(curl_lines) == 3
        if shutil.which("curl"):
            out = subprocess.run(
                curl_lines[0], shell=True, capture_output=True, text=True, timeout=30, check=True
            )
            json.loads(out.stdout)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    # uvicorn re-raises the Ctrl-C it caught after a graceful shutdown, so the shell sees the
    # conventional 128 + SIGINT, and nothing is printed about it.
    assert code == 130
    assert "Traceback" not in (process.stderr.read() if process.stderr else "")


def _stderr_tail(process: subprocess.Popen[str]) -> str:
    if process.poll() is None or process.stderr is None:
        return ""
    return "\n--- stderr ---\n" + process.stderr.read()[-3000:]


@contextlib.contextmanager
def socket_listening() -> Iterator[int]:
    """A loopback port that something (here: this process) is already listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


pytestmark = pytest.mark.timeout(150)
