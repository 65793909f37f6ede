"""Batch jobs: the jobs and their committed chunks (docs/ASYNC.md "Batch jobs").

These tables reference no other table, so this revision branches from 0001 like 0007
(``Registry.migrate`` upgrades every head).

Revision ID: 0013_batch_jobs
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import coldbrew.registry.batchjobs  # noqa: F401  (registers the models on Base.metadata)

revision: str = "0013_batch_jobs"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("function_name", sa.String(length=64), nullable=False),
        sa.Column("qualifier", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("home", sa.String(length=512), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("input_path", sa.Text(), nullable=False),
        sa.Column("input_format", sa.String(length=16), nullable=False),
        sa.Column("output_path", sa.Text(), nullable=False),
        sa.Column("errors_path", sa.Text(), nullable=False),
        sa.Column("output_format", sa.String(length=16), nullable=False),
        sa.Column("event_shape", sa.String(length=16), nullable=False),
        sa.Column("total_rows", sa.Integer(), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("parallelism", sa.Integer(), nullable=False),
        sa.Column("chunks_done", sa.Integer(), nullable=False),
        sa.Column("rows_succeeded", sa.Integer(), nullable=False),
        sa.Column("rows_failed", sa.Integer(), nullable=False),
        sa.Column("caller_kind", sa.String(length=16), nullable=True),
        sa.Column("caller_id", sa.String(length=64), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", UTC_DATETIME, nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("run_started_at", UTC_DATETIME, nullable=True),
        sa.Column("run_rows_at_start", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("started_at", UTC_DATETIME, nullable=True),
        sa.Column("finished_at", UTC_DATETIME, nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_jobs")),
    )
    op.create_index(op.f("ix_batch_jobs_state_lease_until"), "batch_jobs", ["state", "lease_until"])
    op.create_index(op.f("ix_batch_jobs_function_name_id"), "batch_jobs", ["function_name", "id"])
    op.create_table(
        "batch_chunks",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("finished_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "chunk", name=op.f("pk_batch_chunks")),
    )


def downgrade() -> None:
    op.drop_table("batch_chunks")
    op.drop_table("batch_jobs")
