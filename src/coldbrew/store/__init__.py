"""Artifact stores: content-addressed blobs (sha256) and the bundle folders built from them.

``LocalArtifactStore`` is the one-machine default; ``MemoryArtifactStore`` ships for tests.
A bundle is described by a manifest ``{relative path: sha256}``; ``content_hash`` of manifest
and config identifies a version.
"""

from coldbrew.store.base import ArtifactStore, BaseArtifactStore
from coldbrew.store.errors import TamperedArtifact
from coldbrew.store.hashing import check_sha256, content_hash, hash_bytes, hash_file
from coldbrew.store.local import LocalArtifactStore
from coldbrew.store.manifest import check_manifest, manifest_of, store_folder
from coldbrew.store.memory import MemoryArtifactStore

__all__ = [
    "ArtifactStore",
    "BaseArtifactStore",
    "LocalArtifactStore",
    "MemoryArtifactStore",
    "TamperedArtifact",
    "check_manifest",
    "check_sha256",
    "content_hash",
    "hash_bytes",
    "hash_file",
    "manifest_of",
    "store_folder",
]
