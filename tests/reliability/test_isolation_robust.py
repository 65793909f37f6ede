"""Isolation that holds up: several gateways on one home, and gateways that are killed.

- ACL grants are read-modify-write of a whole ACL: several gateways granting functions the same
  content-addressed bundle at once must keep every grant, and a sibling's start-up hardening
  must never take one away (both under ``<home>/acl.lock``, security/home.py).
- Two real isolated gateways on one home deploy and invoke functions that share one bundle
  folder, concurrently: every invocation answers (the race once seen as "No module named
  'handler'", which turned isolation off in tests/jobs/test_schedules_live.py).
- Private /tmp mounts live in each process's own mount namespace, so a gateway killed with
  SIGKILL leaves none behind in the machine's mount table.

These need root (CI runs as root); without it they skip, unless COLDBREW_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from coldbrew.security import home
from coldbrew.settings import Settings
from support import Server, write_bundle

HANDLER = "def handler(event, context):\n    return {'ok': True}\n"
CONFIG = "handler = 'handler:handler'\nmax_instances = 2\n"


def _require_root() -> None:
    if os.geteuid() == 0:
        return
    reason = "isolation needs coldbrew to run as root"
    if os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (COLDBREW_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def _require_acls(folder: Path) -> None:
    probe = folder / "probe"
    probe.mkdir()
    try:
        home.grant(probe, home.USER, 199999, 0o5)
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs here: {exc}")


def _grant_many(root: str, folder: str, uids: list[int]) -> None:
    for uid in uids:
        home.locked_grant(Path(root), Path(folder), home.USER, uid, 0o5, private=True)


def test_concurrent_grants_on_one_folder_keep_every_uid(tmp_path: Path) -> None:
    _require_root()
    _require_acls(tmp_path)
    folder = tmp_path / "bundles" / "abc"
    folder.mkdir(parents=True, mode=0o700)
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(
            target=_grant_many,
            args=(str(tmp_path), str(folder), [200000 + w * 100 + i for i in range(25)]),
        )
        for w in range(6)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    entries = home._read_acl(folder)
    granted = {ident for (tag, ident), perm in entries.items() if tag == home.USER and perm == 5}
    expected = {200000 + w * 100 + i for w in range(6) for i in range(25)}
    assert granted == expected, f"{len(expected - granted)} grants were lost"
    assert entries[(home.MASK, home.NO_ID)] == 0o5
    assert entries[(home.OTHER, home.NO_ID)] == 0


def _harden(home_dir: str, go: Any) -> None:
    go.wait(30)
    home.harden(Settings(home=Path(home_dir), isolation="on"))


def test_start_up_hardening_waits_for_a_siblings_grant(tmp_path: Path) -> None:
    """A gateway starting chmods the bundle folders that have no ACL yet; a chmod landing just
    after a sibling's grant would rewrite the ACL mask to nothing (its instance: "No module
    named 'handler'"). So hardening takes the grants lock, and waits while a grant holds it."""
    _require_root()
    _require_acls(tmp_path)
    settings = Settings(home=tmp_path / "home", isolation="on")
    for folder in (settings.bundles_dir, settings.run_dir):
        folder.mkdir(parents=True)
    fresh = settings.bundles_dir / "fresh"
    fresh.mkdir()
    fresh.chmod(0o755)  # hardening would make it 0700 (it has no ACL yet)
    context = multiprocessing.get_context("fork")
    go = context.Event()
    # Forked before the lock is taken: a child holding a copy of the lock's descriptor would
    # keep it held after the parent lets go.
    starter = context.Process(target=_harden, args=(str(settings.home), go))
    starter.start()
    with home.acl_lock(settings.home):  # a sibling between reading and writing an ACL
        go.set()
        starter.join(1.0)
        assert os.stat(fresh).st_mode & 0o777 == 0o755, "hardening did not wait for the lock"
        home.grant(fresh, home.USER, 200001, 0o5, private=True)
    starter.join(30)
    assert starter.exitcode == 0
    assert home._read_acl(fresh)[(home.MASK, home.NO_ID)] == 0o5  # the grant still counts


def _invoke(server: Server, name: str) -> tuple[int, str]:
    response = server.client.post(f"/v1/functions/{name}/invoke", json={})
    return response.status_code, response.text


@pytest.mark.timeout(180)
def test_two_isolated_gateways_share_bundles(tmp_path: Path) -> None:
    """Two functions with byte-identical bundles share one folder; two gateways on one home
    materialise and grant it at once, a third gateway starts (and hardens) meanwhile."""
    _require_root()
    env = {"COLDBREW_ISOLATION": "on", "COLDBREW_SPARES": "0"}
    root = tmp_path / "home"
    one, two, late = Server(root, env), Server(root, env), Server(root, env)
    with cf.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: s.start(), [one, two]))
    try:
        failures = []
        for round_ in range(2):
            folder = write_bundle(tmp_path / f"b{round_}", HANDLER + f"# {round_}\n", CONFIG)
            names = [f"r{round_}a", f"r{round_}b"]
            for name in names:
                deployed = one.deploy_folder(name, folder)
                assert deployed.status_code == 201, deployed.text
            calls = [(s, n) for s in (one, two) for n in names] * 2
            with cf.ThreadPoolExecutor(len(calls) + 1) as pool:
                starting = pool.submit(late.start) if round_ == 1 else None
                answers = list(pool.map(lambda c: _invoke(*c), calls))
                if starting is not None:
                    starting.result()
            failures += [text for status, text in answers if status != 200]
        if late.process is not None:
            failures += [t for s, t in (_invoke(late, n) for n in ("r0a", "r1b")) if s != 200]
        assert not failures, failures[:3]
        info = one.client.get("/v1/info").json()
        assert info["isolation"]["enabled"] is True, info
    finally:
        for server in (one, two, late):
            if server.process is not None:
                server.stop()


def _mounts(folder: Path) -> list[str]:
    from coldbrew.runtime.isolation import mounts_under

    return mounts_under(str(folder.resolve()))


@pytest.mark.timeout(120)
def test_a_killed_gateway_leaves_no_tmpfs_mount(tmp_path: Path) -> None:
    """Each instance's private /tmp is a tmpfs; SIGKILL the gateway and none may stay in the
    machine's mount table (pytest could not even delete its folder)."""
    _require_root()
    root = tmp_path / "home"
    server = Server(root, {"COLDBREW_ISOLATION": "on"})
    server.start()
    try:
        for name in ("m1", "m2"):
            folder = write_bundle(tmp_path / name, HANDLER + f"# {name}\n", CONFIG)
            assert server.deploy_folder(name, folder).status_code == 201
            status, text = _invoke(server, name)
            assert status == 200, text
        info = server.client.get("/v1/info").json()["isolation"]
        if info.get("private_tmp") != "tmpfs":
            pytest.skip("no tmpfs mounts here: private /tmp folders are plain folders")
        assert _mounts(root), "expected the instances' tmpfs mounts while the gateway runs"
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        deadline = time.monotonic() + 10
        while _mounts(root) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _mounts(root) == []
    finally:
        if server.process is not None and server.process.poll() is None:
            server.stop()
