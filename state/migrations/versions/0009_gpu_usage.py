"""GPU usage: GPU-seconds per deployment and UTC day, and each deployment's last look at its
replicas (how many ran, with how many GPUs, when), from which the time since is counted.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from state.models import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gpu_usage_day",
        sa.Column("deployment_uid", sa.String(36), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("deployment_name", sa.String(63), nullable=False, index=True),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False, server_default=""),
    )
    op.create_table(
        "gpu_meter",
        sa.Column("deployment_uid", sa.String(36), primary_key=True),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("gpus_per_replica", sa.Float(), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False, server_default=""),
        sa.Column("at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gpu_meter")
    op.drop_table("gpu_usage_day")
