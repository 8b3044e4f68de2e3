"""Adapter versions: what the reconciler found on the share, staged, served, refused.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

from state.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adapter_version",
        sa.Column("deployment_uid", sa.String(36), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("deployment_name", sa.String(63), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("source_path", sa.String(1024), nullable=False),
        sa.Column("path", sa.String(1024), nullable=True),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("detected_at", UTCDateTime(), nullable=False),
        sa.Column("staged_at", UTCDateTime(), nullable=True),
        sa.Column("activated_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_adapter_version_uid_fingerprint", "adapter_version", ["deployment_uid", "fingerprint"])


def downgrade() -> None:
    op.drop_index("ix_adapter_version_uid_fingerprint", table_name="adapter_version")
    op.drop_table("adapter_version")
