"""The folder packer and upload preparation, no server needed."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from coldbrew.cli.packaging import PackagingError, default_name, pack_folder, prepare_upload


def _bundle(folder: Path) -> Path:
    (folder / "pkg" / "__pycache__").mkdir(parents=True)
    (folder / "__pycache__").mkdir()
    (folder / ".git").mkdir()
    (folder / "handler.py").write_text("def handler(event, context):\n    return event\n")
    (folder / "coldbrew.toml").write_text('handler = "handler:handler"\n')
    (folder / "pkg" / "util.py").write_text("X = 1\n")
    (folder / "pkg" / "stale.pyc").write_bytes(b"\0")
    (folder / "pkg" / "__pycache__" / "util.cpython-311.pyc").write_bytes(b"\0")
    (folder / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"\0")
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return folder


def test_pack_folder_skips_bytecode_and_git(tmp_path: Path) -> None:
    data = pack_folder(_bundle(tmp_path))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
    assert names == ["coldbrew.toml", "handler.py", "pkg/util.py"]


def test_pack_folder_is_reproducible(tmp_path: Path) -> None:
    """Same folder, same bytes: packing must not stamp times or owners into the archive."""
    folder = _bundle(tmp_path)
    first = pack_folder(folder)
    (folder / "handler.py").touch()
    assert pack_folder(folder) == first


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("model.joblib", "model"),
        ("my bundle.tar.gz", "my-bundle"),
        ("iris_v2.onnx", "iris_v2"),
        ("weird!!name.zip", "weird-name"),
        ("water-quality", "water-quality"),
        ("!!!.pkl", "function"),
    ],
)
def test_default_name(path: str, expected: str) -> None:
    assert default_name(Path(path)) == expected


def test_prepare_upload(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "my_bundle")
    upload = prepare_upload(folder)
    assert upload.filename == "my_bundle.tar.gz"
    assert upload.size == len(upload.data.read())

    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    with prepare_upload(model).data as data:
        assert data.read() == b"onnx"

    (tmp_path / "notes.md").write_text("x")  # .txt is a LightGBM model
    with pytest.raises(PackagingError, match="model file"):
        prepare_upload(tmp_path / "notes.md")
    with pytest.raises(PackagingError, match="does not exist"):
        prepare_upload(tmp_path / "missing.joblib")
