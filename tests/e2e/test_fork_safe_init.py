"""Fork-safe init: a version whose import leaves state a fork would share (threads, sockets,
open files, child processes) gets per-instance init, visibly; hooks keep the fast path.

Real servers, real instances, a real PostgreSQL where the test needs one (skipped without it
unless COLDBREW_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from support import Server, write_bundle

FAST = (
    "handler = 'handler:handler'\nidle_timeout_s = 30\nmax_instances = 4\nconcurrency = 1\n"
    "max_queue = 2000\nqueue_timeout_s = 60\nbatching.mode = 'off'\n"
)


def wait_for(predicate, timeout_s: float = 20.0) -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def template_of(server: Server, name: str) -> str:
    pools = server.client.get(f"/v1/functions/{name}").json()["pools"]
    return pools[0]["template"] if pools else ""


def settled(server: Server, name: str) -> str:
    """The pool's template status once it is no longer building one."""
    return wait_for(
        lambda: (
            (s := template_of(server, name))
            and s not in ("runtime template", "version template (loading)")
            and s
        )
    )


async def _invoke_many(url: str, name: str, total: int, connections: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        gate = asyncio.Semaphore(connections)

        async def one(i: int) -> httpx.Response:
            async with gate:
                return await client.post(f"/v1/functions/{name}/invoke", json={"i": i})

        return await asyncio.gather(*(one(i) for i in range(total)))


def invoke_many(server: Server, name: str, total: int = 1000, connections: int = 32) -> list[Any]:
    responses = asyncio.run(_invoke_many(server.url, name, total, connections))
    errors = [r for r in responses if r.status_code != 200]
    assert not errors, f"{len(errors)} errors, first: {errors[0].status_code} {errors[0].text}"
    return [r.json() for r in responses]


def deploy(server: Server, name: str, folder: Path, code: str, config: str = FAST) -> None:
    response = server.deploy_folder(name, write_bundle(folder, code, config))
    assert response.status_code == 201, response.text


def warm_two(server: Server, name: str) -> None:
    """One cold start from the runtime template makes the pool build its version template."""
    assert server.invoke(name, {}).status_code == 200


THREAD_AT_IMPORT = """
import threading, time
threading.Thread(target=time.sleep, args=(3600,), daemon=True, name="poller").start()

def handler(event, context):
    return {"threads": threading.active_count()}
"""

UDP_AT_IMPORT = """
import os, socket
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect(("127.0.0.1", 9))

def handler(event, context):
    return {"pid": os.getpid()}
"""

HOOKS = """
import os, socket
import coldbrew

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # at import: would be shared...
sock.connect(("127.0.0.1", 9))
STARTS = []
DECORATED = []
FORKED = []
os.register_at_fork(after_in_child=lambda: FORKED.append(os.getpid()))

def on_instance_start():                                   # ...but each instance reopens it
    global sock
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", 9))
    STARTS.append(os.getpid())

@coldbrew.after_fork
def also():
    DECORATED.append(os.getpid())

def handler(event, context):
    return {"pid": os.getpid(), "starts": STARTS, "decorated": DECORATED, "forked": FORKED,
            "port": sock.getsockname()[1]}
"""


def test_thread_at_import_is_detected(server: Server, tmp_path: Path) -> None:
    deploy(server, "fsi-thread", tmp_path / "b", THREAD_AT_IMPORT)
    warm_two(server, "fsi-thread")
    status = settled(server, "fsi-thread")
    assert status.startswith("per-instance init (") and "thread 'poller' started" in status
    # Every instance still works: each runs the import (and so its thread) itself.
    answers = invoke_many(server, "fsi-thread", total=40, connections=8)
    assert all(a["threads"] == 2 for a in answers)
    log = server.client.get("/v1/functions/fsi-thread/logs").text
    assert "per-instance init" in log and "poller" in log
    assert "fsi-thread:1 uses per-instance init" in server.log_path.read_text()
    # Not retried: the pool keeps its verdict instead of building templates again and again.
    assert template_of(server, "fsi-thread") == status


def test_socket_at_import_is_described(server: Server, tmp_path: Path) -> None:
    deploy(server, "fsi-udp", tmp_path / "b", UDP_AT_IMPORT)
    warm_two(server, "fsi-udp")
    status = settled(server, "fsi-udp")
    assert status == "per-instance init (UDP socket to 127.0.0.1:9 opened at import)"


def test_hooks_keep_the_fast_path(server: Server, tmp_path: Path) -> None:
    deploy(server, "fsi-hooks", tmp_path / "b", HOOKS)
    warm_two(server, "fsi-hooks")
    assert settled(server, "fsi-hooks") == "version template"
    answers = invoke_many(server, "fsi-hooks", total=200, connections=16)
    by_pid = {a["pid"]: a for a in answers}
    assert len(by_pid) >= 2
    forked = [a for a in by_pid.values() if a["forked"]]  # forked from the version template
    assert forked, by_pid
    for pid, answer in by_pid.items():
        # Each hook ran exactly once, in this very process, before it served.
        assert answer["starts"] == [pid] and answer["decorated"] == [pid]
    for answer in forked:
        assert answer["forked"][-1] == answer["pid"]  # os.register_at_fork ran in the child
    assert len({a["port"] for a in by_pid.values()}) == len(by_pid)  # a socket each


def test_init_setting_forces_either_way(server: Server, tmp_path: Path) -> None:
    deploy(server, "fsi-shared", tmp_path / "s", THREAD_AT_IMPORT, FAST + 'init = "shared"\n')
    warm_two(server, "fsi-shared")
    assert settled(server, "fsi-shared") == "version template"

    deploy(server, "fsi-per", tmp_path / "p", UDP_AT_IMPORT, FAST + 'init = "per-instance"\n')
    warm_two(server, "fsi-per")
    status = template_of(server, "fsi-per")
    assert status == 'per-instance init (init = "per-instance" in coldbrew.toml)'
    info = server.client.get("/v1/functions/fsi-per").json()["pools"][0]
    assert info["version_template"] is False


# --- PostgreSQL: the common Lambda habit of connecting at import --------------------------------

PSYCOPG_AT_IMPORT = """
import os, psycopg
conn = psycopg.connect(os.environ["DSN"], autocommit=True)

def handler(event, context):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return {"backend": cur.fetchone()[0], "pid": os.getpid()}
"""

PSYCOPG_HOOK = """
import os, psycopg
conn = psycopg.connect(os.environ["DSN"], autocommit=True)

def on_instance_start():
    global conn
    conn = psycopg.connect(os.environ["DSN"], autocommit=True)

def handler(event, context):
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return {"backend": cur.fetchone()[0], "pid": os.getpid()}
"""


@pytest.fixture(scope="module")
def dsn(postgres_url: str) -> Iterator[str]:
    url = make_url(postgres_url)
    yield f"host={url.host} port={url.port or 5432} user={url.username} dbname={url.database}"


def pg_config(dsn: str) -> str:
    return FAST + f'\n[environment]\nDSN = "{dsn}"\n'


def backends_by_pid(answers: list[dict[str, Any]]) -> dict[int, set[int]]:
    found: dict[int, set[int]] = defaultdict(set)
    for answer in answers:
        found[answer["pid"]].add(answer["backend"])
    return found


def test_psycopg_at_import_gets_a_connection_per_instance(
    server: Server, tmp_path: Path, dsn: str
) -> None:
    deploy(server, "fsi-pg", tmp_path / "b", PSYCOPG_AT_IMPORT, pg_config(dsn))
    warm_two(server, "fsi-pg")
    status = settled(server, "fsi-pg")
    assert status.startswith("per-instance init (socket to 127.0.0.1:5432 opened at import")
    found = backends_by_pid(invoke_many(server, "fsi-pg"))
    assert len(found) >= 2, found
    assert all(len(backends) == 1 for backends in found.values()), found
    every = [b for backends in found.values() for b in backends]
    assert len(set(every)) == len(every), f"instances share a backend: {found}"


def test_psycopg_with_hook_keeps_the_version_template(
    server: Server, tmp_path: Path, dsn: str
) -> None:
    deploy(server, "fsi-pg-hook", tmp_path / "b", PSYCOPG_HOOK, pg_config(dsn))
    warm_two(server, "fsi-pg-hook")
    assert settled(server, "fsi-pg-hook") == "version template"
    found = backends_by_pid(invoke_many(server, "fsi-pg-hook", total=300))
    assert len(found) >= 2, found
    assert all(len(backends) == 1 for backends in found.values()), found
    every = [b for backends in found.values() for b in backends]
    assert len(set(every)) == len(every), f"instances share a backend: {found}"
    sources = [
        c["source"]
        for pool in server.client.get("/v1/functions/fsi-pg-hook").json()["pools"]
        for c in pool["recent_cold_starts"]
    ]
    assert any(s.startswith("version-template") for s in sources), sources


TORCH_THREADS_AT_IMPORT = """
import os
import torch

torch.set_num_threads(4)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 2))
with torch.no_grad():
    net(torch.randn(512, 64))          # the warm-up forward: starts the intra-op thread pool

def handler(event, context):
    with torch.no_grad():
        out = net(torch.ones(256, 64))
    return {"sum": round(float(out.sum()), 3), "pid": os.getpid()}
"""


def test_torch_threads_at_import_never_hang(server: Server, tmp_path: Path) -> None:
    """The issue's hang: instances forked after a 4-thread forward at import waited forever on
    the pool's locks. Detected, so each instance imports (and starts its pool) itself."""
    pytest.importorskip("torch")
    config = FAST.replace("max_instances = 4", "max_instances = 2\ntimeout_s = 20")
    deploy(server, "fsi-torch", tmp_path / "b", TORCH_THREADS_AT_IMPORT, config)
    warm_two(server, "fsi-torch")
    status = settled(server, "fsi-torch")
    assert status.startswith("per-instance init (") and "native thread" in status, status
    answers = invoke_many(server, "fsi-torch", total=16, connections=4)
    assert len({a["sum"] for a in answers}) == 1


class _ThreadAtLoad:
    """Unpickles as a fitted DummyClassifier, starting a thread on the way (as a model class
    with a background loader, or any pickle, may): the built-in handler's loads are checked."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        code = (
            "[__import__('threading').Thread(target=__import__('time').sleep, args=(600,), "
            "daemon=True, name='loader').start(), __import__('sklearn.dummy', fromlist=['_'])"
            ".DummyClassifier(strategy='constant', constant=1).fit([[0.0, 0.0]], [1])][1]"
        )
        return (eval, (code,))


def test_model_loads_are_checked_too(server: Server, tmp_path: Path) -> None:
    import joblib

    path = tmp_path / "leaky.joblib"
    joblib.dump(_ThreadAtLoad(), path)
    assert server.deploy_file("fsi-model", path).status_code == 201
    first = server.invoke("fsi-model", {"instances": [[0.0, 0.0]]})
    assert first.json()["predictions"] == [1]
    status = settled(server, "fsi-model")
    assert status == "per-instance init (thread 'loader' started when the model loaded)"
