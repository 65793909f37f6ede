"""Errors of the artifact store.

    ColdbrewError                       (coldbrew.errors)
    └── TamperedArtifact   ARTIFACT_TAMPERED   stored bytes no longer match their sha256

Missing artifacts raise ``coldbrew.errors.NotFound`` and bad manifests
``coldbrew.errors.ValidationError``; only tampering needs a code of its own, because it means
the store itself can no longer be trusted rather than that the caller asked for the wrong thing.
"""

from __future__ import annotations

from coldbrew import errors


class TamperedArtifact(errors.ColdbrewError):
    """The bytes stored under a sha256 do not hash to it (disk corruption or a modified file)."""

    code = "ARTIFACT_TAMPERED"
