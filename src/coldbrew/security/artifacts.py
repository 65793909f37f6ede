"""Safe artifacts: what runs is exactly what was deployed, and nothing deserialises code by
surprise.

- The store checks every blob's sha256 while materialising a bundle (``store/``).
- :class:`VerifiedBundles` re-checks a materialised bundle against its manifest when it is
  first used by this gateway, and ``backends.verifying.VerifyingBackend`` again before every
  instance or version template is started from it. Re-hashing is skipped for files whose
  inode, size, mtime and ctime are those seen at the last full check: ctime cannot be set from
  user space, so any edit of a file forces a new hash. A mismatch is ``ARTIFACT_TAMPERED``.
- Pickle-based formats (joblib, pickle), TorchScript and torch.export programs, and skops files
  naming types outside skops' default trusted set are refused at deploy unless marked trusted
  (``check_model_trust``).
"""

from __future__ import annotations

import os
from pathlib import Path

from coldbrew import errors
from coldbrew.settings import Settings
from coldbrew.store import ArtifactStore, TamperedArtifact
from coldbrew.store.crypto import ArtifactCipher
from coldbrew.store.hashing import hash_file

PICKLE_FORMATS = ("joblib", "pickle")
PROGRAM_FORMATS = {"torchscript": "a TorchScript", "torch_export": "a torch.export"}
"""Files that are programs, not weights: ``torch.jit.load`` and ``torch.export.load`` rebuild
the module from records and code serialized in the file (no type allow-list holds, unlike
``torch.load(weights_only=True)``), and the program runs whatever operators it names."""
Stamp = tuple[int, int, int, int]


class UntrustedArtifact(errors.ColdbrewError):
    code = "UNTRUSTED_ARTIFACT"
    status = 422


def artifact_cipher(settings: Settings) -> ArtifactCipher | None:
    return ArtifactCipher.from_base64(settings.artifact_key) if settings.artifact_key else None


def _stamp(path: Path) -> Stamp:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class VerifiedBundles:
    """The scheduler's bundle source: the store's materialize plus a check of the folder."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.manifests: dict[str, dict[str, str]] = {}
        self._stamps: dict[str, dict[str, Stamp]] = {}

    def materialize(self, manifest: dict[str, str], dest: Path) -> Path:
        path = self.store.materialize(manifest, dest)
        self.manifests[str(path)] = dict(manifest)
        self.verify(str(path))
        return path

    def verify(self, bundle_dir: str) -> None:
        """Raise TamperedArtifact if a file of a known bundle differs from its manifest."""
        manifest = self.manifests.get(bundle_dir)
        if manifest is None:
            return  # not a stored bundle (a deploy's trial load runs from the upload)
        seen = self._stamps.setdefault(bundle_dir, {})
        root = Path(bundle_dir)
        for rel, sha256 in manifest.items():
            path = root / rel
            try:
                stamp = _stamp(path)
                if seen.get(rel) == stamp:
                    continue
                actual = hash_file(path)
            except FileNotFoundError:
                actual = "missing"
                stamp = (0, 0, 0, 0)
            if actual != sha256:
                seen.pop(rel, None)
                raise TamperedArtifact(
                    f"bundle file {rel!r} no longer matches its sha256; refusing to run it",
                    path=rel,
                    sha256=sha256,
                )
            seen[rel] = stamp


def check_model_trust(path: Path, fmt: str | None, trusted: bool) -> None:
    """Refuse a model whose loading could run code from the file, unless trusted."""
    if trusted or fmt is None:
        return
    if fmt in PICKLE_FORMATS:
        raise UntrustedArtifact(
            f"'{path.name}' is a {fmt} file: loading it runs code from the file. Deploy it "
            "with --trust (trusted=true, or trust_pickle = true in coldbrew.toml) if you made "
            "it yourself, or export it as skops or ONNX",
            format=fmt,
        )
    if fmt in PROGRAM_FORMATS:
        raise UntrustedArtifact(
            f"'{path.name}' is {PROGRAM_FORMATS[fmt]} program: loading it deserialises and runs "
            "code from the file. Deploy it with --trust (trusted=true, or trust_pickle = true in "
            "coldbrew.toml) if you made it yourself, or export it as ONNX",
            format=fmt,
        )
    if fmt == "skops":
        import skops.io

        untrusted = skops.io.get_untrusted_types(file=path)
        if untrusted:
            raise UntrustedArtifact(
                f"'{path.name}' names types outside skops' trusted set ({', '.join(untrusted)}); "
                "deploy it with --trust if you trust them",
                format=fmt,
                untrusted_types=untrusted,
            )
