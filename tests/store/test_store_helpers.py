"""manifest_of, content_hash and hash_file: pure helpers, no store involved."""

from __future__ import annotations

import hashlib
from pathlib import Path

from coldbrew.store import content_hash, hash_file, manifest_of


def test_hash_file(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc" * 1_000_000)
    assert hash_file(f) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()


def test_manifest_of_skips_caches_and_vcs(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / "handler.py").write_text("a")
    (tmp_path / "pkg" / "util.py").write_text("b")
    (tmp_path / "pkg" / "util.pyc").write_bytes(b"c")
    (tmp_path / "pkg" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"d")
    (tmp_path / ".git" / "objects" / "x").write_bytes(b"e")
    (tmp_path / ".gitignore").write_text("f")
    manifest = manifest_of(tmp_path)
    assert manifest == {
        ".gitignore": hashlib.sha256(b"f").hexdigest(),
        "handler.py": hashlib.sha256(b"a").hexdigest(),
        "pkg/util.py": hashlib.sha256(b"b").hexdigest(),
    }
    assert list(manifest) == sorted(manifest)


def test_content_hash_is_canonical() -> None:
    m1 = {"a": "1" * 64, "b": "2" * 64}
    m2 = {"b": "2" * 64, "a": "1" * 64}
    c1 = {"memory_mb": 512, "handler": "h:handler", "env": {"X": "1", "Y": "2"}}
    c2 = {"env": {"Y": "2", "X": "1"}, "handler": "h:handler", "memory_mb": 512}
    assert content_hash(m1, c1) == content_hash(m2, c2)
    assert len(content_hash(m1, c1)) == 64
    assert content_hash(m1, c1) != content_hash(m1, {**c1, "memory_mb": 1024})
    assert content_hash(m1, c1) != content_hash({"a": "1" * 64}, c1)
