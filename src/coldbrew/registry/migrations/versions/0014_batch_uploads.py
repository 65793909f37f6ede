"""Batch jobs of S3 sources upload their results beside the input object: where to, and
whether it happened yet (a gateway that dies between the job's end and the upload does it
after its restart).

Revision ID: 0014_batch_uploads
Revises: 0013_batch_jobs
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import coldbrew.registry.batchjobs  # noqa: F401  (registers the models on Base.metadata)

revision: str = "0014_batch_uploads"
down_revision: str | None = "0013_batch_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batch_jobs") as batch:
        batch.add_column(sa.Column("source_id", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("output_uri", sa.Text(), nullable=True))
        batch.add_column(sa.Column("errors_uri", sa.Text(), nullable=True))
        batch.add_column(sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("upload_error", sa.Text(), nullable=True))
        batch.create_index(
            op.f("ix_batch_jobs_source_id_uploaded_at"), ["source_id", "uploaded_at"]
        )


def downgrade() -> None:
    with op.batch_alter_table("batch_jobs") as batch:
        batch.drop_index(op.f("ix_batch_jobs_source_id_uploaded_at"))
        for column in ("upload_error", "uploaded_at", "errors_uri", "output_uri", "source_id"):
            batch.drop_column(column)
