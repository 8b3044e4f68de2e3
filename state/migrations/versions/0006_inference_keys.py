"""Inference keys: who may call a deployment's model (hashes only).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from state.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inference_key",
        sa.Column("deployment_uid", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("deployment_name", sa.String(63), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.Integer(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(63), nullable=True),
    )
    op.create_index("ix_inference_key_deployment_name", "inference_key", ["deployment_name"])


def downgrade() -> None:
    op.drop_index("ix_inference_key_deployment_name", table_name="inference_key")
    op.drop_table("inference_key")
