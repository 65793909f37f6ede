"""The artifact store contract, run against LocalArtifactStore and MemoryArtifactStore."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from coldbrew import errors
from coldbrew.store import ArtifactStore, TamperedArtifact, hash_file, store_folder


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_put_bytes_returns_sha256_and_reads_back(store: ArtifactStore) -> None:
    digest = store.put_bytes(b"hello")
    assert digest == sha(b"hello")
    assert store.has(digest)
    assert store.read_bytes(digest) == b"hello"


def test_put_is_idempotent(store: ArtifactStore, tmp_path: Path) -> None:
    f = tmp_path / "m.bin"
    f.write_bytes(b"x" * 3_000_000)  # several chunks
    first = store.put_file(f)
    assert first == hash_file(f) == sha(f.read_bytes())
    assert store.put_file(f) == first
    assert store.put_bytes(f.read_bytes()) == first
    assert store.read_bytes(first) == f.read_bytes()


def test_empty_blob(store: ArtifactStore) -> None:
    digest = store.put_bytes(b"")
    assert store.read_bytes(digest) == b""


def test_missing_blob_is_not_found(store: ArtifactStore) -> None:
    missing = sha(b"never stored")
    assert not store.has(missing)
    with pytest.raises(errors.NotFound, match=missing):
        store.read_bytes(missing)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABC", "a" * 63, "A" * 64, ""])
def test_malformed_hash_is_refused(store: ArtifactStore, bad: str) -> None:
    with pytest.raises(errors.ValidationError):
        store.has(bad)
    with pytest.raises(errors.ValidationError):
        store.read_bytes(bad)


def test_materialize_builds_the_folder(store: ArtifactStore, tmp_path: Path) -> None:
    manifest = {
        "handler.py": store.put_bytes(b"def handler(e, c): return e\n"),
        "models/a/model.bin": store.put_bytes(b"\x00\x01" * 1000),
        "models/copy.bin": store.put_bytes(b"\x00\x01" * 1000),
    }
    dest = store.materialize(manifest, tmp_path / "bundles" / "v1")
    assert dest == tmp_path / "bundles" / "v1"
    assert (dest / "handler.py").read_bytes() == b"def handler(e, c): return e\n"
    assert (dest / "models/a/model.bin").read_bytes() == b"\x00\x01" * 1000
    assert (dest / "models/copy.bin").is_file()
    # Nothing left behind next to dest.
    assert sorted(p.name for p in dest.parent.iterdir()) == ["v1"]


def test_materialize_is_idempotent(store: ArtifactStore, tmp_path: Path) -> None:
    manifest = {"a.txt": store.put_bytes(b"a")}
    dest = tmp_path / "v1"
    store.materialize(manifest, dest)
    marker = dest / "a.txt"
    mtime = marker.stat().st_mtime_ns
    assert store.materialize(manifest, dest) == dest
    assert marker.stat().st_mtime_ns == mtime


def test_materialize_missing_blob_leaves_nothing(store: ArtifactStore, tmp_path: Path) -> None:
    manifest = {"a.txt": store.put_bytes(b"a"), "b.txt": sha(b"missing")}
    with pytest.raises(errors.NotFound, match=r"b\.txt"):
        store.materialize(manifest, tmp_path / "out" / "v1")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    "key", ["/etc/passwd", "../evil", "a/../../evil", "a/..", "./a", "a//b", "a/", "", "a\\b"]
)
def test_materialize_refuses_unsafe_paths(store: ArtifactStore, tmp_path: Path, key: str) -> None:
    manifest = {key: store.put_bytes(b"x")}
    with pytest.raises(errors.ValidationError):
        store.materialize(manifest, tmp_path / "v1")
    assert not (tmp_path / "v1").exists()


def test_materialize_refuses_bad_hash(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(errors.ValidationError):
        store.materialize({"a": "../../x"}, tmp_path / "v1")


def test_tampered_blob_is_detected(sut, tmp_path: Path) -> None:
    good = sut.store.put_bytes(b"weights" * 1000)
    other = sut.store.put_bytes(b"other")
    sut.corrupt(good)
    with pytest.raises(TamperedArtifact, match=r"model\.bin") as info:
        sut.store.materialize({"x.txt": other, "model.bin": good}, tmp_path / "v1")
    assert info.value.code == "ARTIFACT_TAMPERED"
    assert info.value.details["path"] == "model.bin"
    assert not (tmp_path / "v1").exists()
    with pytest.raises(TamperedArtifact):
        sut.store.read_bytes(good)


def test_store_folder_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "bundle"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text("x = 1\n")
    (src / "coldbrew.toml").write_text("name = 'f'\n")
    manifest = store_folder(store, src)
    assert set(manifest) == {"pkg/mod.py", "coldbrew.toml"}
    out = store.materialize(manifest, tmp_path / "out")
    assert (out / "pkg" / "mod.py").read_text() == "x = 1\n"
