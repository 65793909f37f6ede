"""A ``coldbrew`` command that starts in milliseconds, for tests that run many documented commands.

Each real ``coldbrew`` run spends about a second of CPU importing the CLI before it does
anything. ``CliForkServer`` imports it once, in a process of its own, and forks that process for
each command; ``bin/coldbrew`` in its folder is a small client that hands the server its argv,
working directory, environment and its own stdin/stdout/stderr (the file descriptors
themselves, over a Unix socket), then exits with the command's exit code. So the child runs
``coldbrew.cli.main:main`` (the console script's entry point) exactly as the installed script
would, reading and writing the caller's real pipes and terminal; only the import is shared.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

# The server: one import of the CLI, then a fork per connection. A thread per child waits for it
# and sends its exit status back, so commands piped into each other run at the same time.
SERVER = r"""
import json, os, socket, struct, sys, threading
from coldbrew.cli.main import main

def serve_one(conn):
    msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    size = struct.unpack("!I", msg[:4])[0]
    data = msg[4:]
    while len(data) < size:
        data += conn.recv(1 << 16)
    request = json.loads(data)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = request["argv"]
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, (int, type(None))):
                    print(exc.code, file=sys.stderr)
        finally:
            try:
                sys.stdout.flush(); sys.stderr.flush()
            finally:
                os._exit(code)
    for fd in fds:
        os.close(fd)
    def wait():
        _pid, status = os.waitpid(pid, 0)
        conn.sendall(str(os.waitstatus_to_exitcode(status) & 0xFF).encode())
        conn.close()
    threading.Thread(target=wait, daemon=True).start()

listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])
listener.listen(64)
print("ready", flush=True)
while True:
    conn, _ = listener.accept()
    serve_one(conn)
"""

# The client, run as `coldbrew`: isolated, no site packages (-IS): it starts in milliseconds.
CLIENT = r"""#!{python} -IS
import json, os, socket, struct, sys
sock = socket.socket(socket.AF_UNIX)
sock.connect({socket_path!r})
data = json.dumps({{"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ)}}).encode()
socket.send_fds(sock, [struct.pack("!I", len(data)) + data], [0, 1, 2])
answer = b""
while chunk := sock.recv(16):
    answer += chunk
sys.exit(int(answer or b"1"))
"""


class CliForkServer:
    """``bin`` is a folder to put first on PATH: its ``coldbrew`` is served by this process."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.bin = folder / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        socket_path = folder / "cli.sock"
        client = self.bin / "coldbrew"
        client.write_text(CLIENT.format(python=sys.executable, socket_path=str(socket_path)))
        client.chmod(0o755)
        # Its own session: stop() ends the server and every command still running, by group.
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(socket_path)],
            env=env,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # b"" if it died importing the CLI
        if line.strip() != b"ready":
            raise RuntimeError(f"the CLI fork server did not start: {line!r}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(10)
