"""Two processes materializing the same destination at once must both succeed."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from coldbrew.store import LocalArtifactStore


def _materialize(root: str, manifest: dict[str, str], dest: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    store = LocalArtifactStore(Path(root))
    barrier.wait()
    try:
        store.materialize(manifest, Path(dest))
        results.put("ok")
    except BaseException as exc:  # report, do not hide, whatever went wrong in the child
        results.put(repr(exc))


def test_concurrent_materialize_from_two_processes(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    # Enough files that the two builds overlap in time rather than run one after the other.
    manifest = {
        f"d{i % 7}/f{i}.bin": store.put_bytes(bytes([i % 256]) * 20_000) for i in range(300)
    }
    dest = tmp_path / "bundles" / "v1"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_materialize,
            args=(str(store.root), manifest, str(dest), barrier, results),
        )
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sorted(results.get(timeout=5) for _ in procs) == ["ok", "ok"]
    for rel in manifest:
        assert (dest / rel).is_file()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["v1"]
