"""Garbage collection of blobs and bundles: the pure decision (a table), the disk pass with its
race rule, and a real server (deploy, delete, gc: back to the baseline; shared blobs survive).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coldbrew.store import LocalArtifactStore
from coldbrew.store.gc import Candidate, collect, find_garbage, guard, remove, scan
from support import Server, write_bundle

NOW = 1_000_000.0
GRACE = 100.0
A, B, C = "a" * 64, "b" * 64, "c" * 64


def cand(kind: str, key: str, age: float) -> Candidate:
    return Candidate(kind, key, Path("/nowhere") / key, NOW - age, 1)  # type: ignore[arg-type]


# (candidate, referenced blobs, referenced bundles, live bundles) -> garbage?
TABLE = [
    (cand("blob", A, 1000), {A}, set(), set(), False),  # referenced by a version
    (cand("blob", B, 1000), {A}, set(), set(), True),  # unreferenced and old
    (cand("blob", B, 10), {A}, set(), set(), False),  # unreferenced, in the grace period
    (cand("blob", B, GRACE), set(), set(), set(), True),  # exactly at the grace: old enough
    (cand("blob", A, 1000), set(), {A}, {A}, True),  # bundle sets say nothing of blobs
    (cand("bundle", A, 1000), set(), {A}, set(), False),  # a version has this content
    (cand("bundle", A, 1000), set(), set(), {A}, False),  # a live pool runs from it
    (cand("bundle", C, 1000), {C}, {A}, {B}, True),  # deleted function's bundle
    (cand("bundle", C, 5), set(), set(), set(), False),  # just materialised
    (cand("partial", "put-x1", 1000), set(), set(), set(), True),  # crashed put
    (cand("partial", "put-x2", 5), set(), set(), set(), False),  # a put in progress
    (cand("partial", "deploy-abc", 1000), set(), set(), set(), True),  # crashed deploy
    (cand("partial", ".gc-" + A + "-1", 1), set(), set(), set(), True),  # tombstone: always
]


@pytest.mark.parametrize(("candidate", "blobs", "bundles", "live", "expected"), TABLE)
def test_find_garbage_table(
    candidate: Candidate, blobs: set[str], bundles: set[str], live: set[str], expected: bool
) -> None:
    garbage, spared = find_garbage([candidate], blobs, bundles, live, NOW, GRACE)
    assert (garbage == [candidate]) is expected
    unreferenced_recent = not expected and candidate.key not in blobs | bundles | live
    assert spared == int(unreferenced_recent)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[LocalArtifactStore, Path, Path]:
    store = LocalArtifactStore(tmp_path / "artifacts")
    bundles, run = tmp_path / "bundles", tmp_path / "run"
    bundles.mkdir()
    run.mkdir()
    return store, bundles, run


def test_collect_keeps_referenced_and_recent(layout: tuple[LocalArtifactStore, Path, Path]) -> None:
    store, bundles, run = layout
    kept, gone, recent = (store.put_bytes(x) for x in (b"kept", b"gone", b"recent"))
    for digest in (kept, gone):
        _age(store.path_of(digest), 3600)
    live_dir = store.materialize({"f": kept}, bundles / ("1" * 64))
    dead_dir = store.materialize({"f": gone}, bundles / ("2" * 64))
    for folder in (live_dir, dead_dir):
        _age(folder, 3600)
        _age(folder / "f", 3600)
    crashed = run / "deploy-x"
    crashed.mkdir()
    (crashed / "upload").write_bytes(b"z" * 10)
    _age(crashed / "upload", 3600)
    _age(crashed, 3600)

    dry = collect(store.root, bundles, run, {kept}, set(), {"1" * 64}, 60, time.time(), True)
    assert {c.key for c in dry.removed} == {gone, "2" * 64, "deploy-x"}
    assert store.has(gone) and dead_dir.is_dir() and crashed.is_dir()  # dry run: nothing went

    report = collect(store.root, bundles, run, {kept}, set(), {"1" * 64}, 60, time.time())
    assert {c.key for c in report.removed} == {gone, "2" * 64, "deploy-x"}
    assert report.kept_recent == 1  # the recent blob
    assert store.has(kept) and store.has(recent) and not store.has(gone)
    assert live_dir.is_dir() and not dead_dir.exists() and not crashed.exists()
    assert sorted(p.name for p in bundles.iterdir()) == ["1" * 64]  # no tombstone left
    assert report.to_dict()["totals"]["blob"]["count"] == 1


def test_a_put_of_a_stored_blob_refreshes_it(layout: tuple[LocalArtifactStore, Path, Path]) -> None:
    """The in-flight deploy race: a blob an old, deleted version left behind is stored again by
    a new deploy whose version is not recorded yet. The put makes it recent: it stays."""
    store, bundles, run = layout
    digest = store.put_bytes(b"model weights")
    _age(store.path_of(digest), 3600)
    read_at = time.time()  # the collector read the registry: nothing references the blob
    assert store.put_bytes(b"model weights") == digest  # the new deploy stores it again
    report = collect(store.root, bundles, run, set(), set(), set(), 60, read_at)
    assert report.removed == [] and store.has(digest)


def test_removal_rechecks_age_under_the_lock(layout: tuple[LocalArtifactStore, Path, Path]) -> None:
    """A blob found old by the scan but reused before its removal is not removed."""
    store, bundles, _ = layout
    digest = store.put_bytes(b"reused")
    _age(store.path_of(digest), 3600)
    read_at = time.time()
    garbage, _ = find_garbage(scan(store.root, bundles), set(), set(), set(), read_at, 60)
    assert [c.key for c in garbage] == [digest]
    store.put_bytes(b"reused")  # between the decision and the removal
    assert remove(garbage, store.root, bundles, 60, read_at) == []
    assert store.has(digest)


def test_materialize_refreshes_or_rebuilds(layout: tuple[LocalArtifactStore, Path, Path]) -> None:
    store, bundles, run = layout
    digest = store.put_bytes(b"handler code")
    dest = store.materialize({"handler.py": digest}, bundles / ("3" * 64))
    _age(dest / "handler.py", 3600)
    _age(dest, 3600)
    read_at = time.time()
    store.materialize({"handler.py": digest}, dest)  # used again: recent
    assert collect(store.root, bundles, run, {digest}, set(), set(), 60, read_at).removed == []
    _age(dest, 3600)
    assert len(collect(store.root, bundles, run, {digest}, set(), set(), 60, time.time()).removed)
    assert not dest.exists()
    store.materialize({"handler.py": digest}, dest)  # collected: built again
    assert (dest / "handler.py").read_bytes() == b"handler code"


def test_guard_excludes_writers_while_held(tmp_path: Path) -> None:
    """The collector's exclusive lock makes a writer in another process wait."""
    code = (
        "import sys, time; from pathlib import Path; from coldbrew.store.gc import guard\n"
        "with guard(Path(sys.argv[1])): print(time.time())\n"
    )
    with guard(tmp_path, exclusive=True):
        writer = subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        time.sleep(1.0)
        released = time.time()
    acquired = float(writer.communicate(timeout=30)[0])
    assert acquired >= released
    assert list(tmp_path.iterdir()) == []  # no lock file


def test_registry_references_every_versions_blobs(tmp_path: Path) -> None:
    from coldbrew.registry import Registry

    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    registry.migrate()
    try:
        registry.create_version("keep", content_sha256=A, config={}, manifest={"m": B})
        registry.create_version("keep", content_sha256=B, config={}, manifest={"m": C})
        registry.create_version("gone", content_sha256=C, config={}, manifest={"x": A, "m": B})
        assert registry.referenced_artifacts() == ({A, B, C}, {A, B, C})
        registry.delete_function("gone")
        assert registry.referenced_artifacts() == ({B, C}, {A, B})
    finally:
        registry.close()


# --- a real server ------------------------------------------------------------------------------

HANDLER = "def handler(event, context):\n    return {'ok': True}\n"
CONFIG = "handler = 'handler:handler'\n"


def _size(path: Path) -> int:
    # The collector may remove a file between the walk and the stat: a vanished file is 0 bytes.
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _usage(home: Path) -> dict[str, int]:
    """Blobs, bundle folders and their bytes: what garbage collection looks after."""
    # The collector may remove a folder while it is walked: walk again.
    for _ in range(50):
        try:
            return _walk_usage(home)
        except FileNotFoundError:
            time.sleep(0.02)
    return _walk_usage(home)


def _walk_usage(home: Path) -> dict[str, int]:
    blobs = [p for p in (home / "artifacts/sha256").rglob("*") if p.is_file()]
    bundle_files = [p for p in (home / "bundles").rglob("*") if p.is_file()]
    return {
        "blobs": len(blobs),
        "bundles": sum(1 for _ in (home / "bundles").iterdir()),
        "bytes": sum(_size(p) for p in (*blobs, *bundle_files)),
        "deploy folders": len(list((home / "run").glob("deploy-*"))),
    }


@pytest.fixture(scope="module")
def gc_server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    # Grace 0 so that what this test just deployed is collectable at once; no periodic pass.
    server = Server(
        tmp_path_factory.mktemp("gc-home"),
        {"COLDBREW_GC_GRACE_S": "0", "COLDBREW_GC_INTERVAL_S": "0"},
    )
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


def _deploy(server: Server, name: str, folder: Path, shared: bytes, own: bytes) -> None:
    write_bundle(folder, HANDLER, CONFIG)
    (folder / "shared.bin").write_bytes(shared)
    (folder / "own.bin").write_bytes(own)
    response = server.deploy_folder(name, folder)
    assert response.status_code in (200, 201), response.text
    assert server.invoke(name, {}).status_code == 200  # materialises its bundle


def _wait_for(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_deploy_delete_gc_back_to_baseline(gc_server: Server, tmp_path: Path) -> None:
    home = gc_server.home
    baseline = _usage(home)
    shared = os.urandom(200_000)
    _deploy(gc_server, "gc-alpha", tmp_path / "a", shared, os.urandom(300_000))
    _deploy(gc_server, "gc-beta", tmp_path / "b", shared, os.urandom(300_000))
    with_both = _usage(home)
    # handler.py, coldbrew.toml and shared.bin are one blob each for both functions.
    assert with_both["blobs"] == baseline["blobs"] + 5
    assert with_both["bundles"] == baseline["bundles"] + 2
    assert with_both["bytes"] > baseline["bytes"] + 2 * 500_000

    # The deletion collects by itself (grace 0 here): alpha's own blobs and bundle go, the
    # blobs beta still references stay, and beta still answers.
    assert gc_server.client.delete("/v1/functions/gc-alpha").status_code == 200
    _wait_for(lambda: _usage(home)["bundles"] == baseline["bundles"] + 1)
    assert _usage(home)["blobs"] == baseline["blobs"] + 4
    assert gc_server.invoke("gc-beta", {}).status_code == 200

    # Recreated under the same name with the same content: its bundle is built again.
    _deploy(gc_server, "gc-alpha", tmp_path / "a", shared, (tmp_path / "a/own.bin").read_bytes())
    assert gc_server.client.delete("/v1/functions/gc-alpha").status_code == 200
    assert gc_server.client.delete("/v1/functions/gc-beta").status_code == 200
    report = gc_server.client.post("/v1/gc", params={"grace_s": 0}).json()
    assert report["dry_run"] is False
    _wait_for(lambda: _usage(home) == baseline)


def test_cli_gc_dry_run_lists_without_removing(gc_server: Server, tmp_path: Path) -> None:
    home = gc_server.home
    before = _usage(home)
    # An old, unreferenced blob (as a deleted version leaves behind), older than any grace.
    orphan = home / "artifacts" / "sha256" / "ee" / ("e" * 64)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"orphan")
    _age(orphan, 7200)
    cli = [sys.executable, "-m", "coldbrew.cli.main", "gc", "--url", gc_server.url]
    env = {**os.environ, "COLDBREW_HOME": str(home)}
    dry = subprocess.run([*cli, "--dry-run"], capture_output=True, text=True, env=env, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert str(orphan) in dry.stdout and "would remove 1 blob (6 B)" in dry.stdout
    assert orphan.exists()
    real = subprocess.run([*cli, "--grace", "3600"], capture_output=True, text=True, env=env)
    assert real.returncode == 0, real.stderr
    assert "removed 1 blob (6 B)" in real.stdout
    assert not orphan.exists() and _usage(home) == before


def test_gc_refuses_a_bad_grace(gc_server: Server) -> None:
    response = gc_server.client.post("/v1/gc", params={"grace_s": "-1"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
