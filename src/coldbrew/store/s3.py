"""Artifact store in an S3-compatible bucket: ``s3://bucket/prefix/sha256/ab/abcdef...``.

For several gateways or nodes that do not share a disk (docs/CLUSTER.md). The same contract as
``LocalArtifactStore``: a blob's key is the sha256 of its plaintext, every read is hashed
against it (so a bucket that was written behind coldbrew's back is caught as
``ARTIFACT_TAMPERED``), and with an artifact key the bytes in the bucket are AES-256-GCM
(store/crypto.py) with the blob's name as associated data. Each node's bundles folder is its
local content-addressed cache: ``materialize`` downloads a version's blobs once into
``bundles/<content_sha256>`` and later starts reuse that folder.

An object's ``LastModified`` is its age for garbage collection: storing a blob that is already
there copies the object onto itself, which refreshes it (see :meth:`S3ArtifactStore.collect`).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from coldbrew import errors
from coldbrew.store.base import BaseArtifactStore
from coldbrew.store.crypto import ArtifactCipher
from coldbrew.store.errors import TamperedArtifact
from coldbrew.store.gc import Candidate
from coldbrew.store.hashing import CHUNK_SIZE, check_sha256

_MISSING = ("404", "NoSuchKey", "NotFound")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix``); ValidationError otherwise."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise errors.ValidationError(
            f"COLDBREW_ARTIFACTS_URL must look like s3://bucket/prefix, not {url!r}"
        )
    return parsed.netloc, parsed.path.strip("/")


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client; credentials and region come from boto3's usual places."""
    import boto3  # imported here: the single-machine default never needs it
    from botocore.config import Config

    config = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=16)
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


class S3ArtifactStore(BaseArtifactStore):
    """Content-addressed blobs in ``bucket`` under ``prefix``; any number of processes."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        cipher: ArtifactCipher | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client if client is not None else s3_client(endpoint_url)
        self.cipher = cipher
        """When set, blobs are written encrypted (store/crypto.py); reads handle both."""

    @classmethod
    def from_url(
        cls, url: str, cipher: ArtifactCipher | None = None, endpoint_url: str | None = None
    ) -> S3ArtifactStore:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, cipher=cipher, endpoint_url=endpoint_url)

    def key_of(self, sha256: str) -> str:
        check_sha256(sha256)
        name = f"sha256/{sha256[:2]}/{sha256}"
        return f"{self.prefix}/{name}" if self.prefix else name

    # --- writing ------------------------------------------------------------------------------
    def put_file(self, path: Path) -> str:
        digest = hashlib.sha256()
        with open(path, "rb") as src:
            while chunk := src.read(CHUNK_SIZE):
                digest.update(chunk)
            sha256 = digest.hexdigest()
            if self._refresh(sha256):
                return sha256
            src.seek(0)
            self._upload(src, sha256)
        return sha256

    def put_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self._refresh(sha256):
            self._upload(io.BytesIO(data), sha256)
        return sha256

    def _upload(self, src: BinaryIO, sha256: str) -> None:
        """One object per blob; S3's PUT is atomic, so a key that exists holds a whole blob."""
        if self.cipher is None:
            self.client.upload_fileobj(src, self.bucket, self.key_of(sha256))
            return
        with tempfile.TemporaryFile() as sealed:  # large models never sit in memory
            self.cipher.encrypt(iter(lambda: src.read(CHUNK_SIZE), b""), sealed, sha256)
            sealed.seek(0)
            self.client.upload_fileobj(sealed, self.bucket, self.key_of(sha256))

    def _refresh(self, sha256: str) -> bool:
        """If the blob is stored, make it young again (a deploy reuses it); False if absent.

        A copy onto itself with replaced metadata is the one way S3 has to renew
        ``LastModified``; the collector spares what is younger than its grace period."""
        key = self.key_of(sha256)
        if not self.has(sha256):
            return False
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": key},
                Metadata={"coldbrew-touched": str(int(time.time()))},
                MetadataDirective="REPLACE",
            )
        except self._client_error() as exc:
            if _code(exc) in _MISSING:
                return False  # collected in between: upload it again
            raise
        return True

    # --- reading ------------------------------------------------------------------------------
    def has(self, sha256: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key_of(sha256))
        except self._client_error() as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        return True

    def read_bytes(self, sha256: str) -> bytes:
        with self._open(sha256, sha256) as body:
            data = b"".join(self._plain(body, sha256))
        if hashlib.sha256(data).hexdigest() != sha256:
            raise TamperedArtifact(f"artifact {sha256} does not match its hash", sha256=sha256)
        return data

    def _copy_verified(self, sha256: str, target: Path, label: str) -> None:
        digest = hashlib.sha256()
        with self._open(sha256, label) as body, open(target, "wb") as out:
            for chunk in self._plain(body, sha256):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise TamperedArtifact(
                f"stored bytes of {label!r} do not match sha256 {sha256}", path=label, sha256=sha256
            )

    def _open(self, sha256: str, label: str) -> Any:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key_of(sha256))
        except self._client_error() as exc:
            if _code(exc) in _MISSING:
                what = sha256 if label == sha256 else f"{sha256} for {label!r}"
                raise errors.NotFound(f"artifact {what} not found") from None
            raise
        return response["Body"]

    def _plain(self, body: BinaryIO, sha256: str) -> Iterator[bytes]:
        if self.cipher is not None:
            yield from self.cipher.decrypt(body, sha256)
            return
        while chunk := body.read(CHUNK_SIZE):
            yield chunk

    # --- garbage collection ---------------------------------------------------------------------
    def scan(self) -> list[Candidate]:
        """Every blob in the bucket under the prefix, aged by ``LastModified``."""
        found: list[Candidate] = []
        start = f"{self.prefix}/sha256/" if self.prefix else "sha256/"
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
            for item in page.get("Contents", ()):
                name = item["Key"].rsplit("/", 1)[-1]
                mtime = item["LastModified"].timestamp()
                found.append(Candidate("blob", name, Path(item["Key"]), mtime, item["Size"]))
        return found

    def remove(self, garbage: list[Candidate], grace_s: float, now: float) -> list[Candidate]:
        """Delete ``garbage``, each after a last look at its age (a deploy may have reused it
        since the scan). S3 has no lock to hold across that look and the delete: a reuse in
        the few milliseconds between them is lost, and the next start of that version finds
        the blob missing (NotFound); the grace period makes that window the only one."""
        removed: list[Candidate] = []
        for c in garbage:
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=str(c.path))
            except self._client_error() as exc:
                if _code(exc) in _MISSING:
                    continue
                raise
            if now - head["LastModified"].timestamp() < grace_s:
                continue
            self.client.delete_object(Bucket=self.bucket, Key=str(c.path))
            removed.append(c)
        return removed

    def _client_error(self) -> type[Exception]:
        return self.client.exceptions.ClientError  # type: ignore[no-any-return]


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
