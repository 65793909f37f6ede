"""Encryption at rest for stored blobs: AES-256-GCM, streamed.

A blob's name stays the sha256 of its *plaintext*, so deduplication, manifests and content
hashes do not change when encryption is turned on. The blob's address is the GCM associated
data: an encrypted blob moved to another address fails authentication. Layout::

    b"CBE1" | nonce (12 bytes) | ciphertext | tag (16 bytes)

Blobs stored before encryption was turned on (no magic) are still read, and still checked
against their hash.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from coldbrew import errors
from coldbrew.store.errors import TamperedArtifact
from coldbrew.store.hashing import CHUNK_SIZE

MAGIC = b"CBE1"
NONCE_BYTES = 12
TAG_BYTES = 16


class ArtifactCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise errors.ValidationError("the artifact key must be 32 bytes (base64-encoded)")
        self._key = key

    @classmethod
    def from_base64(cls, text: str) -> ArtifactCipher:
        try:
            return cls(base64.b64decode(text, validate=True))
        except binascii.Error:
            raise errors.ValidationError("COLDBREW_ARTIFACT_KEY is not valid base64") from None

    def encrypt(self, chunks: Iterator[bytes], out: BinaryIO, sha256: str) -> None:
        nonce = os.urandom(NONCE_BYTES)
        encryptor = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(sha256.encode())
        out.write(MAGIC + nonce)
        for chunk in chunks:
            out.write(encryptor.update(chunk))
        out.write(encryptor.finalize() + encryptor.tag)

    def decrypt(self, src: BinaryIO, sha256: str) -> Iterator[bytes]:
        """Plaintext chunks; the last step checks the tag (TamperedArtifact if it fails), so a
        consumer must not trust what it got until the iterator is exhausted."""
        header = src.read(len(MAGIC) + NONCE_BYTES)
        if not header.startswith(MAGIC):
            yield header
            while chunk := src.read(CHUNK_SIZE):
                yield chunk
            return
        decryptor = Cipher(algorithms.AES(self._key), modes.GCM(header[len(MAGIC) :])).decryptor()
        decryptor.authenticate_additional_data(sha256.encode())
        held = b""
        while chunk := src.read(CHUNK_SIZE):
            held += chunk
            if len(held) > TAG_BYTES:
                yield decryptor.update(held[:-TAG_BYTES])
                held = held[-TAG_BYTES:]
        try:
            yield decryptor.finalize_with_tag(held)
        except (InvalidTag, ValueError):
            raise TamperedArtifact(
                f"encrypted artifact {sha256} failed authentication", sha256=sha256
            ) from None


def is_encrypted(path: os.PathLike[str] | str) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC
